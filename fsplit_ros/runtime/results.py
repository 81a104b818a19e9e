"""Model outputs -> what the nodes publish (ROS-free): top-k classes with probabilities."""
from __future__ import annotations

import torch


def top_k_classes(logits: torch.Tensor, k: int) -> list[tuple[int, float]]:
    probs = torch.softmax(logits.reshape(-1).float(), dim=0)
    values, indices = probs.topk(min(k, probs.numel()))
    return [(int(i), float(v)) for i, v in zip(indices, values)]

