"""ROS message <-> core conversions shared by the nodes."""
from __future__ import annotations

import time

from builtin_interfaces.msg import Time
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from vision_msgs.msg import (BoundingBox2D, Classification, Detection2D, Detection2DArray, ObjectHypothesis,
                             ObjectHypothesisWithPose)

from fsplit_ros.runtime.results import top_k_classes

# Link probes and their echoes: best effort (a probe lost in a cut must not be retransmitted and
# measured later), deep enough for a tiny probe and a whole train (policy/probing.MAX_TRAIN_MEMBERS)
# that go out together: a shallower reader that had not taken them yet would drop the first ones.
PROBE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT, history=HistoryPolicy.KEEP_LAST)

RESULT_TOPICS = {"classification": ("classification", Classification),
                 "detection": ("detections", Detection2DArray)}


def classification_msg(header, logits, k: int) -> Classification:
    msg = Classification(header=header)
    msg.results = [ObjectHypothesis(class_id=str(i), score=p) for i, p in top_k_classes(logits, k)]
    return msg


def detection_array_msg(header, detections) -> Detection2DArray:
    """Detections (boxes in original image pixels) as vision_msgs: COCO class name as class_id."""
    out = Detection2DArray(header=header)
    for d in detections:
        x1, y1, x2, y2 = d.box
        det = Detection2D(header=header)
        det.bbox = BoundingBox2D(size_x=float(x2 - x1), size_y=float(y2 - y1))
        det.bbox.center.position.x, det.bbox.center.position.y = float(x1 + x2) / 2, float(y1 + y2) / 2
        det.results = [ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=d.class_name, score=d.score))]
        out.detections.append(det)
    return out


def result_msg(deployment, header, output, image_width: int, image_height: int, top_k: int):
    """The task's result message for one frame's model output."""
    if deployment.task == "detection":
        return detection_array_msg(header, deployment.results(output, image_width, image_height))
    return classification_msg(header, output, top_k)


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
