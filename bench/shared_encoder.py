"""One encoder, several edge models (issue 19): the shared payload against one dedicated payload per
model, side by side on the same held-out frames, and the decoder's fidelity-vs-steps curve.

    python bench/shared_encoder.py --decoder runs/shared_lite2/efficientnet_lite2_from_efficientnet_lite0.pt \
        --curve runs/shared_lite2/summary.json --dedicated runs/ablate_deep/lite2/pca/<checkpoint>.pt \
        --out bench/results/shared_encoder

Per held-out family (A like the training footage, B unlike it; the frames the decoder's training run
scored, `--frames` spread evenly): bytes per frame (real rANS) and top-1 agreement with each
unmodified model on its own preprocessing (Wilson 95 % interval) of
  * the shared payload (the shipped Lite0 bottleneck) decoded for Lite0 (its own g_s) and for the
    added model (the fitted decoder);
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
def measure(frames, shared_dep, target_dep, decoder, dedicated_dep) -> list[dict]:
    cfg = decoder.config
    tail2 = target_dep.splittable.tail(cfg.injection_split)
    tail0 = shared_dep.splittable.tail(shared_dep.bottleneck.config.injection_split)
    hits = {k: [] for k in ("lite0", "shared", "dedicated", "borrowed")}
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
        hits["shared"].append(int(tail2(decoder(z_hat)).argmax()) == ref2)
        strings, shape = dedicated_dep.bottleneck.compress(x2)
        sizes["dedicated"].append(len(strings[0]))
        h = dedicated_dep.bottleneck.decompress(strings, shape)
        hits["dedicated"].append(int(tail2(h).argmax()) == ref2)
    s, t = shared_dep.name, target_dep.name
    return [_row(f"{s} via the shared payload (its own decoder)", s, "shared", hits["lite0"], sizes["shared"]),
            _row(f"{t} via the shared payload (fitted decoder)", t, "shared", hits["shared"], sizes["shared"]),
            _row(f"{t} via its dedicated bottleneck", t, "dedicated", hits["dedicated"], sizes["dedicated"]),
            _row(f"{t} answered with unmodified {s}'s top-1 (no decoder: the floor)", t, "borrowed",
                 hits["borrowed"], sizes["shared"])]


def plot(curve: list[dict], rows: dict[str, list[dict]], target: str, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, (a, b) = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = {"A": "tab:blue", "B": "tab:orange"}
    for fam in rows:
        steps = [c["step"] for c in curve if fam in c]
        vals = [100 * c[fam]["top1_agreement"] for c in curve if fam in c]
        lo = [100 * c[fam]["low"] for c in curve if fam in c]
        hi = [100 * c[fam]["high"] for c in curve if fam in c]
        a.plot(steps, vals, "o-", color=colors.get(fam), label=f"shared encoder + fitted decoder, family {fam}")
        a.fill_between(steps, lo, hi, color=colors.get(fam), alpha=0.15)
        ded = next(r for r in rows[fam] if r["payload"] == "dedicated")
        a.axhline(100 * ded["top1_agreement"], ls="--", color=colors.get(fam),
                  label=f"dedicated bottleneck (PCA, 300 prior steps), family {fam}")
    a.set_xlabel("decoder training steps (batch 32)")
    a.set_ylabel(f"{target} top-1 agreement, held out (%)")
    a.grid(alpha=0.3)
    a.legend(fontsize=7, loc="lower right")
    markers = {"shared": "o", "dedicated": "s", "borrowed": "x"}
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
    ap.add_argument("--decoder", required=True, type=Path)
    ap.add_argument("--curve", required=True, type=Path, help="the decoder run's summary.json")
    ap.add_argument("--dedicated", required=True, type=Path, help="the added model's dedicated bottleneck")
    ap.add_argument("--frames", type=int, default=600, help="held-out frames per family (spread evenly)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from fsplit_ros.datasets.frames import heldout_families, load_frames
    from fsplit_ros.runtime import Deployment
    summary = json.loads(args.curve.read_text())
    shared = Deployment.load(summary["encoder"])
    decoder, info = load_shared_decoder(args.decoder, encoder_hash=shared.bottleneck_hash)
    target = Deployment.load(decoder.config.backbone, bottleneck=None)
    dedicated = Deployment.load(decoder.config.backbone, bottleneck=args.dedicated)
    rows = {}
    for fam, sources in heldout_families().items():
        frames = [f.rgb for f in load_frames(sources)]
        if len(frames) > args.frames:
            keep = np.linspace(0, len(frames) - 1, args.frames).round().astype(int)
            frames = [frames[i] for i in keep]
        rows[fam] = measure(frames, shared, target, decoder, dedicated)
    command = " ".join(["python bench/shared_encoder.py", *(sys.argv[1:] if argv is None else argv)])
    result = {"command": command, "decoder": str(args.decoder), "decoder_hash": info["hash"],
              "encoder_hash": shared.bottleneck_hash, "dedicated": str(args.dedicated),
              "decoder_training": {k: v for k, v in summary.items() if k != "curve"},
              "curve": summary["curve"], "families": rows}
    for fam, fam_rows in rows.items():
        shared_bytes = fam_rows[0]["bytes_mean"]
        both = fam_rows[0]["bytes_mean"] + fam_rows[2]["bytes_mean"]
        result.setdefault("two_models", {})[fam] = {
            "shared_payload_bytes": shared_bytes, "dedicated_payloads_bytes": both, "ratio": both / shared_bytes,
            "fidelity_gap_points": 100 * (fam_rows[2]["top1_agreement"] - fam_rows[1]["top1_agreement"])}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{out}.json").write_text(json.dumps(result, indent=1))
    plot(summary["curve"], rows, decoder.config.backbone, Path(f"{out}.png"))
    lines = ["# One encoder, several edge models\n", f"Command: `{command}`\n",
             f"Decoder training: `{summary.get('command', 'python -m fsplit_ros.training.shared_decoder')}` "
             f"({summary['steps']} steps, batch {summary['batch']}, {summary['train_frames']} training frames).\n",
             "| family | configuration | bytes/frame | top-1 agreement [95 % CI] | frames |", "|---|---|---|---|---|"]
    for fam, fam_rows in rows.items():
        for r in fam_rows:
            lines.append(f"| {fam} | {r['configuration']} | {r['bytes_mean']:.0f} | "
                         f"{format_interval(r['top1_agreement'], r['low'], r['high'])} | {r['frames']} |")
    lines += ["", "| family | bytes/frame, one shared payload | both dedicated payloads | ratio | "
                  "dedicated - shared fidelity (points) |", "|---|---|---|---|---|"]
    for fam, t in result["two_models"].items():
        lines.append(f"| {fam} | {t['shared_payload_bytes']:.0f} | {t['dedicated_payloads_bytes']:.0f} | "
                     f"{t['ratio']:.2f}x | {t['fidelity_gap_points']:+.1f} |")
    lines += ["", "Fidelity vs decoder steps (held out):", "", "| step | " + " | ".join(rows) + " |",
              "|---|" + "---|" * len(rows)]
    for c in summary["curve"]:
        lines.append(f"| {c['step']} | " + " | ".join(
            format_interval(c[f]["top1_agreement"], c[f]["low"], c[f]["high"]) for f in rows if f in c) + " |")
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
