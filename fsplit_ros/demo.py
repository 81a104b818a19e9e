"""The main job: the whole fsplit graph as separate processes over real DDS, on a bundled video.

    python -m fsplit_ros.demo [--duration 60] [--trace 0:20,20:1,40:0,45:20] [--link auto|netns|loopback]
    python -m fsplit_ros.demo --mode bottleneck --models efficientnet_lite0 efficientnet_lite2 --decoder-dir DIR

With root (and `--link auto`) the robot side (camera, encoder, link monitor, recorder) and the edge
side (decoder) run in two network namespaces joined by a tc-shaped veth whose rate follows the
trace (Mbit/s; 0 = link cut). Without root everything runs on loopback and the trace is ignored.
Prints a live table every second and writes a report (JSON, PNG plot, rosbag, logs) at the end.
With `--models` the edge answers every bottleneck payload with each further model too (issue 19;
their results are counted in the report, `further_models`).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from fsplit_ros.modes import LOCAL, MODE_NAMES, candidate_name
from fsplit_ros.linkemu import EmulatedLink, LinkEmulationUnavailable, parse_trace
from fsplit_ros.launch_support import further_model_names
from fsplit_ros.process_graph import RESULT_TOPICS, EventLog, GraphConfig, ProcessGraph, start_standard_graph, wait_until_ready

DEFAULT_TRACE = "0:20,20:1,40:0,46:20"


def window_stats(events: list[dict], now: float, window: float = 2.0) -> dict:
    """Live numbers over the last `window` seconds."""
    recent = [e for e in events if now - e["t"] <= window]
    sent = [e for e in recent if e["topic"] == "compressed_feature"]
    results = [e for e in recent if e["topic"] in RESULT_TOPICS]
    states = [e for e in events if e["topic"] == "link_state"]
    state = states[-1] if states else {}
    return {"mode": candidate_name(state["mode"], state["split"]) if state else "-",
            "measured_mbps": state.get("rate_bps", float("nan")) / 1e6,
            "bytes_per_frame": float(np.mean([e["bytes"] for e in sent])) if sent else 0.0,
            "latency_ms": float(np.median([(e["t"] - e["stamp"]) * 1e3 for e in results])) if results else float("nan"),
            "fps": len(results) / window}


def link_rate_at(trace, t: float) -> float:
    rate = trace[0][1]
    for when, r in trace:
        if t >= when:
            rate = r
    return rate


def per_candidate(events: list[dict]) -> dict:
    """For each candidate that delivered results: how many, bytes per frame, median latency, and
    the fidelity the link monitor published for it in link_state (agreement with the full model on
    held-out frames, 1 for local; None where no record exists). A result belongs to the payload with its camera stamp, or to
    `local` when none was sent."""
    sent = {e["stamp"]: e for e in events if e["topic"] == "compressed_feature"}
    fidelity: dict = {}
    for e in events:
        if e["topic"] == "link_state":
            fidelity.update(e.get("fidelity") or {})
    rows: dict[str, dict] = {}
    for r in (e for e in events if e["topic"] in RESULT_TOPICS):
        payload = sent.get(r["stamp"])
        name = candidate_name(payload["mode"], payload["split"]) if payload else LOCAL
        row = rows.setdefault(name, {"latency": [], "bytes": []})
        row["latency"].append((r["t"] - r["stamp"]) * 1e3)
        row["bytes"].append(payload["bytes"] if payload else 0)
    return {name: {"results": len(row["latency"]), "bytes_per_frame": float(np.mean(row["bytes"])),
                   "latency_ms_p50": float(np.median(row["latency"])),
                   "fidelity": fidelity.get(name)}
            for name, row in sorted(rows.items())}


def further_models(events: list[dict], models) -> dict:
    """Per further edge model: its results, how many of them are for camera frames the robot's own
    model also answered (one payload, several models), and their median latency."""
    from fsplit_ros.runtime.shared_models import result_topic
    answered = {e["stamp"] for e in events if e["topic"] in RESULT_TOPICS}
    report = {}
    for model in models:
        topic = result_topic(model)
        got = [e for e in events if e["topic"] == topic]
        report[model] = {"topic": topic, "results": len(got),
                         "same_frames_as_backbone": sum(e["stamp"] in answered for e in got),
                         "latency_ms_p50": float(np.median([(e["t"] - e["stamp"]) * 1e3 for e in got])) if got else None}
    return report


def candidate_table(rows: dict) -> str:
    lines = [f"{'candidate':>12} {'results':>8} {'bytes/frame':>11} {'latency p50':>12} {'fidelity':>9}"]
    for name, r in rows.items():
        fid = "unknown" if r["fidelity"] is None else f"{100 * r['fidelity']:.1f} %"
        lines.append(f"{name:>12} {r['results']:8d} {r['bytes_per_frame']:11.0f} {r['latency_ms_p50']:10.0f}ms {fid:>9}")
    return "\n".join(lines)


def write_report(out: Path, events: list[dict], trace, t0: float, emulated: bool, args) -> dict:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = [e for e in events if e["topic"] in RESULT_TOPICS]
    sent = [e for e in events if e["topic"] == "compressed_feature"]
    states = [e for e in events if e["topic"] == "link_state"]
    images = [e for e in events if e["topic"] == "image"]
    modes = sorted({e["mode"] for e in states})
    lat = np.array([(e["t"] - e["stamp"]) * 1e3 for e in results]) if results else np.array([np.nan])
    summary = {
        "command": " ".join(sys.argv), "link": "netns+tc" if emulated else "loopback (no shaping)",
        "trace_mbps": trace if emulated else None, "duration_s": args.duration,
        "frames_published": len(images), "results": len(results),
        "delivered_fps": len(results) / args.duration,
        "latency_ms": {"p50": float(np.nanmedian(lat)), "p95": float(np.nanpercentile(lat, 95))},
        "bytes_per_frame_by_mode": {m: float(np.mean([e["bytes"] for e in sent if e["mode"] == m]))
                                    for m in sorted({e["mode"] for e in sent})},
        "by_candidate": per_candidate(events),
        "further_models": further_models(events, further_model_names(args.models, args.backbone)),
        "time_in_mode_s": {m: sum(1 for e in states if e["mode"] == m) * args.update_period for m in modes},
        "mode_switches": [{"t": round(b["t"] - t0, 2), "to": b["mode"], "reason": b["reason"]}
                          for a, b in zip(states, states[1:]) if (a["mode"], a["split"]) != (b["mode"], b["split"])],
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2))

    fig, axes = plt.subplots(3, 1, figsize=(10, 8), sharex=True)
    ts = [e["t"] - t0 for e in states]
    axes[0].plot(ts, [e["rate_bps"] / 1e6 for e in states], label="measured rate (link monitor)")
    if emulated:
        grid = np.linspace(0, args.duration, 400)
        axes[0].plot(grid, [link_rate_at(trace, g) for g in grid], "--", label="emulated link rate")
    axes[0].set_ylabel("Mbit/s"); axes[0].set_yscale("symlog", linthresh=0.5); axes[0].legend(loc="upper right")
    order = list(MODE_NAMES)
    axes[1].scatter(ts, [order.index(e["mode"]) for e in states], s=4)
    axes[1].set_yticks(range(len(order)), order); axes[1].set_ylabel("mode")
    axes[2].scatter([e["t"] - t0 for e in results], [(e["t"] - e["stamp"]) * 1e3 for e in results], s=4)
    axes[2].set_ylabel("end-to-end latency (ms)"); axes[2].set_xlabel("time (s)")
    fig.suptitle(f"fsplit_ros demo ({summary['link']})")
    fig.tight_layout()
    fig.savefig(out / "report.png", dpi=110)
    return summary


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--trace", default=DEFAULT_TRACE, help="t:Mbit/s steps (0 = cut)")
    ap.add_argument("--link", choices=["auto", "netns", "loopback"], default="auto")
    ap.add_argument("--video", default="", help="video file; '' = bundled demo video")
    ap.add_argument("--rate", type=float, default=10.0, help="camera fps")
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--slowdown", type=float, default=4.0,
                    help="emulated robot CPU slowdown vs this machine (1 = same CPU)")
    ap.add_argument("--out", default="", help="report folder (default runs/demo-<time>)")
    ap.add_argument("--update-period", type=float, default=0.1)
    ap.add_argument("--mode", default="", choices=["", *MODE_NAMES], help="pin the link monitor to a mode ('' = adaptive)")
    ap.add_argument("--models", nargs="*", default=[],
                    help="edge models answering each bottleneck payload (the backbone first), e.g. "
                         "efficientnet_lite0 efficientnet_lite2")
    ap.add_argument("--decoder-dir", default="", help="folder of those models' decoders ('' = shipped weights)")
    args = ap.parse_args(argv)
    if args.models:
        from fsplit_ros.runtime.shared_models import result_topic
        try:
            for model in args.models:
                result_topic(model)
        except ValueError as exc:
            print(f"[demo] --models: {exc}", file=sys.stderr)
            return 2
        if args.backbone not in args.models:
            print(f"[demo] --models must include the backbone ({args.backbone}): its bottleneck is the encoder "
                  f"every model reads", file=sys.stderr)
            return 2

    out = Path(args.out or Path("runs") / time.strftime("demo-%Y%m%d-%H%M%S")).resolve()
    earlier = [name for name in ("events.jsonl", "bag") if (out / name).exists()]
    if earlier:
        # the recorder appends to events.jsonl and never overwrites a bag: an earlier run's events
        # would be read as this run's
        print(f"[demo] {out} holds an earlier run ({', '.join(earlier)}): pass a new --out or delete it",
              file=sys.stderr)
        return 2
    out.mkdir(parents=True, exist_ok=True)
    trace = parse_trace(args.trace)
    link = None
    if args.link in ("auto", "netns"):
        try:
            link = EmulatedLink(name=f"fsdemo{os.getpid() % 10000}", rate_mbit=trace[0][1] or 0.01).open()
        except LinkEmulationUnavailable as exc:
            if args.link == "netns":
                raise
            print(f"[demo] {exc}: running on loopback without link shaping")
    graph = ProcessGraph(out / "logs", link, env={"ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))})
    log = EventLog(out / "events.jsonl")
    cfg = GraphConfig(backbone=args.backbone, camera_rate=args.rate, video=args.video, slowdown=args.slowdown,
                      update_period_s=args.update_period, record_images=True, pinned_mode=args.mode,
                      models=tuple(args.models), decoder_dir=args.decoder_dir)
    try:
        start_standard_graph(graph, cfg, log.path, bag_path=out / "bag")
        print(f"[demo] graph starting ({'netns + tc-shaped veth' if link else 'loopback'}); report -> {out}")
        wait_until_ready(graph, log)
        t0 = time.time()
        applied = None
        print(f"{'t':>5} {'link':>8} {'measured':>9} {'mode':>12} {'bytes/frame':>11} {'latency':>9} {'fps':>5}")
        while time.time() - t0 < args.duration:
            now = time.time()
            rate = link_rate_at(trace, now - t0)
            if link and rate != applied:
                link.set_rate(rate)
                applied = rate
            log.poll()
            s = window_stats(log.events, now)
            shown = ("cut" if rate == 0 else f"{rate:g}M") if link else "lo"
            print(f"{now - t0:5.0f} {shown:>8} {s['measured_mbps']:8.2f}M {s['mode']:>12} "
                  f"{s['bytes_per_frame']:11.0f} {s['latency_ms']:7.0f}ms {s['fps']:5.1f}", flush=True)
            time.sleep(max(0.0, 1.0 - (time.time() - now)))
    finally:
        graph.close()
        if link:
            link.close()
    log.poll()
    events = [e for e in log.events if e["t"] >= t0]
    summary = write_report(out, events, trace, t0, link is not None, args)
    print(json.dumps({k: summary[k] for k in ("link", "delivered_fps", "latency_ms", "bytes_per_frame_by_mode",
                                              "time_in_mode_s")}, indent=1))
    print("[demo] results per candidate (fidelity: recorded agreement with the full model on held-out frames)")
    print(candidate_table(summary["by_candidate"]))
    for model, r in summary["further_models"].items():
        print(f"[demo] {model} on {r['topic']}: {r['results']} results, {r['same_frames_as_backbone']} of them for "
              f"frames {args.backbone} answered too" + (f", p50 {r['latency_ms_p50']:.0f} ms" if r["results"] else ""))
    if "detections" in {e["topic"] for e in events}:
        from fsplit_ros.evaluation.detection_frames import draw_detections
        framed = draw_detections(out / "bag", out / "detections.png")
        print(f"[demo] {framed} recorded frames with detections; drawn: {out / 'detections.png'}")
    print(f"[demo] report: {out / 'report.png'}, {out / 'summary.json'}, bag {out / 'bag'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
