"""Backbones with real weights: timm models by name, weights from local files (never a hub)."""
from fsplit_ros.models.backbones import (BACKBONES, BackboneSpec, LoadedBackbone,
                                         build_architecture, load_backbone)
from fsplit_ros.models.preprocess import preprocess_rgb

__all__ = ["BACKBONES", "BackboneSpec", "LoadedBackbone", "build_architecture",
           "load_backbone", "preprocess_rgb"]
