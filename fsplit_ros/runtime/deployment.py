"""A deployed model: backbone (real weights), its split points, the optional FrankenSplit
bottleneck, and the per-mode hashes both ends compare before decoding anything.

Every task (fsplit_ros/tasks.py: classification, detection) shares all of the machinery; the task
decides only how camera pixels become the model input and how the output becomes a result."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from fsplit_ros.bottleneck import FrankenSplitBottleneck, load_bottleneck
from fsplit_ros.models import LoadedBackbone, load_backbone
from fsplit_ros.splitting import SplitPoint, SplittableModel

DEFAULT_WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"


def default_bottleneck_path(backbone: str) -> Path:
    """Where the bottleneck trained by this project for `backbone` ships (fsplit_ros/weights)."""
    return DEFAULT_WEIGHTS_DIR / f"{backbone}_bottleneck.pt"


@dataclass
class Deployment:
    backbone: LoadedBackbone
    splittable: SplittableModel
    split_points: list[SplitPoint]
    bottleneck: FrankenSplitBottleneck | None = None
    bottleneck_hash: str | None = None
    bottleneck_metadata: dict | None = None

    @property
    def task(self):
        """The fsplit_ros.tasks.Task of the backbone: its preprocessing, results and result message."""
        return self.backbone.task

    def model_pixels(self, rgb: np.ndarray) -> np.ndarray:
        """Camera frame -> the uint8 image the model sees (the task's center crop or letterbox)."""
        return self.task.model_pixels(self.backbone, rgb)

    def pixels_to_tensor(self, pixels: np.ndarray) -> torch.Tensor:
        return self.task.pixels_to_tensor(self.backbone, pixels)

    def results(self, output: torch.Tensor, image_width: int, image_height: int, **postprocess_options):
        """One frame's model output -> the task's result: logits (classification) or detections
        in original pixels (`postprocess_options`, e.g. score_threshold, go to the detector)."""
        return self.task.results(self.backbone, output, image_width, image_height, **postprocess_options)

    @classmethod
    def load(cls, backbone: str, weights: str | Path | None = None,
             bottleneck: str | Path | None = "default", transmit_bytes_per_element: float = 1.0
             ) -> "Deployment":
        """bottleneck: a checkpoint path, "default" (the shipped one if present) or None/"" (none)."""
        loaded = load_backbone(backbone, weights)
        splittable = SplittableModel(loaded.model)
        points = splittable.split_points(loaded.input_size, transmit_bytes_per_element)
        dep = cls(backbone=loaded, splittable=splittable, split_points=points)
        if bottleneck == "default":
            path = default_bottleneck_path(loaded.name)
            bottleneck = path if path.is_file() else None
        if bottleneck:
            dep.attach_bottleneck(bottleneck)
        return dep

    def attach_bottleneck(self, path: str | Path) -> None:
        model, info = load_bottleneck(path)
        cfg = model.config
        if cfg.backbone != self.backbone.name:
            raise ValueError(f"bottleneck {path} was trained for backbone '{cfg.backbone}', not "
                             f"'{self.backbone.name}': pass the checkpoint trained for this backbone")
        if cfg.input_size != self.input_size:
            raise ValueError(f"bottleneck {path} was trained for {cfg.input_size}x{cfg.input_size} input, "
                             f"{self.backbone.name} takes {self.input_size}x{self.input_size}")
        want = self.split_point(cfg.injection_split).shape
        if (cfg.target_channels, cfg.target_side) != (want[1], want[-1]):
            raise ValueError(f"bottleneck {path} reconstructs {cfg.target_channels} channels at stride "
                             f"{cfg.target_stride}, but split {cfg.injection_split} of "
                             f"{self.backbone.name} is {want}")
        if cfg.backbone_head:   # its encoder is this backbone's own head: the very same weights?
            trained_with = info["metadata"].get("backbone_weights_hash")
            if trained_with != self.backbone.weights_hash:
                raise ValueError(f"bottleneck {path} encodes with the layers of backbone weights "
                                 f"{str(trained_with)[:12]}, but {self.backbone.name} here has "
                                 f"{self.backbone.weights_hash[:12]}: load the weights it was trained "
                                 f"with, or train a bottleneck for these")
            model.attach_backbone_head(self.splittable.head(cfg.encoder_split))
        self.bottleneck, self.bottleneck_hash = model, info["hash"]
        self.bottleneck_metadata = info["metadata"]

    @property
    def name(self) -> str:
        return self.backbone.name

    @property
    def input_size(self) -> int:
        return self.backbone.input_size

    def split_point(self, index: int) -> SplitPoint:
        for p in self.split_points:
            if p.index == index:
                return p
        raise ValueError(f"{self.name} has no inner split point {index} (valid: 1..{len(self.split_points)})")

    def compressive_split_indices(self) -> list[int]:
        return [p.index for p in self.split_points if p.compressive]

    def model_hashes(self) -> dict[str, str]:
        """Mode -> hash of everything a payload of that mode needs on the other end (modes this
        deployment cannot send, e.g. bottleneck without a checkpoint, have none)."""
        from fsplit_ros.runtime.payload_modes import PAYLOAD_MODES
        hashes = {name: mode.model_hash(self) for name, mode in PAYLOAD_MODES.items()}
        return {name: h for name, h in hashes.items() if h is not None}
