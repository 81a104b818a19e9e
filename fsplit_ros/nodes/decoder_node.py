"""Offboard decoder node (edge server): CompressedFeature -> validated decode -> backbone tail ->
results with the camera frame's header, plus FrameFeedback for the robot's link monitor.

One decoder can serve several robots: for each namespace NS in robot_namespaces it uses
  sub NS/compressed_feature, NS/link_probe    pub NS/classification, NS/frame_feedback, NS/link_probe_echo
(NS/detections for a detector), and NS/<model>/classification for every further model in `models`
that answers the same bottleneck payloads through its decoder (runtime/shared_models.py).
Frames that arrive together are decoded in one batch (one tail call per split point). Queues are
bounded per robot (the newest frames win), and a bad payload is dropped with a typed reason.
"""
from __future__ import annotations

import threading
import time
from collections import deque

import torch
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from rclpy.serialization import deserialize_message

from fsplit_ros.msg import CompressedFeature, FrameFeedback, LinkProbe
from fsplit_ros.nodes.messages import PROBE_QOS, reception_time, result_msg, result_type, wall_time_msg
from fsplit_ros.nodes.params import Param, declare_parameters
from fsplit_ros.nodes.throttle import PerKindThrottle
from fsplit_ros.payload import Limits, PayloadError
from fsplit_ros.payload.errors import ERROR_KINDS
from fsplit_ros.modes import PIXEL_MODES
from fsplit_ros.bottleneck.shared import SharedDecoderMismatch
from fsplit_ros.runtime import Deployment, EdgeDecoder
from fsplit_ros.policy import DEFAULT_MIN_FIDELITY
from fsplit_ros.runtime.shared_models import SharedModel, load_shared_models
from fsplit_ros.runtime.shared_models import result_topic as shared_result_topic
from fsplit_ros.nodes.runner import NodeSetupError, run_node

PARAMETERS = [
    Param("backbone", "efficientnet_lite0", "Model name; must match the robots.", read_only=True),
    Param("weights", "", "Local backbone checkpoint; empty = offline default.", read_only=True),
    Param("bottleneck_checkpoint", "default", "FrankenSplit checkpoint; 'default' = shipped one, "
          "empty = none.", read_only=True),
    Param("robot_namespaces", [""], "Namespaces of the robots served; '' = this node's namespace.",
          read_only=True),
    Param("models", [""], "Edge models answering the robots' bottleneck payloads: backbone (through its "
          "bottleneck's own decoder) and others, each through a decoder fitted to that bottleneck "
          "(<model>_from_<backbone>.pt in decoder_dir), published on <model>/<result topic>; "
          "[''] = backbone alone.", read_only=True),
    Param("decoder_dir", "", "Folder of the shared-encoder decoders; empty = the shipped weights.", read_only=True),
    Param("max_batch", 8, "Frames decoded together in one tail call.", low=1, high=64),
    Param("batch_window_ms", 5.0, "Wait this long after a frame for more to batch with it.", low=0.0,
          high=1000.0),
    Param("allow_image_mode", True, "False: reject image (pixel) payloads."),
    Param("max_payload_bytes", 16 * 1024 * 1024, "Largest payload accepted.", read_only=True, low=1024,
          high=2**31 - 1),
    Param("max_tensor_bytes", 64 * 1024 * 1024, "Largest decoded tensor accepted.", read_only=True,
          low=1024, high=2**31 - 1),
    Param("max_image_side", 8192, "Largest image side accepted.", read_only=True, low=16, high=65535),
    Param("top_k", 5, "Classes per result.", low=1, high=1000),
    Param("num_threads", 0, "torch CPU threads; 0 = torch default.", read_only=True, low=0, high=256),
]


# CompressedFeature fields besides the payload (header, names, hash, shape): generous, but capped.
MAX_METADATA_BYTES = 64 * 1024
# The link monitor pads probes to at most 64 KiB (policy/probing.MAX_MEMBER_BYTES).
MAX_PROBE_BYTES = 256 * 1024
REJECT_LOG_PERIOD_S = 5.0   # one log line per kind of rejected frame per period


class MetadataMismatch(PayloadError):
    """The ROS message's metadata disagrees with the payload it carries."""
    kind = "metadata"


class InternalDecodeError(PayloadError):
    """An unexpected failure while decoding one frame (a bug): reported, never fatal."""
    kind = "internal"


class RobotLink:
    """Publishers and the bounded frame queue of one robot namespace."""

    def __init__(self, node: Node, ns: str, queue_len: int):
        prefix = f"{ns.rstrip('/')}/" if ns else ""
        self.name = ns or node.get_namespace()
        self.queue: deque = deque(maxlen=queue_len)   # newest wins when the edge falls behind
        task = node.decoder.dep.task
        self.result_pub = node.create_publisher(result_type(task), f"{prefix}{task.result_topic}", 10)
        self.shared_pubs = {m.name: node.create_publisher(result_type(m.deployment.task),
                                                          f"{prefix}{shared_result_topic(m.name)}", 10)
                            for m in node.decoder.shared_models}
        self.feedback_pub = node.create_publisher(FrameFeedback, f"{prefix}frame_feedback", 50)
        self.echo_pub = node.create_publisher(LinkProbe, f"{prefix}link_probe_echo", PROBE_QOS)
        reliable_newest = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                     history=HistoryPolicy.KEEP_LAST)
        # Raw (serialized) subscriptions: the size a remote peer chose is checked before the message
        # is turned into Python objects, so an oversized one costs one buffer, not three.
        self.node = node
        node.create_subscription(CompressedFeature, f"{prefix}compressed_feature", self.on_feature,
                                 reliable_newest, raw=True)
        node.create_subscription(LinkProbe, f"{prefix}link_probe", self.echo, PROBE_QOS, raw=True)

    def on_feature(self, raw: bytes, info: dict):
        received = reception_time(info)
        limit = self.node.p["max_payload_bytes"] + MAX_METADATA_BYTES
        if len(raw) > limit:
            self.node.reject_unread(self, len(raw), "oversized", f"message of {len(raw)} bytes exceeds "
                                    f"max_payload_bytes={self.node.p['max_payload_bytes']} (+ metadata)")
            return
        self.node.enqueue(self, deserialize_message(raw, CompressedFeature), received)

    def echo(self, raw: bytes, info: dict):
        """Answer a probe at once with when DDS received it here (a train's spacing is the uplink's
        rate); the padding only measures the uplink, so it is not sent back (the echo is never
        bigger than the probe: no amplification). Probes beyond what a link monitor sends are
        dropped unanswered."""
        received = reception_time(info)
        if len(raw) > MAX_PROBE_BYTES:
            self.node.note_bad_probe(self, len(raw))
            return
        probe = deserialize_message(raw, LinkProbe)
        self.echo_pub.publish(LinkProbe(seq=probe.seq, sent_stamp=probe.sent_stamp,
                                        received_stamp=wall_time_msg(received)))


class DecoderNode(Node):
    def __init__(self):
        super().__init__("fsplit_decoder")
        self.p = declare_parameters(self, PARAMETERS)
        if self.p["num_threads"]:
            torch.set_num_threads(self.p["num_threads"])
        self.add_on_set_parameters_callback(self._on_set_parameters)
        deployment = Deployment.load(self.p["backbone"], self.p["weights"] or None,
                                     self.p["bottleneck_checkpoint"] or None)
        limits = Limits(self.p["max_payload_bytes"], self.p["max_tensor_bytes"], self.p["max_image_side"])
        self.decoder = EdgeDecoder(deployment, limits, self._refused_modes(), self._shared_models(deployment))
        self.rejections = PerKindThrottle(REJECT_LOG_PERIOD_S)   # rejected frames per kind
        self.bad_probes = PerKindThrottle(REJECT_LOG_PERIOD_S)
        self._cv = threading.Condition()
        self._running = True
        self.robots = [RobotLink(self, ns, self.p["max_batch"]) for ns in self.p["robot_namespaces"]]
        self._worker = threading.Thread(target=self._work, name="fsplit_decoder_worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"decoder ready: {deployment.name}, modes {sorted(self.decoder.hashes)}, serving "
            f"{[r.name for r in self.robots]}")

    def _shared_models(self, deployment: Deployment) -> list[SharedModel]:
        """The further models of `models`, each with its decoder checked against this bottleneck."""
        models = [m for m in self.p["models"] if m] or [deployment.name]
        if deployment.name not in models:
            raise NodeSetupError(f"models {models} must include backbone '{deployment.name}': its bottleneck is "
                                 f"the encoder the robots send with, and the other models read its latent")
        try:
            shared = load_shared_models(models, deployment, self.p["decoder_dir"] or None)
        except SharedDecoderMismatch as exc:
            raise NodeSetupError(str(exc)) from None
        for model in shared:
            self.get_logger().info(f"{model.name} answers bottleneck payloads too (decoder {model.decoder_hash[:12]} "
                                   f"fitted to this bottleneck; {model.fidelity_note()}); split and image "
                                   f"payloads are {deployment.name}'s alone")
            if not model.heldout or min(model.heldout.values()) < DEFAULT_MIN_FIDELITY:
                self.get_logger().warning(
                    f"{model.name}'s results through the shared payload may differ from the unmodified model's "
                    f"({model.fidelity_note()}; the link monitor's default floor is "
                    f"{100 * DEFAULT_MIN_FIDELITY:.0f} %): BENCHMARKS.md section 10")
        return shared

    def _refused_modes(self) -> frozenset:
        return frozenset() if self.p["allow_image_mode"] else PIXEL_MODES

    def _on_set_parameters(self, params):
        from rcl_interfaces.msg import SetParametersResult
        for param in params:
            self.p[param.name] = param.value
        if hasattr(self, "decoder"):
            self.decoder.refused_modes = self._refused_modes()
        return SetParametersResult(successful=True)

    @property
    def rejected(self) -> dict[str, int]:
        """Rejected frames per PayloadError kind."""
        return self.rejections.counts

    def _log_rejection(self, robot: RobotLink, what: str, kind: str, message: str):
        suffix = self.rejections.note(kind)
        if suffix is not None:
            self.get_logger().error(f"dropped {what} from {robot.name}: {kind}: {message}{suffix}")

    def reject_unread(self, robot: RobotLink, size: int, kind: str, message: str):
        """A message refused before deserialization: no header or seq to answer with, but the
        robot's link monitor still learns that the edge is up and refusing its frames."""
        self._log_rejection(robot, "an unread message", kind, message)
        now = wall_time_msg()
        robot.feedback_pub.publish(FrameFeedback(source=robot.name, bytes=min(size, 2**32 - 1), received_stamp=now,
                                                 finished_stamp=now, ok=False, error_kind=ERROR_KINDS[kind],
                                                 error=f"{kind}: {message}"[:500]))

    def note_bad_probe(self, robot: RobotLink, size: int):
        if self.bad_probes.note("oversized") is not None:
            self.get_logger().warning(f"ignoring a {size}-byte link probe from {robot.name} (more than "
                                      f"{MAX_PROBE_BYTES} bytes: not from an fsplit link monitor)")

    def enqueue(self, robot: RobotLink, msg: CompressedFeature, received: float):
        """received: when DDS delivered it (the robot's link monitor times the transfer up to it)."""
        with self._cv:
            robot.queue.append((received, msg))
            self._cv.notify()

    def _take_batch(self) -> list:
        with self._cv:
            while self._running and not any(r.queue for r in self.robots):
                self._cv.wait(0.2)
            if not self._running:
                return []
        time.sleep(self.p["batch_window_ms"] / 1000.0)
        batch = []
        with self._cv:
            while len(batch) < self.p["max_batch"] and any(r.queue for r in self.robots):
                for robot in self.robots:
                    if robot.queue and len(batch) < self.p["max_batch"]:
                        received, msg = robot.queue.popleft()
                        batch.append((robot, received, msg))
        return batch

    def _work(self):
        while self._running:
            batch = self._take_batch()
            if batch:
                try:
                    self._process(batch)
                except Exception as exc:  # never let one batch kill the edge
                    self.get_logger().error(f"batch of {len(batch)} failed: {exc!r}")

    def _decode_one(self, msg: CompressedFeature):
        frame = self.decoder.decode(bytes(msg.data))
        h = frame.header
        if (msg.mode, msg.model_hash, msg.split_index, tuple(msg.shape), msg.codec) != \
                (h.mode, h.model_hash, h.split_index, tuple(h.shape), h.codec):
            raise MetadataMismatch("CompressedFeature fields disagree with the payload header")
        return frame

    def _process(self, batch):
        start = time.perf_counter()
        decoded, failed = [], []
        for robot, received, msg in batch:
            try:
                decoded.append((robot, received, msg, self._decode_one(msg)))
            except PayloadError as exc:
                failed.append((robot, received, msg, exc))
            except Exception as exc:  # a bug must cost this frame only, never the batch
                failed.append((robot, received, msg, InternalDecodeError(f"{type(exc).__name__}: {exc}")))
        frames = [d[3] for d in decoded]
        outputs = self.decoder.run_tails(frames) if decoded else []
        shared = self.decoder.run_shared_models(frames) if decoded else {}
        edge_time = time.perf_counter() - start   # every model's time: the link monitor's edge factor counts it
        finished = wall_time_msg()
        for k, ((robot, received, msg, _), logits) in enumerate(zip(decoded, outputs)):
            robot.result_pub.publish(result_msg(self.decoder.dep, msg.header, logits, msg.image_width,
                                                msg.image_height, self.p["top_k"]))
            for model in self.decoder.shared_models:
                if shared[model.name][k] is not None:
                    robot.shared_pubs[model.name].publish(result_msg(
                        model.deployment, msg.header, shared[model.name][k], msg.image_width,
                        msg.image_height, self.p["top_k"]))
            robot.feedback_pub.publish(self._feedback(robot, msg, received, finished, edge_time,
                                                      len(decoded), ok=True))
        for robot, received, msg, exc in failed:
            self._log_rejection(robot, f"frame {msg.seq}", exc.kind, str(exc))
            robot.feedback_pub.publish(self._feedback(robot, msg, received, finished, edge_time,
                                                      len(decoded), ok=False, error=f"{exc.kind}: {exc}",
                                                      error_kind=ERROR_KINDS[exc.kind]))

    @staticmethod
    def _feedback(robot, msg, received, finished, edge_time, batch_size, ok, error="", error_kind=0):
        return FrameFeedback(header=msg.header, seq=msg.seq, source=robot.name, bytes=len(msg.data),
                             sent_stamp=msg.publish_stamp, received_stamp=wall_time_msg(received),
                             finished_stamp=finished, edge_time=edge_time, batch_size=batch_size,
                             mode=msg.mode[:16], split_index=msg.split_index, ok=ok, error_kind=error_kind,
                             error=error[:500])

    def destroy_node(self):
        if hasattr(self, "_worker"):   # not when the node never finished starting (NodeSetupError)
            with self._cv:
                self._running = False
                self._cv.notify_all()
            self._worker.join(timeout=5)
        return super().destroy_node()


def main(args=None):
    return run_node(DecoderNode, args)
