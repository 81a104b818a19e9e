"""Test-side ROS 2 harness: an in-process rclpy node (spun in a thread) to publish inputs and
collect outputs, and helpers that start the package's installed executables as separate processes,
exactly as `ros2 run fsplit_ros <exe> --ros-args ...` would."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from pathlib import Path


def note_timing(test: str, **values) -> None:
    """Append a measured wall-clock figure to $FSPLIT_TEST_TIMINGS (JSON lines) when set, so that a
    series of suite runs shows the worst value each deadline has to cover (issue 17)."""
    path = os.environ.get("FSPLIT_TEST_TIMINGS")
    if path:
        import json
        with open(path, "a") as f:
            f.write(json.dumps({"test": test, "t": time.time(), **values}) + "\n")

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, HistoryPolicy

REPO = Path(__file__).resolve().parents[2]
RELIABLE = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)


def executable(name: str) -> str:
    """Path of an installed fsplit_ros executable (what `ros2 run fsplit_ros NAME` runs)."""
    path = Path(os.environ["FSPLIT_INSTALL"]) / "fsplit_ros" / "lib" / "fsplit_ros" / name
    if not path.exists():
        raise FileNotFoundError(f"{path} is not installed: run tools/setup_env.sh")
    return str(path)


class NodeProcess:
    """A node in its own OS process; stopped with SIGINT like Ctrl-C, its log kept for asserts."""

    def __init__(self, argv: list[str], log_path: Path, env: dict | None = None):
        self.log_path = log_path
        self._log = open(log_path, "w")
        self.proc = subprocess.Popen(
            argv, stdout=self._log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})},
            start_new_session=True)

    @classmethod
    def ros_executable(cls, name: str, log_dir: Path, params: dict | None = None,
                       params_file: str | None = None, remaps: dict | None = None,
                       namespace: str | None = None, node_name: str | None = None,
                       env: dict | None = None, tag: str | None = None) -> "NodeProcess":
        argv = [executable(name), "--ros-args"]
        if params_file:
            argv += ["--params-file", params_file]
        for key, value in (params or {}).items():
            argv += ["-p", f"{key}:={_param_literal(value)}"]
        for src, dst in (remaps or {}).items():
            argv += ["-r", f"{src}:={dst}"]
        if namespace:
            argv += ["-r", f"__ns:={namespace}"]
        if node_name:
            argv += ["-r", f"__node:={node_name}"]
        return cls(argv, log_dir / f"{tag or name}.log", env)

    @classmethod
    def python_script(cls, script: Path, args: list[str], log_dir: Path, env: dict | None = None):
        return cls([sys.executable, str(script), *args], log_dir / f"{script.stem}.log", env)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._log.close()
        return self.proc.returncode


def wait_for_subscribers(publisher, count: int = 1, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if publisher.get_subscription_count() >= count:
            return True
        time.sleep(0.05)
    return False


def _param_literal(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_param_literal(v) if not isinstance(v, str) else f"'{v}'" for v in value) + "]"
    return str(value)


class RosProbe:
    """In-process probe node with its own rclpy context, spun in a background thread."""

    def __init__(self, name: str = "fsplit_test_probe"):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node(name, context=self.context)
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.received: dict[str, list] = defaultdict(list)
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self):
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # context shut down mid-spin
                break

    def publisher(self, msg_type, topic: str, qos=RELIABLE):
        return self.node.create_publisher(msg_type, topic, qos)

    def subscribe(self, msg_type, topic: str, qos=RELIABLE):
        def on_msg(msg, topic=topic):
            with self._lock:
                self.received[topic].append((time.monotonic(), msg))
        self.node.create_subscription(msg_type, topic, on_msg, qos)

    def messages(self, topic: str) -> list:
        with self._lock:
            return [m for _, m in self.received[topic]]

    def wait_for(self, topic: str, count: int, timeout: float) -> list:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            msgs = self.messages(topic)
            if len(msgs) >= count:
                return msgs
            time.sleep(0.02)
        return self.messages(topic)

    def wait_for_subscribers(self, publisher, count: int = 1, timeout: float = 20.0) -> bool:
        return wait_for_subscribers(publisher, count, timeout)

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=2)


@contextmanager
def encoder_decoder_graph(log_dir: Path, params: dict, results: tuple[str, type], decoder_params: dict | None = None):
    """The package's encoder and decoder as separate processes (same `params`, plus `decoder_params`
    for the decoder; the encoder starts in split mode and reads camera/image_raw), and a probe that
    publishes camera frames and link_state commands and records `results` (topic, type), payloads,
    edge feedback and onboard timings. Yields (probe, image_pub, state_pub, encoder, decoder)."""
    from sensor_msgs.msg import Image
    from fsplit_ros.msg import CompressedFeature, FrameFeedback, LinkState, OnboardTiming
    decoder = NodeProcess.ros_executable("decoder_node", log_dir, params={**params, **(decoder_params or {})})
    encoder = NodeProcess.ros_executable("encoder_node", log_dir, params={**params, "mode": "split"},
                                         remaps={"image": "camera/image_raw"})
    probe = RosProbe()
    for topic, kind in [results, ("frame_feedback", FrameFeedback), ("compressed_feature", CompressedFeature),
                        ("onboard_timing", OnboardTiming)]:
        probe.subscribe(kind, topic)
    try:
        yield (probe, probe.publisher(Image, "camera/image_raw"), probe.publisher(LinkState, "link_state"),
               encoder, decoder)
    finally:
        probe.close()
        for proc in (encoder, decoder):
            proc.stop()


def bgr_image_msg(bgr, sec: int, nanosec: int, frame_id: str = "camera_optical"):
    """A bgr8 sensor_msgs/Image of an OpenCV frame, stamped sec.nanosec."""
    from sensor_msgs.msg import Image
    msg = Image(height=bgr.shape[0], width=bgr.shape[1], encoding="bgr8", step=bgr.shape[1] * 3,
                data=bgr.tobytes())
    msg.header.frame_id = frame_id
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    return msg


def command_mode(state_pub, mode: str, settle_s: float = 0.5):
    """Command the encoder's mode the way the link monitor does, and give it time to take it before
    frames follow: link_state and camera frames are different topics, so a frame published right
    after the command may be encoded in the previous mode."""
    from fsplit_ros.msg import LinkState
    assert wait_for_subscribers(state_pub, timeout=60), "the encoder never subscribed to link_state"
    state_pub.publish(LinkState(mode=mode, reason="test"))
    time.sleep(settle_s)


def local_top1_of(backbone: str):
    """top1(photo path): the unchanged model's class, run in this process."""
    import cv2
    from fsplit_ros.runtime import Deployment, OnboardEncoder
    encoder = OnboardEncoder(Deployment.load(backbone, bottleneck=None))

    def top1(path):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        return int(encoder.predict_local(encoder.prepare(rgb)).argmax())
    return top1


def photo_msg(path, sec):
    import cv2
    return bgr_image_msg(cv2.imread(str(path)), sec, 500)


def results_in_mode(graph, mode: str, base: int, photos) -> dict:
    """Publish the photos (stamped base, base+1, ...) with `mode` commanded until each has a result;
    returns {stamp sec: Classification}."""
    probe, image_pub, state_pub, encoder, decoder = graph
    assert probe.wait_for_subscribers(image_pub, timeout=60), f"encoder not up:\n{encoder.log()}"
    command_mode(state_pub, mode)
    from fsplit_ros.msg import LinkState
    # Command the mode the way the link monitor does, until the encoder obeys.
    seen = {}
    deadline = time.monotonic() + 90
    i = 0
    while len(seen) < len(photos) and time.monotonic() < deadline:
        state_pub.publish(LinkState(mode=mode, reason="test"))
        path, label = photos[i % len(photos)]
        image_pub.publish(photo_msg(path, base + i % len(photos)))
        i += 1
        time.sleep(0.3)
        for msg in probe.messages("classification"):
            if base <= msg.header.stamp.sec < base + len(photos):
                seen[msg.header.stamp.sec] = msg
    assert len(seen) == len(photos), (f"{mode}: results for {sorted(seen)}\nencoder:\n{encoder.log()}"
                                      f"\ndecoder:\n{decoder.log()}")
    return seen
