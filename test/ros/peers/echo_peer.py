"""A second OS process for the transport test: echoes sensor_msgs/Image and CompressedFeature
back, tagging frame_id with its PID so the test can prove the message crossed processes."""
import os

import rclpy
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image

from fsplit_ros.msg import CompressedFeature


class EchoPeer(Node):
    def __init__(self):
        super().__init__("echo_peer")
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        self.image_out = self.create_publisher(Image, "echo/image", qos)
        self.feature_out = self.create_publisher(CompressedFeature, "echo/feature", qos)
        self.create_subscription(Image, "in/image", self.on_image, qos)
        self.create_subscription(CompressedFeature, "in/feature", self.on_feature, qos)

    def _tag(self, msg):
        msg.header.frame_id = f"{msg.header.frame_id}@pid{os.getpid()}"
        return msg

    def on_image(self, msg):
        self.image_out.publish(self._tag(msg))

    def on_feature(self, msg):
        self.feature_out.publish(self._tag(msg))


def main():
    rclpy.init()
    node = EchoPeer()
    try:
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == "__main__":
    main()
