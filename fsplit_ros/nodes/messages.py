"""ROS message <-> core conversions shared by the nodes."""
from __future__ import annotations

import importlib
import time

from builtin_interfaces.msg import Time
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

# Link probes and their echoes: best effort (a probe lost in a cut must not be retransmitted and
# measured later), deep enough for a tiny probe and a whole train (policy/probing.MAX_TRAIN_MEMBERS)
# that go out together: a shallower reader that had not taken them yet would drop the first ones.
PROBE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)



def result_type(task):
    """The message class of a task's results (its `result_type`, e.g. vision_msgs/msg/Classification)."""
    package, _, name = task.result_type.split("/")
    return getattr(importlib.import_module(f"{package}.msg"), name)


def result_msg(deployment, header, output, image_width: int, image_height: int, top_k: int):
    """The task's result message for one frame's model output."""
    task = deployment.task
    return task.to_msg(header, deployment.results(output, image_width, image_height), top_k)


def wall_time_msg(t: float | None = None) -> Time:
    """Wall clock as builtin_interfaces/Time (for the link measurements between machines)."""
    t = time.time() if t is None else t
    sec = int(t)
    return Time(sec=sec, nanosec=int((t - sec) * 1e9))


def reception_time(info, now: float | None = None) -> float:
    """When DDS received a message (rclpy MessageInfo's received_timestamp, wall clock), else now.

    Link timing must not count the time a message waited for its callback: on a busy CPU that
    wait (tens of ms with the detector's tail on 2 shared cores) read as transfer time and made a
    20 Mbit/s link look like 3 Mbit/s. An RMW that leaves the stamp unset, or a stamp from a
    clock that disagrees with ours, falls back to the callback's time."""
    now = time.time() if now is None else now
    stamp = (info or {}).get("received_timestamp") or 0
    received = stamp * 1e-9
    return received if now - 5.0 <= received <= now + 0.001 else now


def time_to_float(stamp) -> float:
    return stamp.sec + stamp.nanosec * 1e-9
