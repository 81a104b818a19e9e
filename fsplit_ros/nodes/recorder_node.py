"""Recorder node: writes the fsplit topics to a rosbag2 file (MCAP or sqlite3, the format `ros2 bag
record` writes: raw CDR as received) where `ros2 bag` is missing, and streams one JSON line per
message to `events_path` for live tables and tests. On a ROS install `ros2 bag record` does the
same job; `fsplit-eval-bag` reads either.

Topics (relative, remappable): image, compressed_feature, classification, detections, frame_feedback,
link_state, and <model>/<result topic> for each further edge model in `models` (the decoder's)
"""
from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from rclpy.serialization import deserialize_message
from sensor_msgs.msg import Image

from fsplit_ros.msg import CompressedFeature, FrameFeedback, LinkState
from fsplit_ros.nodes.messages import result_type, time_to_float
from fsplit_ros.nodes.params import Param, declare_parameters
from fsplit_ros.nodes.runner import NodeSetupError, run_node
from fsplit_ros.runtime.shared_models import model_task
from fsplit_ros.runtime.shared_models import result_topic as shared_result_topic
from fsplit_ros.tasks import TASKS

PARAMETERS = [
    Param("bag_path", "", "rosbag2 output folder (must not exist); empty = no bag.", read_only=True),
    Param("storage", "mcap", "Bag storage.", read_only=True, choices=("mcap", "sqlite3")),
    Param("events_path", "", "JSON-lines event log; empty = none.", read_only=True),
    Param("record_images", True, "Also record the camera images (needed for offline agreement).",
          read_only=True),
    Param("models", [""], "The edge decoder's models (its `models`): each further model's results "
          "(<model>/<result topic>) are recorded too.", read_only=True),
]
RESULT_TASKS = {task.result_topic: task for task in TASKS.values()}
TOPICS = {
    "image": (Image, "sensor_msgs/msg/Image"),
    "compressed_feature": (CompressedFeature, "fsplit_ros/msg/CompressedFeature"),
    **{task.result_topic: (result_type(task), task.result_type) for task in TASKS.values()},
    "frame_feedback": (FrameFeedback, "fsplit_ros/msg/FrameFeedback"),
    "link_state": (LinkState, "fsplit_ros/msg/LinkState"),
}


def shared_model_topics(models) -> dict:
    """{<model>/<result topic>: task} of the further edge models among `models` (the decoder node
    publishes them there); an unknown name is a setup error."""
    topics = {}
    for name in (m for m in models if m):
        try:
            topics[shared_result_topic(name)] = model_task(name)
        except ValueError as exc:
            raise NodeSetupError(f"models: {exc}") from None
    return topics


def event_fields(topic: str, msg, result_tasks: dict = RESULT_TASKS) -> dict:
    """The few numbers per message that live tables and tests need."""
    stamp = time_to_float(msg.header.stamp)
    if topic == "image":
        return {"stamp": stamp, "w": msg.width, "h": msg.height}
    if topic == "compressed_feature":
        return {"stamp": stamp, "seq": msg.seq, "mode": msg.mode, "split": msg.split_index,
                "bytes": len(msg.data), "encode_s": msg.encode_time}
    if topic in result_tasks:
        return {"stamp": stamp, **result_tasks[topic].event_fields(msg)}
    if topic == "frame_feedback":
        return {"stamp": stamp, "seq": msg.seq, "bytes": msg.bytes, "ok": msg.ok, "error": msg.error,
                "edge_s": msg.edge_time, "batch": msg.batch_size}
    return {"rate_bps": msg.rate_bps, "rtt": msg.rtt, "mode": msg.mode, "split": msg.split_index,
            "reason": msg.reason, "down_s": msg.since_last_reply,
            "predicted_s": dict(zip(msg.candidate_modes, msg.predicted_latency)),
            "fidelity": {n: (None if math.isnan(f) else f) for n, f in zip(msg.candidate_modes, msg.fidelity)}}


class RecorderNode(Node):
    def __init__(self):
        super().__init__("fsplit_recorder")
        self.p = declare_parameters(self, PARAMETERS)
        self._lock = threading.Lock()
        self.writer, self.connections, self.events = None, {}, None
        topics = {t: v for t, v in TOPICS.items() if t != "image" or self.p["record_images"]}
        further = {t: task for t, task in shared_model_topics(self.p["models"]).items() if t not in topics}
        topics.update({t: (result_type(task), task.result_type) for t, task in further.items()})
        self.topics, self.result_tasks = topics, {**RESULT_TASKS, **further}
        if self.p["bag_path"] and Path(self.p["bag_path"]).exists():
            raise NodeSetupError(f"bag_path '{self.p['bag_path']}' exists already: rosbag2 never "
                                 f"overwrites a bag; pass a new folder or delete that one")
        if self.p["bag_path"]:
            from rosbags.rosbag2 import StoragePlugin, Writer
            from fsplit_ros.evaluation.bag_types import fsplit_typestore
            store = fsplit_typestore()
            plugin = StoragePlugin.MCAP if self.p["storage"] == "mcap" else StoragePlugin.SQLITE3
            self.writer = Writer(self.p["bag_path"], version=9, storage_plugin=plugin)
            self.writer.open()
            for topic, (_, msgtype) in topics.items():
                self.connections[topic] = self.writer.add_connection(self.resolve_topic_name(topic), msgtype,
                                                                     typestore=store)
        self.events = open(self.p["events_path"], "a", buffering=1) if self.p["events_path"] else None
        reliable = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        for topic, (msg_type, _) in topics.items():
            qos = qos_profile_sensor_data if topic == "image" else reliable
            self.create_subscription(msg_type, topic, lambda raw, t=topic: self.on_raw(t, raw), qos, raw=True,
                                     event_callbacks=SubscriptionEventCallbacks(
                                         matched=lambda info, t=topic: self.on_matched(t, info)))
        self.get_logger().info(f"recording {sorted(topics)} to bag '{self.p['bag_path']}' "
                               f"events '{self.p['events_path']}'")

    def on_matched(self, topic: str, info):
        """Say when a recorded topic gains or loses a publisher: messages sent before the match are
        not in the bag (DDS matches endpoints some time after the nodes start)."""
        self.get_logger().info(f"{self.resolve_topic_name(topic)}: {info.current_count} publisher(s) matched")

    def on_raw(self, topic: str, raw: bytes):
        now = time.time()
        with self._lock:
            if self.writer is not None:
                self.writer.write(self.connections[topic], time.time_ns(), raw)
            if self.events is not None:
                msg = deserialize_message(raw, self.topics[topic][0])
                self.events.write(json.dumps({"t": now, "topic": topic,
                                              **event_fields(topic, msg, self.result_tasks)}) + "\n")

    def destroy_node(self):
        self.close()              # the bag and the event log are complete on every exit path
        super().destroy_node()

    def close(self):
        with self._lock:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
            if self.events is not None:
                self.events.close()
                self.events = None


def main(args=None):
    return run_node(RecorderNode, args)
