"""FrankenSplit head distillation: Grad-CAM saliency, the trainer, beta sweeps (ROS-free)."""
