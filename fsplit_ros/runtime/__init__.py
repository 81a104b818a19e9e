"""The two ends of the link, ROS-free: what the encoder node and the decoder node call."""
from fsplit_ros.runtime.deployment import Deployment
from fsplit_ros.runtime.offboard import EdgeDecoder
from fsplit_ros.runtime.onboard import IMAGE_RESOLUTIONS, MODES, OnboardEncoder, PreparedFrame
from fsplit_ros.runtime.payload_modes import DecodedFrame

__all__ = ["DecodedFrame", "Deployment", "EdgeDecoder", "IMAGE_RESOLUTIONS", "MODES", "OnboardEncoder", "PreparedFrame"]
