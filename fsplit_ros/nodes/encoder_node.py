"""Onboard encoder node: camera Image -> CompressedFeature (split / bottleneck / image), or the
whole model onboard in `local` mode, publishing results on the same topic the edge uses.

Topics (relative, so a namespace per robot works):
  sub image (sensor_msgs/Image, sensor-data QoS, depth 1: the newest frame wins)
  sub link_state (fsplit_ros/LinkState): mode commands from the link monitor
  sub frame_feedback (fsplit_ros/FrameFeedback): the edge's answers; at most max_in_flight payloads
      go unanswered (newer frames are skipped meanwhile, so a slow link never builds a queue)
  pub compressed_feature (fsplit_ros/CompressedFeature)
  pub onboard_timing (fsplit_ros/OnboardTiming): each frame's measured onboard compute, for the link
      monitor's cost model (the profile's times do not know the robot's current load)
  pub classification (vision_msgs/Classification) or detections (vision_msgs/Detection2DArray, for
      detectors), in local mode
"""
from __future__ import annotations

import time

import torch
from rclpy.node import Node
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image

from fsplit_ros.imaging import ImageEncodingError, to_rgb8
from fsplit_ros.msg import CompressedFeature, FrameFeedback, LinkState, OnboardTiming
from fsplit_ros.nodes.messages import result_msg, result_type, wall_time_msg
from fsplit_ros.nodes.params import Param, check_choices, declare_parameters
from fsplit_ros.nodes.throttle import PerKindThrottle
from fsplit_ros.codecs import TENSOR_CODECS, IMAGE_FORMATS
from fsplit_ros.runtime import IMAGE_RESOLUTIONS, MODES, Deployment, OnboardEncoder
from fsplit_ros.nodes.runner import run_node
from fsplit_ros.modes import LOCAL, MODES as MODE_REGISTRY, PIXEL_MODES
from fsplit_ros.policy import InFlightWindow, candidate_name

PARAMETERS = [
    Param("backbone", "efficientnet_lite0", "Model name (fsplit name or timm name); must match the edge.",
          read_only=True),
    Param("weights", "", "Local backbone checkpoint; empty = the backbone's offline default.", read_only=True),
    Param("bottleneck_checkpoint", "default", "FrankenSplit checkpoint; 'default' = the one shipped for "
          "the backbone, empty = none (bottleneck mode unavailable).", read_only=True),
    Param("mode", LOCAL, "Current mode (the link monitor overrides it when followed).", choices=MODES),
    Param("follow_link_monitor", True, "Take the mode (and split point) from the link monitor's link_state."),
    Param("split_index", 0, "Split point for split mode; 0 = first compressive bottleneck.", low=0, high=512),
    Param("tensor_codec", "uint8-channel+zlib", "Split-mode tensor codec.", choices=TENSOR_CODECS),
    Param("image_codec", "jpeg", "Image-mode codec.", choices=tuple(IMAGE_FORMATS)),
    Param("image_resolution", "model", "Image mode sends the model-input crop ('model') or the whole "
          "camera frame ('native', like image_transport's compressed JPEG).", choices=IMAGE_RESOLUTIONS),
    Param("image_quality", 95, "JPEG/WebP quality (PNG: zlib level 0-9).", low=0, high=100),
    Param("allow_image_mode", True, "False: pixels never leave the robot (image mode refused)."),
    Param("top_k", 5, "Classes per result in local mode.", low=1, high=1000),
    Param("num_threads", 0, "torch CPU threads; 0 = torch default.", read_only=True, low=0, high=256),
    Param("max_in_flight", 2, "At most this many payloads unanswered by the edge; newer frames are skipped "
          "meanwhile so a slow link never queues (policy/flow_control.py). 0 = no limit.", low=0, high=100),
    Param("max_queue_delay_s", 0.25, "A further payload goes out while others are unanswered only if all of "
          "them clear the link within this long at the link monitor's measured rate.", low=0.0, high=10.0),
    Param("in_flight_timeout_s", 2.0, "An unanswered payload frees its slot after this long plus its expected "
          "transfer time.", low=0.05, high=60.0),
    Param("emulated_slowdown", 1.0, "Emulate a weaker robot CPU: stretch onboard compute time by this "
          "factor (1 = real speed). Give the link monitor the same value.", low=1.0, high=100.0),
]
BAD_FRAME_LOG_PERIOD_S = 10.0   # one log line per kind of bad frame per period
RUNTIME_CHANGEABLE = {"emulated_slowdown", "max_in_flight", "max_queue_delay_s", "in_flight_timeout_s", "image_resolution",
                      "mode", "follow_link_monitor", "split_index",
                      "tensor_codec", "image_codec", "image_quality", "allow_image_mode", "top_k"}


class EncoderNode(Node):
    def __init__(self):
        super().__init__("fsplit_encoder")
        self.p = declare_parameters(self, PARAMETERS)
        if self.p["num_threads"]:
            torch.set_num_threads(self.p["num_threads"])
        deployment = Deployment.load(self.p["backbone"], self.p["weights"] or None,
                                     self.p["bottleneck_checkpoint"] or None)
        self.deployment = deployment
        self._build_encoder()
        self.seq = 0
        self.mode = self._allowed(self.p["mode"])
        self.commanded_split = None
        self.drops = PerKindThrottle(BAD_FRAME_LOG_PERIOD_S)      # dropped frames per kind
        self.in_flight = InFlightWindow(self.p["max_in_flight"], self.p["in_flight_timeout_s"],
                                        self.p["max_queue_delay_s"])
        self.link_rate_bps = 0.0                 # the link monitor's measured rate (0 = unknown)
        self.last_payload_bytes: dict[str, int] = {}   # mode -> size of its last payload
        self.add_on_set_parameters_callback(self._on_set_parameters)

        # Depth 1: a payload the link could not deliver is replaced by the newest rather than repaired
        # behind it (flow control keeps a second payload off the link unless both clear it quickly).
        reliable_newest = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE,
                                     history=HistoryPolicy.KEEP_LAST)
        self.feature_pub = self.create_publisher(CompressedFeature, "compressed_feature", reliable_newest)
        self.result_pub = self.create_publisher(result_type(deployment.task), deployment.task.result_topic, 10)
        self.timing_pub = self.create_publisher(OnboardTiming, "onboard_timing", 10)
        image_qos = QoSProfile(depth=1, reliability=qos_profile_sensor_data.reliability,
                               history=HistoryPolicy.KEEP_LAST, durability=qos_profile_sensor_data.durability)
        # rclpy runs the ready callbacks of one wait in creation order: with the camera first, a robot
        # slower than its camera checks a frame before reading the edge's answer to the previous
        # payload, and flow control skips it. That keeps frames from waiting for the busy robot
        # (pinned split at 0.5 Mbit/s: 127 ms p50 at 6.7 fps; feedback first: 194 ms at 7.6 fps,
        # issue 17), so it stays until an explicit stale-frame policy replaces this accident.
        self.create_subscription(Image, "image", self.on_image, image_qos)
        self.create_subscription(LinkState, "link_state", self.on_link_state, 10)
        self.create_subscription(FrameFeedback, "frame_feedback", self.on_feedback, 50)
        self.get_logger().info(
            f"encoder ready: {deployment.name} (weights {deployment.backbone.weights_hash[:12]}), modes "
            f"{self.encoder.available_modes()}, starting in '{self.mode}'")

    def _build_encoder(self):
        self.encoder = OnboardEncoder(self.deployment, self.p["split_index"] or None, self.p["tensor_codec"],
                                      self.p["image_codec"], self.p["image_quality"], self.p["image_resolution"])

    def _allowed(self, mode: str) -> str:
        """The mode to run: falls back to local where `mode` is unavailable or forbidden."""
        if mode in PIXEL_MODES and not self.p["allow_image_mode"]:
            self.get_logger().warning(f"{mode} mode is forbidden (allow_image_mode=false): running local",
                                      throttle_duration_sec=10.0)
            return LOCAL
        if mode not in self.encoder.available_modes():
            self.get_logger().warning(f"mode '{mode}' is unavailable here (no bottleneck checkpoint "
                                      f"loaded?): running local", throttle_duration_sec=10.0)
            return LOCAL
        return mode

    def _on_set_parameters(self, params):
        result = check_choices(PARAMETERS, params)
        if not result.successful:
            return result
        for param in params:
            if param.name in RUNTIME_CHANGEABLE:
                self.p[param.name] = param.value
        try:
            self._build_encoder()
        except ValueError as exc:
            result.successful, result.reason = False, str(exc)
            return result
        self.mode = self._allowed(self.p["mode"])
        self.in_flight.max_frames, self.in_flight.timeout_s = self.p["max_in_flight"], self.p["in_flight_timeout_s"]
        self.in_flight.queue_budget_s = self.p["max_queue_delay_s"]
        return result

    def on_feedback(self, fb: FrameFeedback):
        self.in_flight.answered(fb.seq)

    def on_link_state(self, msg: LinkState):
        self.link_rate_bps = msg.rate_bps
        if self.p["follow_link_monitor"] and msg.mode:
            new = self._allowed(msg.mode)
            valid_splits = self.deployment.compressive_split_indices()
            self.commanded_split = msg.split_index if msg.split_index in valid_splits else None
            if new != self.mode:
                self.get_logger().info(f"mode {self.mode} -> {new} ({msg.reason})")
            self.mode = new

    def _emulate_slow_robot(self, start: float):
        """Sleep so the onboard work took `emulated_slowdown` times as long as it did here."""
        if self.p["emulated_slowdown"] > 1.0:
            time.sleep((self.p["emulated_slowdown"] - 1.0) * (time.perf_counter() - start))

    def _publish_timing(self, header, candidate: str, prepared: float):
        """The model + codec time of this frame, timed as the profile times it (after the shared
        preprocessing), on the emulated robot's clock."""
        compute = (time.perf_counter() - prepared) * self.p["emulated_slowdown"]
        self.timing_pub.publish(OnboardTiming(header=header, candidate=candidate, compute_time=compute))

    def _drop(self, kind: str, message: str):
        """Drop this frame; one log line per kind of bad input and period (see PerKindThrottle)."""
        suffix = self.drops.note(kind)
        if suffix is not None:
            self.get_logger().error(f"dropping frame ({kind}): {message}{suffix}")

    def on_image(self, msg: Image):
        start = time.perf_counter()
        try:
            rgb = to_rgb8(msg.encoding, msg.height, msg.width, msg.step, msg.data, bool(msg.is_bigendian))
        except ImageEncodingError as exc:
            self._drop(exc.kind, str(exc))
            return
        try:
            self._process(msg, rgb, start)
        except Exception as exc:  # noqa: BLE001 - one frame must never take the robot's node down
            self._drop("internal", f"{type(exc).__name__}: {exc}")

    def _process(self, msg: Image, rgb, start: float):
        mode = self.mode
        offloads = MODE_REGISTRY[mode].offloads
        if offloads and not self.in_flight.may_send(time.time(), self.last_payload_bytes.get(mode, 0),
                                                            self.link_rate_bps):
            self.get_logger().info(
                f"link slower than the camera: skipping frames while payloads are unanswered "
                f"({self.in_flight.held_back} skipped so far)", throttle_duration_sec=5.0)
            return
        frame = self.encoder.prepare(rgb)
        prepared = time.perf_counter()
        if not offloads:
            logits = self.encoder.predict_local(frame)
            self._publish_timing(msg.header, LOCAL, prepared)
            self._emulate_slow_robot(start)
            self.result_pub.publish(result_msg(self.deployment, msg.header, logits, rgb.shape[1], rgb.shape[0],
                                               self.p["top_k"]))
            return
        split = self.commanded_split if MODE_REGISTRY[mode].per_split_point else None
        header, payload = self.encoder.encode_frame(frame, mode, split)
        self._publish_timing(msg.header, candidate_name(mode, header.split_index), prepared)
        self.seq += 1
        out = CompressedFeature(
            header=msg.header, seq=self.seq, mode=mode, model_name=self.deployment.name,
            model_hash=header.model_hash, split_index=header.split_index, shape=list(header.shape),
            dtype=header.dtype, codec=header.codec, quality=header.quality,
            image_width=header.image_width, image_height=header.image_height, data=payload)
        self._emulate_slow_robot(start)
        out.encode_time = time.perf_counter() - start
        out.publish_stamp = wall_time_msg()
        self.in_flight.sent(self.seq, len(payload), time.time())
        self.last_payload_bytes[mode] = len(payload)
        self.feature_pub.publish(out)


def main(args=None):
    return run_node(EncoderNode, args)
