"""FrankenSplit head distillation (ROS-free): Grad-CAM saliency at the injection point, the
trainer (rate + saliency-guided feature distortion, resumable), and beta sweeps.

    from fsplit_ros.training import load_config, train_sweep
    results = train_sweep(load_config("config/train_lite0.yaml", steps=600))
"""
from fsplit_ros.training.config import TrainConfig, load_config
from fsplit_ros.training.saliency import cached_saliency, compute_saliency, grad_cam
from fsplit_ros.training.trainer import (BottleneckTrainer, TrainingStateError, TrainResult,
                                         train_bottleneck, train_sweep)

__all__ = ["BottleneckTrainer", "TrainConfig", "TrainResult", "TrainingStateError", "cached_saliency",
           "compute_saliency", "grad_cam", "load_config", "train_bottleneck", "train_sweep"]
