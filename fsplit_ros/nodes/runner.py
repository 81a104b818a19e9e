"""The one way every fsplit node process runs: init, spin until Ctrl-C / SIGTERM, clean up."""
from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], args=None) -> int:
    """Spin the node `make_node()` builds; a Ctrl-C or SIGTERM is a clean stop (exit code 0)."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
