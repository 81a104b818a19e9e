"""The bag report's terminal table and plots."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from fsplit_ros.evaluation.bag_report.analysis import _ordered
from fsplit_ros.evaluation.bag_report.records import MODE_COLORS
from fsplit_ros.modes import MODES, candidate_name

def _f(value, fmt: str = ".1f", none: str = "-") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return none
    return format(value, fmt)


def _agreement_cell(ag: dict | None) -> str:
    """'6/7 0.857' (agreement counts) or '0.912 n=40' (a metric over frames, e.g. mAP)."""
    if not ag or ag.get("rate") is None:
        return "-" if not ag else f"- n={ag['evaluated']}"
    if "agree" in ag:
        return f"{ag['agree']}/{ag['evaluated']} {ag['rate']:.3f}"
    return f"{ag['rate']:.3f} n={ag['evaluated']}"


def format_table(report: dict) -> str:
    """The terminal summary."""
    lines = [f"fsplit bag report: {report['bag']} ({report['storage']}, {report['message_count']} messages)",
             f"clocks: {report['clocks']}"]
    for ns, r in report["robots"].items():
        d, pay, fb, agr = r["delivery"], r["payloads"], r["feedback"], r["agreement"]
        lines += ["", f"robot {ns}  ({r['duration_s']:.1f} s; topics: "
                      + ", ".join(f"{k}={v}" for k, v in r["topics"].items()) + ")"]
        cam = (f"camera {d['camera_frames']} frames ({_f(d['camera_fps'])} fps)" if d["camera_frames"] is not None
               else "camera not recorded")
        line = f"  frames: {cam}, results {d['results']} ({_f(d['delivered_fps'])} fps delivered)"
        if d.get("delivery_ratio") is not None:
            lost = ", ".join(f"{k} {v}" for k, v in d["lost"].items())
            line += (f", delivered {d['frames_with_result']}/{d['camera_frames']} = {d['delivery_ratio']:.3f}"
                     f"; without result {d['frames_without_result']} ({lost})")
        lines.append(line)
        lines.append(f"  payloads: {pay['count']}, {pay['bytes_total']} bytes, mean "
                     f"{_f(pay['mean_bitrate_bps'] and pay['mean_bitrate_bps'] / 1e3, '.1f')} kbit/s, "
                     f"seq gaps {pay['seq_gaps']}, restarts {pay['seq_restarts']}; feedback {fb['count']} "
                     f"(ok {fb['ok']}, rejected {fb['rejected']}"
                     + (f": {fb['rejected_by_kind']}" if fb["rejected_by_kind"] else "")
                     + f"), payloads without feedback {_f(fb['payloads_without_feedback'], 'd')}")
        header = (f"  {'mode':<11}{'results':>8}{'payloads':>9}{'bytes/frame':>12}{'min..max':>16}"
                  f"{'kbit/s act.':>12}{'lat p50':>9}{'p95':>8}{'max ms':>8}{'agreement':>15}")
        lines += [header, "  " + "-" * (len(header) - 2)]
        for mode in _ordered(list(pay["by_mode"]) + list(r["latency_ms"]["by_mode"])):
            bm = pay["by_mode"].get(mode)
            lat = r["latency_ms"]["by_mode"].get(mode, {"count": 0})
            ag = agr.get("by_mode", {}).get(mode)
            splits = f"@{','.join(bm['split_indices'])}" if bm and mode in MODES and MODES[mode].per_split_point else ""
            lines.append(
                f"  {mode + splits:<11}{lat['count']:>8}{bm['frames'] if bm else 0:>9}"
                f"{_f(bm and bm['bytes_mean'], '.0f'):>12}"
                f"{(str(bm['bytes_min']) + '..' + str(bm['bytes_max'])) if bm else '-':>16}"
                f"{_f(bm and bm['bitrate_bps_while_active'] / 1e3):>12}"
                f"{_f(lat.get('p50'), '.0f'):>9}{_f(lat.get('p95'), '.0f'):>8}{_f(lat.get('max'), '.0f'):>8}"
                f"{_agreement_cell(ag):>15}")
        la = r["latency_ms"]["all"]
        lines.append(f"  {'all':<11}{la['count']:>8}{pay['count']:>9}{'':>12}{'':>16}{'':>12}"
                     f"{_f(la.get('p50'), '.0f'):>9}{_f(la.get('p95'), '.0f'):>8}{_f(la.get('max'), '.0f'):>8}"
                     + (f"{_agreement_cell(agr):>15}" if "evaluated" in agr else f"{'skipped':>15}"))
        if "evaluated" in agr and agr["rate"] is not None:
            lines.append(f"  agreement ({agr['metric']} with the local model {agr.get('backbone') or ''}): "
                         f"{agr['rate']:.3f}, 95% interval [{_f(agr['low'], '.3f')}, {_f(agr['high'], '.3f')}]")
        if "skipped" in agr:
            lines.append(f"  agreement skipped: {agr['skipped']}")
        elif agr.get("results_without_frame"):
            lines.append(f"  agreement: {agr['results_without_frame']} result(s) have no recorded frame")
        for model, fm in r.get("further_models", {}).items():
            lat = fm["latency_ms"]
            lines.append(f"  further edge model {model} ({fm['topic']}): {fm['results']} results, "
                         f"{fm['same_frames_as_robot_model']} for frames the robot's model answered too, latency "
                         f"p50 {_f(lat.get('p50'), '.0f')} ms, p95 {_f(lat.get('p95'), '.0f')} ms (agreement: "
                         f"bench/shared_encoder.py)")
        if r["mode_timeline"]:
            lines.append(f"  mode timeline (link monitor; {r['mode_switches']} switches):")
            lines.append(f"    {'start s':>8}{'end s':>8}  {'mode':<14}{'rate Mbit/s':>12}  reason")
            for seg in r["mode_timeline"]:
                # split_index 0 in a LinkState = the encoder's default split point
                label = candidate_name(seg["mode"], seg["split_index"]) if seg["split_index"] else seg["mode"]
                lines.append(f"    {seg['start_s']:8.2f}{seg['end_s']:8.2f}  {label:<14}"
                             f"{seg['rate_bps_mean'] / 1e6:12.2f}  {seg['reason']}")
        cd = r["clock"]["camera_to_recorder_ms"]
        if cd:
            lines.append(f"  clock check: camera -> recorder delay p50 {cd['p50']:.1f} ms "
                         f"({'consistent' if r['clock']['consistent'] else 'INCONSISTENT'})")
        lines += [f"  WARNING: {w}" for w in r["warnings"]]
        lines += [f"  note: {n}" for n in r["notes"]]
    if report["other_topics"]:
        lines += ["", "not evaluated: " + ", ".join(f"{t} ({m})" for t, m in report["other_topics"].items())]
    return "\n".join(lines)


def _slug(ns: str) -> str:
    return ns.strip("/").replace("/", "_") or "root"


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_plots(report: dict, out_dir: str | Path) -> list[Path]:
    """bitrate.png, latency_cdf.png and mode_timeline.png per robot (prefixed by the namespace when
    the bag has several robots)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    written = []
    several = len(report["robots"]) > 1
    for ns, r in report["robots"].items():
        prefix = f"{_slug(ns)}_" if several else ""
        title = f"robot {ns}"

        fig, ax = plt.subplots(figsize=(10, 4))
        br = r["series"]["bitrate"]
        bottom = np.zeros(len(br["t_s"]))
        for mode, bps in br["bps_by_mode"].items():
            vals = np.asarray(bps) / 1e3
            ax.bar(br["t_s"], vals, width=br["bin_s"], bottom=bottom, align="edge",
                   color=MODE_COLORS.get(mode), label=mode)
            bottom += vals
        ls = r["series"]["link_state"]
        if ls["t_s"]:
            ax.plot(ls["t_s"], np.asarray(ls["rate_bps"]) / 1e3, "k--", lw=1, label="measured link rate")
            ax.set_yscale("symlog", linthresh=10)
        ax.set_xlabel("time (s)")
        ax.set_ylabel("kbit/s")
        ax.set_title(f"{title}: payload bitrate by mode ({br['bin_s']:g} s bins)")
        if br["bps_by_mode"] or ls["t_s"]:
            ax.legend(loc="upper right")
        written.append(_save(fig, out_dir / f"{prefix}bitrate.png"))

        fig, ax = plt.subplots(figsize=(7, 4.5))
        results = r["series"]["results"]
        for mode in _ordered(x["mode"] for x in results):
            lat = np.sort([x["latency_ms"] for x in results if x["mode"] == mode])
            ax.step(lat, np.arange(1, lat.size + 1) / lat.size, where="post", color=MODE_COLORS.get(mode),
                    label=f"{mode} (n={lat.size}, p50 {np.median(lat):.0f} ms)")
        lats = [x["latency_ms"] for x in results if x["latency_ms"] > 0]
        if lats and max(lats) / min(lats) > 30:
            ax.set_xscale("log")
        ax.set_xlabel("end-to-end latency (ms): result receipt - camera stamp")
        ax.set_ylabel("fraction of results")
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
        ax.set_title(f"{title}: latency CDF per mode")
        if results:
            ax.legend(loc="lower right")
        written.append(_save(fig, out_dir / f"{prefix}latency_cdf.png"))

        fig, ax = plt.subplots(figsize=(10, 4))
        seen = set()
        for seg in r["mode_timeline"]:
            ax.axvspan(seg["start_s"], max(seg["end_s"], seg["start_s"] + 1e-3), alpha=0.25, lw=0,
                       color=MODE_COLORS.get(seg["mode"], "grey"),
                       label=None if seg["mode"] in seen else f"mode {seg['mode']}")
            seen.add(seg["mode"])
        if ls["t_s"]:
            ax.plot(ls["t_s"], np.asarray(ls["rate_bps"]) / 1e6, "k-", lw=1.2, label="measured rate")
            ax.set_yscale("symlog", linthresh=0.1)
            ax.legend(loc="upper right", fontsize=8)
        else:
            ax.text(0.5, 0.5, "no LinkState recorded", transform=ax.transAxes, ha="center")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("Mbit/s")
        ax.set_title(f"{title}: commanded mode over the link monitor's measured rate")
        written.append(_save(fig, out_dir / f"{prefix}mode_timeline.png"))
    return written


