"""Camera stand-in for demos and tests: a video file (looped) or a V4L2 device, at a set rate.

  pub image (sensor_msgs/Image, sensor-data QoS)
"""
from __future__ import annotations

import cv2
from cv_bridge import CvBridge
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from fsplit_ros.datasets.offline import default_demo_video
from fsplit_ros.nodes.params import Param, declare_parameters
from fsplit_ros.nodes.runner import NodeSetupError, run_node

PARAMETERS = [
    Param("source", "", "Video path or device index ('0'); empty = the bundled demo video.", read_only=True),
    Param("rate", 10.0, "Frames per second published.", low=0.1, high=240.0),
    Param("loop", True, "Restart the video at its end."),
    Param("frame_id", "camera", "frame_id of the published images."),
    Param("encoding", "rgb8", "Published encoding.", choices=("rgb8", "bgr8", "mono8")),
    Param("max_frames", 0, "Stop publishing after this many frames; 0 = never.", low=0, high=2**31 - 1),
]


class VideoSourceNode(Node):
    def __init__(self):
        super().__init__("fsplit_video_source")
        self.p = declare_parameters(self, PARAMETERS)
        source = self.p["source"] or str(default_demo_video())
        self.capture = cv2.VideoCapture(int(source) if source.isdigit() else source)
        if not self.capture.isOpened():
            raise NodeSetupError(f"cannot open video source '{source}': give a readable video file or "
                               f"a camera device index")
        self.bridge = CvBridge()
        self.pub = self.create_publisher(Image, "image", qos_profile_sensor_data)
        self.count = 0
        self.timer = self.create_timer(1.0 / self.p["rate"], self.tick)
        self.get_logger().info(f"publishing {source} at {self.p['rate']} fps")

    def tick(self):
        if self.p["max_frames"] and self.count >= self.p["max_frames"]:
            self.timer.cancel()
            return
        ok, bgr = self.capture.read()
        if not ok and self.p["loop"]:
            self.capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            ok, bgr = self.capture.read()
        if not ok:
            self.get_logger().info("end of video", once=True)
            return
        encoding = self.p["encoding"]
        image = {"rgb8": lambda: cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), "bgr8": lambda: bgr,
                 "mono8": lambda: cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)}[encoding]()
        msg = self.bridge.cv2_to_imgmsg(image, encoding=encoding)
        msg.header.stamp = self.get_clock().now().to_msg()
        msg.header.frame_id = self.p["frame_id"]
        self.pub.publish(msg)
        self.count += 1


def main(args=None):
    return run_node(VideoSourceNode, args)
