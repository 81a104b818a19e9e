"""The one way every fsplit node process runs: init, spin until Ctrl-C / SIGTERM, clean up."""
from __future__ import annotations

from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.logging import get_logger
from rclpy.node import Node


class NodeSetupError(RuntimeError):
    """A node cannot start with the configuration it was given; the message says what to change."""


def run_node(make_node: Callable[[], Node], args=None) -> int:
    """Spin the node `make_node()` builds; a Ctrl-C or SIGTERM is a clean stop (exit code 0), a
    NodeSetupError one fatal log line and exit code 2 (no traceback: nothing is broken)."""
    rclpy.init(args=args)
    node = None
    try:
        node = make_node()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except NodeSetupError as exc:
        get_logger(getattr(make_node, "__name__", "fsplit")).fatal(str(exc))
        return 2
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
