"""One encoder, several edge models (issue 19): the shared payload against one dedicated payload per
model, side by side on the same held-out frames, and the decoder's fidelity-vs-steps curve.

    python bench/shared_encoder.py --run runs/shared_lite2 [--run runs/shared_lite2_views ...] \
        --dedicated runs/ablate_deep/lite2/pca/<checkpoint>.pt --out bench/results/shared_encoder

`--run`: a decoder training run's directory (its summary.json: the curve, and the decoder it wrote);
several runs (e.g. without and with augmented views) are measured side by side.

Per held-out family (A like the training footage, B unlike it; the frames the decoder's training run
scored, `--frames` spread evenly): bytes per frame (real rANS) and top-1 agreement with each
unmodified model on its own preprocessing (Wilson 95 % interval) of
  * the shared payload (the shipped Lite0 bottleneck) decoded for Lite0 (its own g_s) and for the
    added model (each run's fitted decoder);
  * the added model's dedicated bottleneck (same recipe as Lite0's shipped file: principal
    components at its first stride-32 map);
  * the floor any decoder must beat: the added model "answered" with the unmodified encoder
    model's own top-1 (how often the two unmodified models agree on these frames);
and the bytes per frame that serving both models costs: one shared payload vs both dedicated ones."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from fsplit_ros.bottleneck.shared import load_shared_decoder
from fsplit_ros.evaluation.intervals import format_interval, wilson_interval


def _row(name, model, payload, hits, sizes):
    n = len(hits)
    lo, hi = wilson_interval(sum(hits), n)
    return {"configuration": name, "model": model, "payload": payload, "frames": n,
            "bytes_mean": float(np.mean(sizes)), "top1_agreement": sum(hits) / n, "low": lo, "high": hi}


@torch.no_grad()
def measure(frames, shared_dep, target_dep, decoders: dict, dedicated_dep) -> list[dict]:
    """decoders: {label: decoder}."""
    injection = {d.config.injection_split for d in decoders.values()}
    if len(injection) != 1:
        raise ValueError(f"the decoders feed different split points {sorted(injection)}")
    tail2 = target_dep.splittable.tail(injection.pop())
    tail0 = shared_dep.splittable.tail(shared_dep.bottleneck.config.injection_split)
    hits = {k: [] for k in ("lite0", "dedicated", "borrowed", *decoders)}
    sizes = {k: [] for k in ("shared", "dedicated")}
    for rgb in frames:
        x0 = shared_dep.pixels_to_tensor(shared_dep.model_pixels(rgb))
        x2 = target_dep.pixels_to_tensor(target_dep.model_pixels(rgb))
        ref0, ref2 = int(shared_dep.backbone.model(x0).argmax()), int(target_dep.backbone.model(x2).argmax())
        z = shared_dep.bottleneck.g_a(x0)
        sizes["shared"].append(len(shared_dep.bottleneck.entropy_bottleneck.compress(z)[0]))
        z_hat = shared_dep.bottleneck.rounded(z)
        hits["lite0"].append(int(tail0(shared_dep.bottleneck.g_s(z_hat)).argmax()) == ref0)
        hits["borrowed"].append(ref0 == ref2)   # no decoder at all: the encoder model's own answer
        for label, decoder in decoders.items():
            hits[label].append(int(tail2(decoder(z_hat)).argmax()) == ref2)
        strings, shape = dedicated_dep.bottleneck.compress(x2)
        sizes["dedicated"].append(len(strings[0]))
        h = dedicated_dep.bottleneck.decompress(strings, shape)
        hits["dedicated"].append(int(tail2(h).argmax()) == ref2)
    s, t = shared_dep.name, target_dep.name
    return [_row(f"{s} via the shared payload (its own decoder)", s, "encoder", hits["lite0"], sizes["shared"]),
            *(_row(f"{t} via the shared payload (decoder: {label})", t, "shared", hits[label], sizes["shared"])
              for label in decoders),
            _row(f"{t} via its dedicated bottleneck", t, "dedicated", hits["dedicated"], sizes["dedicated"]),
            _row(f"{t} answered with unmodified {s}'s top-1 (no decoder: the floor)", t, "borrowed",
                 hits["borrowed"], sizes["shared"])]


def plot(curves: dict[str, list[dict]], rows: dict[str, list[dict]], target: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"A": "tab:blue", "B": "tab:orange"}
    styles = ["o:", "o-", "s-", "^-"]
    for fam in rows:
        for style, (label, curve) in zip(styles, curves.items()):
            steps = [c["step"] for c in curve if fam in c]
            vals = [100 * c[fam]["top1_agreement"] for c in curve if fam in c]
            lo = [100 * c[fam]["low"] for c in curve if fam in c]
            hi = [100 * c[fam]["high"] for c in curve if fam in c]
            a.plot(steps, vals, style, color=colors.get(fam), label=f"decoder: {label}, family {fam}")
            a.fill_between(steps, lo, hi, color=colors.get(fam), alpha=0.15)
        ded = next(r for r in rows[fam] if r["payload"] == "dedicated")
        a.axhline(100 * ded["top1_agreement"], ls="--", color=colors.get(fam),
                  label=f"dedicated bottleneck (PCA, 300 prior steps), family {fam}")
    a.set_xlabel("decoder training steps")
    a.set_ylabel(f"{target} top-1 agreement, held out (%)")
    a.grid(alpha=0.3)
    a.legend(fontsize=7, loc="lower right")
    markers = {"encoder": "D", "shared": "o", "dedicated": "s", "borrowed": "x"}
    for fam, fam_rows in rows.items():
        for r in fam_rows:
            b.errorbar(r["bytes_mean"] / 1e3, 100 * r["top1_agreement"],
                       yerr=[[100 * (r["top1_agreement"] - r["low"])], [100 * (r["high"] - r["top1_agreement"])]],
                       fmt=markers[r["payload"]], color=colors.get(fam), capsize=3,
                       label=f"{fam}: {r['configuration']}")
    b.set_xlabel("payload bytes per frame (KB)")
    b.set_ylabel("top-1 agreement with the unmodified model (%)")
    b.grid(alpha=0.3)
    b.legend(fontsize=6, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", required=True, type=Path, action="append",
                    help="a decoder training run's directory (repeat to compare runs)")
    ap.add_argument("--dedicated", required=True, type=Path, help="the added model's dedicated bottleneck")
    ap.add_argument("--frames", type=int, default=600, help="held-out frames per family (spread evenly)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from fsplit_ros.datasets.frames import heldout_families, load_frames
    from fsplit_ros.runtime import Deployment
    summaries = {run: json.loads((run / "summary.json").read_text()) for run in args.run}
    encoders = {s["encoder"] for s in summaries.values()}
    if len(encoders) != 1:
        raise SystemExit(f"the runs decode different encoders {sorted(encoders)}")
    shared = Deployment.load(encoders.pop())
    decoders, infos, curves = {}, {}, {}
    for run, summary in summaries.items():
        label = run_label(summary)
        if label in decoders:
            raise SystemExit(f"two runs are both '{label}': compare runs that differ")
        decoders[label], infos[label] = load_shared_decoder(summary["decoder"], encoder_hash=shared.bottleneck_hash)
        curves[label] = summary["curve"]
    targets = {d.config.backbone for d in decoders.values()}
    if len(targets) != 1:
        raise SystemExit(f"the runs fit decoders for different models {sorted(targets)}")
    target_name = targets.pop()
    target = Deployment.load(target_name, bottleneck=None)
    dedicated = Deployment.load(target_name, bottleneck=args.dedicated)
    rows = {}
    for fam, sources in heldout_families().items():
        frames = [f.rgb for f in load_frames(sources)]
        if len(frames) > args.frames:
            keep = np.linspace(0, len(frames) - 1, args.frames).round().astype(int)
            frames = [frames[i] for i in keep]
        rows[fam] = measure(frames, shared, target, decoders, dedicated)
    command = " ".join(["python bench/shared_encoder.py", *(sys.argv[1:] if argv is None else argv)])
    result = {"command": command, "encoder_hash": shared.bottleneck_hash, "dedicated": str(args.dedicated),
              "decoders": {label: {"hash": infos[label]["hash"],
                                   "training": {k: v for k, v in summaries[run].items() if k != "curve"}}
                           for run, label in zip(summaries, decoders)},
              "curves": curves, "families": rows}
    for fam, fam_rows in rows.items():
        by = {r["payload"]: r for r in fam_rows}
        best = max((r for r in fam_rows if r["payload"] == "shared"), key=lambda r: r["top1_agreement"])
        shared_bytes = by["encoder"]["bytes_mean"]
        both = shared_bytes + by["dedicated"]["bytes_mean"]
        result.setdefault("two_models", {})[fam] = {
            "shared_payload_bytes": shared_bytes, "dedicated_payloads_bytes": both, "ratio": both / shared_bytes,
            "best_decoder": best["configuration"],
            "fidelity_gap_points": 100 * (by["dedicated"]["top1_agreement"] - best["top1_agreement"])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(result, indent=1))
    plot(curves, rows, target_name, Path(f"{out}.png"))
    lines = ["# One encoder, several edge models\n", f"Command: `{command}`\n", "Decoders:\n"]
    lines += [f"- {label}: `{run}` ({s['steps']} steps, batch {s['batch']}, "
              f"{s.get('train_pairs', s.get('train_frames'))} training pairs)" for (run, s), label in zip(summaries.items(), decoders)]
    lines += ["", "| family | configuration | bytes/frame | top-1 agreement [95 % CI] | frames |", "|---|---|---|---|---|"]
    for fam, fam_rows in rows.items():
        for r in fam_rows:
            lines.append(f"| {fam} | {r['configuration']} | {r['bytes_mean']:.0f} | "
                         f"{format_interval(r['top1_agreement'], r['low'], r['high'])} | {r['frames']} |")
    lines += ["", "| family | bytes/frame, one shared payload | both dedicated payloads | ratio | "
                  "dedicated - best shared decoder (points) |", "|---|---|---|---|---|"]
    for fam, t in result["two_models"].items():
        lines.append(f"| {fam} | {t['shared_payload_bytes']:.0f} | {t['dedicated_payloads_bytes']:.0f} | "
                     f"{t['ratio']:.2f}x | {t['fidelity_gap_points']:+.1f} |")
    for label, curve in curves.items():
        lines += ["", f"Fidelity vs decoder steps (held out), decoder: {label}", "",
                  "| step | " + " | ".join(rows) + " |", "|---|" + "---|" * len(rows)]
        for c in curve:
            lines.append(f"| {c['step']} | " + " | ".join(
                format_interval(c[f]["top1_agreement"], c[f]["low"], c[f]["high"]) for f in rows if f in c) + " |")
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


def run_label(summary: dict) -> str:
    views = summary.get("views", 0)
    return ((f"{views} augmented views/frame" if views else "the frames only")
            + f", width {summary.get('width', 192)}, {summary['steps']} steps")


if __name__ == "__main__":
    sys.exit(main())
