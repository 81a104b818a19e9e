"""Payload codecs, one class per mode, sharing one interface (base.PayloadCodec); their names and
wire ids are registered in fsplit_ros/modes.py."""
from fsplit_ros.codecs.base import Encoded, PayloadCodec
from fsplit_ros.codecs.entropy import EntropyCodec
from fsplit_ros.codecs.image import IMAGE_FORMATS, ImageCodec
from fsplit_ros.codecs.tensor import TENSOR_CODECS, TensorCodec

__all__ = ["Encoded", "PayloadCodec", "EntropyCodec", "IMAGE_FORMATS", "ImageCodec", "TENSOR_CODECS",
           "TensorCodec"]
