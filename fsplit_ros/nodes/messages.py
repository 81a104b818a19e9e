"""ROS message <-> core conversions shared by the nodes."""
from __future__ import annotations

import time

from builtin_interfaces.msg import Time
from vision_msgs.msg import Classification, ObjectHypothesis

from fsplit_ros.runtime.results import top_k_classes


def classification_msg(header, logits, k: int) -> Classification:
    msg = Classification(header=header)
    msg.results = [ObjectHypothesis(class_id=str(i), score=p) for i, p in top_k_classes(logits, k)]
    return msg


def wall_time_msg(t: float | None = None) -> Time:
    """Wall clock as builtin_interfaces/Time (for the link measurements between machines)."""
    t = time.time() if t is None else t
    sec = int(t)
    return Time(sec=sec, nanosec=int((t - sec) * 1e9))


def time_to_float(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9
