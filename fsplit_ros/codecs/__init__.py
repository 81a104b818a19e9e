"""Payload codecs, one per mode, sharing one interface (see base.Codec)."""
from fsplit_ros.codecs.base import Codec, Encoded
from fsplit_ros.codecs.entropy import EntropyCodec
from fsplit_ros.codecs.image import IMAGE_FORMATS, ImageCodec
from fsplit_ros.codecs.tensor import TENSOR_CODECS, TensorCodec

__all__ = ["Codec", "Encoded", "EntropyCodec", "IMAGE_FORMATS", "ImageCodec", "TENSOR_CODECS",
           "TensorCodec"]
