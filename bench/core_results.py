"""Core results for both default backbones: split points with c_l, bytes per frame per mode at
224x224, encoder parameter count, onboard/offboard milliseconds (medians, this machine).

    python bench/core_results.py [--threads 1] [--out bench/results/core]

Bytes and times come from fsplit-profile's measurement code on the 20 labelled ImageNet photos.
The bottleneck is the shipped trained checkpoint when one exists, otherwise an untrained one
(say so in the output: its bytes say nothing about compression)."""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
from pathlib import Path

import torch

from fsplit_ros.bottleneck import BottleneckConfig, FrankenSplitBottleneck, save_bottleneck
from fsplit_ros.profiling.profiler import sample_frames
from fsplit_ros.profiling import profile_deployment
from fsplit_ros.runtime import Deployment
from fsplit_ros.runtime.deployment import default_bottleneck_path


def deployment_with_bottleneck(name: str, tmp: Path) -> tuple[Deployment, str]:
    dep = Deployment.load(name, bottleneck=None)
    shipped = default_bottleneck_path(name)
    if shipped.is_file():
        dep.attach_bottleneck(shipped)
        return dep, f"trained ({shipped.name})"
    point = dep.split_point(dep.backbone.spec.injection_split)
    torch.manual_seed(0)
    model = FrankenSplitBottleneck(BottleneckConfig(name, point.index, point.shape[1], 224 // point.shape[-1]))
    model.update_tables()
    path = tmp / f"{name}_untrained.pt"
    save_bottleneck(model, path)
    dep.attach_bottleneck(path)
    return dep, "UNTRAINED (random weights: bytes are not meaningful)"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default="bench/results/core")
    args = ap.parse_args()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames = sample_frames(20)
    command = "python " + " ".join(sys.argv)
    lines = [f"# Core results\n", f"Command: `{command}`  ", f"Machine: {platform.processor() or platform.machine()}, "
             f"torch {torch.__version__}, {args.threads} thread(s); frames: the 20 foolbox ImageNet photos, "
             f"224x224; times are medians of {args.repeats} runs.\n"]
    results = {"command": command, "threads": args.threads, "backbones": {}}
    tmp = Path(tempfile.mkdtemp(prefix="fsplit_core_results_"))
    for name in ("efficientnet_lite0", "mobilenetv2"):
        dep, bn_note = deployment_with_bottleneck(name, tmp)
        profile = profile_deployment(dep, frames, repeats=args.repeats, threads=args.threads, batch_sizes=(1, 8))
        enc_params = dep.bottleneck.encoder_parameter_count()
        results["backbones"][name] = {"bottleneck": bn_note, "encoder_parameters": enc_params,
                                      "split_points": [p.to_dict() for p in dep.split_points], "profile": profile.to_dict()}
        lines += [f"## {name}\n", f"Bottleneck: {bn_note}; encoder g_a parameters: {enc_params:,}; "
                  f"preprocessing {profile.preprocess_ms:.2f} ms (all modes).\n",
                  "| split | after | shape | c_l (uint8) | compressive |", "|---|---|---|---|---|"]
        lines += [f"| {p.index} | {p.name} | {'x'.join(map(str, p.shape[1:]))} | {p.compression:.4f} | "
                  f"{'yes' if p.compressive else ''} |" for p in dep.split_points]
        lines += ["", "| candidate | bytes/frame (mean) | p95 | onboard ms | offboard ms (B=1) | offboard ms/frame (B=8) |",
                  "|---|---|---|---|---|---|"]
        for cand, c in profile.candidates.items():
            lines.append(f"| {cand} | {c.bytes:.0f} | {c.bytes_p95:.0f} | {c.onboard_ms:.2f} | "
                         f"{c.offboard_ms[1]:.2f} | {c.offboard_ms[8]:.2f} |")
        lines.append("")
    Path(f"{out}.json").write_text(json.dumps(results, indent=2))
    Path(f"{out}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
