"""Bad input against running nodes (installed executables as separate processes, real DDS).

Encoder: a stream of malformed sensor_msgs/Image frames of every kind must leave it running, each
kind must be logged once with its reason, and good frames in every common encoding (padded rows,
big-endian 16-bit, YUV 4:2:2, Bayer, VGA) must still produce results, with the class
this process computes from the same message fields. With allow_image_mode=false it refuses to
send pixels when commanded to image mode and answers locally instead.

Decoder (edge): with allow_image_mode=false it rejects image payloads (FrameFeedback 'refused')
while still decoding split payloads; a CompressedFeature beyond max_payload_bytes is refused
before it is deserialized, and a huge link probe is ignored (never echoed), after which the node
still answers probes and decodes frames.
"""
from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
from vision_msgs.msg import Classification

from fsplit_ros.datasets.offline import labelled_imagenet_photos
from fsplit_ros.msg import CompressedFeature, FrameFeedback, LinkProbe, LinkState
from fsplit_ros.nodes.messages import PROBE_QOS, wall_time_msg
from ros_harness import NodeProcess, RosProbe

pytestmark = [pytest.mark.ros]


def _msg(encoding, height, width, step, data, sec, bigendian=False) -> Image:
    msg = Image(encoding=encoding, height=height, width=width, step=step, data=bytes(data),
                is_bigendian=int(bigendian))
    msg.header.frame_id = "camera_optical"
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, 77
    return msg


def _uyvy(rgb: np.ndarray) -> bytes:
    """RGB -> ROS yuv422 (UYVY), BT.601 limited range, chroma averaged over each pixel pair."""
    r, g, b = (rgb[..., i].astype(np.float32) for i in range(3))
    y = 16 + 0.257 * r + 0.504 * g + 0.098 * b
    u = 128 - 0.148 * r - 0.291 * g + 0.439 * b
    v = 128 + 0.439 * r - 0.368 * g - 0.071 * b
    u, v = (c.reshape(c.shape[0], -1, 2).mean(axis=2) for c in (u, v))
    out = np.empty((rgb.shape[0], rgb.shape[1] // 2, 4), np.float32)
    out[..., 0], out[..., 1], out[..., 2], out[..., 3] = u, y[:, 0::2], v, y[:, 1::2]
    return np.clip(np.round(out), 0, 255).astype(np.uint8).tobytes()


def _bayer_rggb(rgb: np.ndarray) -> bytes:
    m = np.empty(rgb.shape[:2], np.uint8)
    m[0::2, 0::2], m[0::2, 1::2] = rgb[0::2, 0::2, 0], rgb[0::2, 1::2, 1]
    m[1::2, 0::2], m[1::2, 1::2] = rgb[1::2, 0::2, 1], rgb[1::2, 1::2, 2]
    return m.tobytes()


def good_frames() -> dict[str, Image]:
    """One real photo in every encoding users meet; stamps 500.. identify the results.

    Frames stay under ~300 KB: larger best-effort samples are often lost inside Fast DDS on a
    default Linux socket buffer (see docs/RELIABILITY.md); that is transport, not this test's topic.
    The unit tests in test/core/test_imaging.py cover every encoding at any size."""
    bgr = cv2.resize(cv2.imread(str(labelled_imagenet_photos()[0][0])), (256, 192), interpolation=cv2.INTER_AREA)
    h, w = bgr.shape[:2]
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    gray = cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY)
    padded = np.zeros((h, w * 3 + 32), np.uint8)
    padded[:, : w * 3] = rgb.reshape(h, -1)
    vga = cv2.resize(gray, (640, 480))
    frames = {
        "rgb8 padded rows": ("rgb8", h, w, w * 3 + 32, padded.tobytes(), False),
        "bgr8": ("bgr8", h, w, w * 3, bgr.tobytes(), False),
        "bgra8": ("bgra8", h, w, w * 4, cv2.cvtColor(bgr, cv2.COLOR_BGR2BGRA).tobytes(), False),
        "mono8": ("mono8", h, w, w, gray.tobytes(), False),
        "mono16 big-endian": ("mono16", h, w, w * 2, (gray.astype(">u2") * 257).tobytes(), True),
        "32FC1": ("32FC1", h, w, w * 4, (gray.astype("<f4") / 50.0).tobytes(), False),
        "yuv422": ("yuv422", h, w, w * 2, _uyvy(rgb), False),
        "bayer_rggb8": ("bayer_rggb8", h, w, w, _bayer_rggb(rgb), False),
        "mono8 VGA": ("mono8", 480, 640, 640, vga.tobytes(), False),
    }
    return {name: _msg(*fields[:5], sec=500 + i, bigendian=fields[5]) for i, (name, fields) in enumerate(frames.items())}


# kind (as the encoder logs it) -> a frame with that defect
BAD_FRAMES = {
    "encoding": _msg("jpeg", 4, 4, 12, bytes(48), 1),
    "empty": _msg("rgb8", 0, 0, 0, b"", 2),
    "too_large": _msg("rgb8", 100_000, 100_000, 300_000, bytes(64), 3),
    "aspect": _msg("rgb8", 2, 8192, 3 * 8192, bytes(2 * 3 * 8192), 4),
    "step": _msg("rgb8", 8, 8, 20, bytes(8 * 24), 5),
    "short_data": _msg("rgb8", 480, 640, 1920, bytes(1920 * 100), 6),
    "odd_width": _msg("yuv422", 4, 5, 10, bytes(40), 7),
}


MAX_PAYLOAD_BYTES = 1024 * 1024          # the decoder's cap in this test (default 16 MiB)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, request):
    """Encoder, decoder and link monitor started together, each in its own process."""
    logs = tmp_path_factory.mktemp("bad_input")
    # The link monitor's profile needs this process's model. Measure it before any node boots: a
    # profile timed while two nodes load their models had local 69 ms and image's edge 251 ms (4x
    # the idle values), so image no longer beat local by the hysteresis, and it stayed cached.
    robot = request.getfixturevalue("robot")
    profile_file = _profile_file(logs, robot.dep)
    common = {"backbone": "efficientnet_lite0", "bottleneck_checkpoint": "''", "num_threads": 1,
              "allow_image_mode": False}
    encoder = NodeProcess.ros_executable("encoder_node", logs, params={**common, "mode": "local"},
                                         remaps={"image": "camera/image_raw"})
    decoder = NodeProcess.ros_executable("decoder_node", logs,
                                         params={**common, "max_payload_bytes": MAX_PAYLOAD_BYTES})
    # a link monitor in its own namespace, talking to a fake edge (this test) that echoes its probes
    monitor = NodeProcess.ros_executable(
        "link_monitor_node", logs, namespace="/lm",
        # min_fidelity 0: this monitor must pick JPEG image mode (the default floor keeps it out)
        params={"profile_file": str(profile_file), "allowed_modes": ["local", "image"],
                "emulated_slowdown": 4.0, "min_dwell_s": 0.5, "min_fidelity": 0.0})
    probe = RosProbe("fsplit_bad_input_probe")
    for kind, topic in [(Classification, "classification"), (CompressedFeature, "compressed_feature"),
                        (FrameFeedback, "frame_feedback")]:
        probe.subscribe(kind, topic)
    probe.subscribe(LinkProbe, "link_probe_echo", PROBE_QOS)
    pubs = {"image": probe.publisher(Image, "camera/image_raw", qos_profile_sensor_data),
            "link_state": probe.publisher(LinkState, "link_state"),
            "feature": probe.publisher(CompressedFeature, "compressed_feature"),
            "probe": probe.publisher(LinkProbe, "link_probe", PROBE_QOS)}
    echo_pub = probe.publisher(LinkProbe, "/lm/link_probe_echo", PROBE_QOS)
    # ... stamped with their arrival, as the decoder's echo is (the monitor reads a train's spacing)
    probe.node.create_subscription(LinkProbe, "/lm/link_probe", lambda p: echo_pub.publish(
        LinkProbe(seq=p.seq, sent_stamp=p.sent_stamp, received_stamp=wall_time_msg())), PROBE_QOS)
    probe.subscribe(LinkState, "/lm/link_state")
    probe.subscribe(DiagnosticArray, "/diagnostics")
    pubs["lm_feedback"] = probe.publisher(FrameFeedback, "/lm/frame_feedback")
    try:
        for proc, pub in ((encoder, pubs["image"]), (decoder, pubs["feature"]), (monitor, pubs["lm_feedback"])):
            deadline = time.monotonic() + 120
            while proc.alive() and time.monotonic() < deadline and not probe.wait_for_subscribers(pub, timeout=0.5):
                pass
            assert pub.get_subscription_count(), f"node never subscribed:\n{proc.log()[-3000:]}"
        yield encoder, decoder, probe, pubs, monitor
    finally:
        probe.close()
        for proc in (encoder, decoder, monitor):          # Ctrl-C to all at once, then wait for each
            if proc.alive():
                os.killpg(proc.proc.pid, signal.SIGINT)
        for proc in (encoder, decoder, monitor):
            proc.stop()


def _profile_file(folder, dep) -> Path:
    from fsplit_ros.profiling.profiler import sample_frames
    from fsplit_ros.profiling import cached_profile
    path = folder / "profile.json"
    cached_profile(dep, sample_frames()).save(path)
    return path


@pytest.fixture(scope="module")
def encoder(nodes):
    enc, _, probe, pubs, _ = nodes
    return enc, probe, pubs["image"], pubs["link_state"]


@pytest.fixture(scope="module")
def robot():
    """This process's own copy of the robot side (same model as the nodes)."""
    from fsplit_ros.runtime import Deployment, OnboardEncoder
    return OnboardEncoder(Deployment.load("efficientnet_lite0", bottleneck=None))


@pytest.fixture(scope="module")
def expected_classes(robot):
    """What the node must answer for each good frame: this process runs the same conversion and
    model on the same message fields."""
    from fsplit_ros.imaging import to_rgb8
    enc = robot
    out = {}
    for name, m in good_frames().items():
        rgb = to_rgb8(m.encoding, m.height, m.width, m.step, m.data, bool(m.is_bigendian))
        out[m.header.stamp.sec] = str(int(enc.predict_local(enc.prepare(rgb)).argmax()))
    return out


def _result_for(probe, sec: int):
    return next((m for m in probe.messages("classification") if m.header.stamp.sec == sec), None)


def _send_until(pub, msg, done, timeout: float, every: float = 0.5) -> bool:
    """Publish (best effort, like a camera) until done() holds; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pub.publish(msg)
        step_end = time.monotonic() + every
        while time.monotonic() < step_end:
            if done():
                return True
            time.sleep(0.02)
    return done()


def test_bad_frames_are_dropped_with_one_line_each_and_good_frames_still_work(encoder, expected_classes):
    proc, probe, image_pub, _ = encoder
    frames = good_frames()
    warm = frames["bgr8"]
    assert _send_until(image_pub, warm, lambda: _result_for(probe, warm.header.stamp.sec), 90), \
        f"no result for a good frame before the bad ones:\n{proc.log()[-3000:]}"

    for kind, bad in BAD_FRAMES.items():
        line = f"dropping frame ({kind})"
        assert _send_until(image_pub, bad, lambda: line in proc.log(), 15), \
            f"no '{line}' in the encoder log:\n{proc.log()[-3000:]}"
        assert proc.alive(), f"encoder died on a '{kind}' frame:\n{proc.log()[-3000:]}"
    # a burst of all of them at once, several times: still alive, nothing more logged (throttled)
    for _ in range(5):
        for bad in BAD_FRAMES.values():
            image_pub.publish(bad)
            time.sleep(0.01)

    missing = []
    for name, msg in frames.items():
        if not _send_until(image_pub, msg, lambda: _result_for(probe, msg.header.stamp.sec), 20, every=1.0):
            missing.append(name)
    log = proc.log()
    assert proc.alive(), f"encoder died:\n{log[-3000:]}"
    assert not missing, f"no results for good frames {missing} after the bad ones:\n{log[-3000:]}"

    bad_secs = {m.header.stamp.sec for m in BAD_FRAMES.values()}
    for m in probe.messages("classification"):
        assert m.header.stamp.sec not in bad_secs, f"a result for a bad frame: {m.header}"
    for name, msg in frames.items():
        result = _result_for(probe, msg.header.stamp.sec)
        assert result.header.frame_id == "camera_optical" and result.header.stamp.nanosec == 77
        assert result.results[0].class_id == expected_classes[msg.header.stamp.sec], \
            f"{name}: the node answered class {result.results[0].class_id}, converting the same fields " \
            f"here gives {expected_classes[msg.header.stamp.sec]}"
    for kind in BAD_FRAMES:
        lines = [line for line in log.splitlines() if f"dropping frame ({kind})" in line]
        assert len(lines) == 1, f"expected one log line for '{kind}', got {len(lines)}:\n" + "\n".join(lines)
        assert "[ERROR]" in lines[0] or "ERROR" in lines[0], lines[0]
    assert "Traceback" not in log, log[-3000:]


def test_encoder_with_image_mode_forbidden_answers_locally(encoder):
    """allow_image_mode=false on the robot: a link monitor's command to send pixels is refused,
    the encoder runs the whole model onboard instead, and no payload leaves the robot."""
    proc, probe, image_pub, state_pub = encoder
    frame = good_frames()["bgr8"]
    frame.header.stamp.sec = 900
    sent_before = len(probe.messages("compressed_feature"))

    def answered():
        state_pub.publish(LinkState(mode="image", reason="test: offload pixels"))
        return _result_for(probe, 900) is not None
    assert _send_until(image_pub, frame, answered, 30), f"no local result:\n{proc.log()[-3000:]}"
    time.sleep(0.5)   # a payload, had one been sent, would have arrived by now (loopback)
    assert len(probe.messages("compressed_feature")) == sent_before, "pixels left the robot"
    assert "image mode is forbidden (allow_image_mode=false): running local" in proc.log()


# --- the decoder (edge) ---------------------------------------------------------------------

def _feature(robot, mode: str, seq: int, sec: int) -> CompressedFeature:
    """What encoder_node publishes for one frame (same fields, same payload)."""
    rgb = cv2.cvtColor(cv2.imread(str(labelled_imagenet_photos()[2][0])), cv2.COLOR_BGR2RGB)
    header, payload = robot.encode_frame(robot.prepare(rgb), mode)
    msg = CompressedFeature(seq=seq, mode=mode, model_name="efficientnet_lite0", model_hash=header.model_hash,
                            split_index=header.split_index, shape=list(header.shape), dtype=header.dtype,
                            codec=header.codec, quality=header.quality, image_width=header.image_width,
                            image_height=header.image_height, data=payload)
    msg.header.frame_id = "camera_optical"
    msg.header.stamp.sec = sec
    return msg


def _feedback(probe, seq: int):
    return next((f for f in probe.messages("frame_feedback") if f.seq == seq and f.header.stamp.sec), None)


def test_decoder_refuses_pixels_when_image_mode_is_forbidden(nodes, robot):
    _, decoder, probe, pubs, _ = nodes
    image, split = _feature(robot, "image", 7001, 701), _feature(robot, "split", 7002, 702)
    assert _send_until(pubs["feature"], image, lambda: _feedback(probe, 7001), 30), decoder.log()[-3000:]
    fb = _feedback(probe, 7001)
    assert not fb.ok and fb.error.startswith("refused: image payloads are refused by this edge "
                                             "(allow_image_mode=false)"), fb.error
    assert fb.error_kind == FrameFeedback.ERROR_REFUSED and fb.mode == "image"
    assert _result_for(probe, 701) is None, "an image payload was classified"
    # the same edge still serves split payloads
    assert _send_until(pubs["feature"], split, lambda: _result_for(probe, 702), 30), decoder.log()[-3000:]
    assert _feedback(probe, 7002).ok
    assert re.search(r"dropped frame 7001 from .*: refused: image payloads are refused", decoder.log())


def test_oversized_messages_and_huge_probes_cannot_hurt_the_decoder(nodes, robot):
    _, decoder, probe, pubs, _ = nodes
    big = _feature(robot, "split", 7101, 711)
    big.data = bytes(4 * MAX_PAYLOAD_BYTES)            # 4 MiB > max_payload_bytes
    oversized = lambda: next((f for f in probe.messages("frame_feedback")       # noqa: E731
                              if f.error.startswith("oversized: message of")), None)
    assert _send_until(pubs["feature"], big, oversized, 30), decoder.log()[-3000:]
    fb = oversized()
    assert not fb.ok and fb.bytes >= 4 * MAX_PAYLOAD_BYTES and f"max_payload_bytes={MAX_PAYLOAD_BYTES}" in fb.error
    assert fb.error_kind == FrameFeedback.ERROR_OVERSIZED
    assert _result_for(probe, 711) is None

    # 320 KiB: over the decoder's 256 KiB cap (a monitor pads <= 64 KiB), yet small enough that a
    # best-effort sample of ~230 UDP fragments gets through a loaded loopback (2 MiB rarely did)
    huge = LinkProbe(seq=999_001, padding=bytes(320 * 1024))
    assert _send_until(pubs["probe"], huge, lambda: "ignoring a" in decoder.log(), 30), decoder.log()[-3000:]
    small = LinkProbe(seq=999_002, padding=bytes(1024))
    echoed = lambda: any(p.seq == 999_002 for p in probe.messages("link_probe_echo"))  # noqa: E731
    assert _send_until(pubs["probe"], small, echoed, 30), "a normal probe is no longer answered"
    echoes = probe.messages("link_probe_echo")
    assert not any(p.seq == 999_001 for p in echoes), "the huge probe was echoed"
    assert all(len(p.padding) == 0 for p in echoes), "echoes must not carry the padding back"

    ok = _feature(robot, "split", 7102, 712)
    assert _send_until(pubs["feature"], ok, lambda: _result_for(probe, 712), 30), decoder.log()[-3000:]
    assert decoder.alive() and "Traceback" not in decoder.log(), decoder.log()[-3000:]


# --- the link monitor, facing a hostile or misconfigured edge -------------------------------

def test_link_monitor_stops_sending_what_the_edge_refuses_and_survives_forged_feedback(nodes):
    """The fake edge (this test) echoes probes, so the link is up and `image` (the only offload
    mode allowed here) wins on cost. Then it answers 'refused: image payloads ...' as a decoder
    with allow_image_mode=false does: the monitor must leave image with that reason, report it in
    /diagnostics and not pick image again. Forged feedback (megabyte error strings, stamps from the
    future) must neither crash it nor flood its log."""
    _, _, probe, pubs, monitor = nodes
    states = lambda since=0: [m for t, m in probe.received["/lm/link_state"][since:]]  # noqa: E731
    assert _wait_for(lambda: any(s.mode == "image" for s in states()), 60), \
        f"the monitor never chose image: {[s.reason for s in states()][-5:]}\n{monitor.log()[-2000:]}"

    # The robot acts on the typed kind and the payload's mode, not on the prose: the same sentence
    # with another kind blocks nothing.
    mark = len(probe.received["/lm/link_state"])
    prose_only = FrameFeedback(ok=False, bytes=30_000, mode="image", error_kind=FrameFeedback.ERROR_CORRUPT,
                               error="refused: image payloads are refused by this edge (allow_image_mode=false)")
    for _ in range(3):
        pubs["lm_feedback"].publish(prose_only)
    assert _wait_for(lambda: len(states(mark)) >= 15, 10), "the monitor stopped publishing"
    assert not any(s.mode == "local" and "refused" in s.reason for s in states(mark)), \
        "a corrupt-kind feedback blocked image because of its words"

    mark = len(probe.received["/lm/link_state"])
    refused = FrameFeedback(ok=False, bytes=30_000, mode="image", error_kind=FrameFeedback.ERROR_REFUSED,
                            error="refused: image payloads are refused by this edge (allow_image_mode=false)")
    pubs["lm_feedback"].publish(refused)
    left = _wait_for(lambda: next((s for s in states(mark) if s.mode == "local"), None), 10)
    assert left and "refused" in left.reason and "allow_image_mode=false" in left.reason, \
        [(s.mode, s.reason) for s in states(mark)][:5]

    def diagnosed():
        for _, arr in probe.received["/diagnostics"]:
            for st in arr.status:
                values = {kv.key: kv.value for kv in st.values}
                if "/lm/" in st.name and values.get("blocked_modes") == "image":
                    return st, values
        return None
    diag = _wait_for(diagnosed, 10)
    assert diag, "no /diagnostics status with image blocked"
    assert "refused=1" in diag[1]["edge_rejections_by_kind"], diag[1]
    assert "corrupt=3" in diag[1]["edge_rejections_by_kind"], diag[1]

    # forged feedback: megabyte error strings, a 'decoded' frame published in the robot's future
    huge = FrameFeedback(ok=False, error_kind=FrameFeedback.ERROR_CORRUPT, error="corrupt: " + "x" * 1_000_000)
    unknown_kind = FrameFeedback(ok=False, error_kind=200, mode="image", error="refused: image payloads")
    future = FrameFeedback(ok=True, bytes=10**9)
    future.sent_stamp.sec = int(time.time()) + 3600
    for _ in range(20):
        pubs["lm_feedback"].publish(huge)
        pubs["lm_feedback"].publish(future)
        pubs["lm_feedback"].publish(unknown_kind)
    mark = len(probe.received["/lm/link_state"])
    assert _wait_for(lambda: len(states(mark)) >= 20, 10), "the monitor stopped publishing"
    assert monitor.alive(), monitor.log()[-2000:]
    assert all(s.mode != "image" for s in states(mark)), "image chosen again while the edge refuses it"
    assert all(s.rate_bps < 1e12 and s.rate_bps == s.rate_bps for s in states(mark)), "forged feedback reached the estimate"
    assert max(len(line) for line in monitor.log().splitlines()) < 2000, "an edge-controlled string was logged in full"


def _wait_for(predicate, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return None


def test_feedback_error_kind_constants_are_the_payload_error_table():
    """One table of rejection kinds (payload/errors.ERROR_KINDS); the .msg constants spell it."""
    from fsplit_ros.payload.errors import ERROR_KINDS
    constants = {name[len("ERROR_"):].lower(): getattr(FrameFeedback, name)
                 for name in dir(FrameFeedback) if name.startswith("ERROR_")}
    assert constants == ERROR_KINDS
