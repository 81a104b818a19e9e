"""Shared helpers for the benchmark scripts: timing, frames, result files with their command."""
from __future__ import annotations

import json
import platform
import sys
from pathlib import Path

import cv2
import torch

from fsplit_ros.profiling.profiler import median_ms  # noqa: F401  (one timing rule for all)

RESULTS = Path(__file__).resolve().parent / "results"


def heldout_frames(n: int = 20) -> list:
    """Real frames never used for training: the foolbox ImageNet photos, then held-out video."""
    from fsplit_ros.datasets.offline import labelled_imagenet_photos
    frames = [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p, _ in labelled_imagenet_photos()]
    return frames[:n]


def machine() -> str:
    return f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def write_results(name: str, markdown: str, data: dict) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    command = "python " + " ".join(sys.argv)
    (RESULTS / f"{name}.md").write_text(f"Command: `{command}`  \n{markdown}\n")
    (RESULTS / f"{name}.json").write_text(json.dumps({"command": command, **data}, indent=2))
    print(markdown)
    return RESULTS / f"{name}.md"
