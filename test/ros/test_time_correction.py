"""The link monitor prices current load on both sides in: a real link monitor process over DDS, a
hand-written profile, OnboardTiming messages as the encoder publishes them and FrameFeedback as the
edge does (the nodes' side is checked in test_graph.py). Its LinkState predictions must scale
onboard and edge times by the measured / profiled ratios, ignore timings it cannot use, and drop
the correction when told to."""
import json
import math
import time

import pytest
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
from rcl_interfaces.srv import SetParameters

from fsplit_ros.msg import FrameFeedback, LinkState, OnboardTiming
from fsplit_ros.policy.cost_model import camera_wait_s
from fsplit_ros.nodes.messages import wall_time_msg
from fsplit_ros.policy.link_profile import FORMAT
from ros_harness import NodeProcess, RosProbe

SLOWDOWN = 2.0
PROFILE = {"format": FORMAT, "backbone": "efficientnet_lite0", "candidates": {
    "local": {"mode": "local", "split_index": None, "bytes": 0, "onboard_ms": 50.0, "offboard_ms": {"1": 0.0}},
    "image": {"mode": "image", "split_index": 0, "bytes": 20000, "onboard_ms": 5.0, "offboard_ms": {"1": 30.0}},
    "split@13": {"mode": "split", "split_index": 13, "bytes": 5000, "onboard_ms": 20.0, "offboard_ms": {"1": 10.0}},
}}


@pytest.fixture(scope="module")
def monitor(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("time_correction")
    (tmp / "profile.json").write_text(json.dumps(PROFILE))
    proc = NodeProcess.ros_executable(
        "link_monitor_node", tmp, namespace="/oc",
        params={"profile_file": str(tmp / "profile.json"), "emulated_slowdown": SLOWDOWN, "camera_rate": 5.0})
    probe = RosProbe("fsplit_time_correction_probe")
    probe.subscribe(LinkState, "/oc/link_state")
    probe.subscribe(DiagnosticArray, "/diagnostics")
    timing_pub = probe.publisher(OnboardTiming, "/oc/onboard_timing")
    feedback_pub = probe.publisher(FrameFeedback, "/oc/frame_feedback")
    try:
        deadline = time.monotonic() + 60
        while proc.alive() and time.monotonic() < deadline and not probe.wait_for_subscribers(timing_pub, timeout=0.5):
            pass
        assert timing_pub.get_subscription_count(), f"link monitor never subscribed:\n{proc.log()[-3000:]}"
        yield proc, probe, timing_pub, feedback_pub
    finally:
        probe.close()
        proc.stop()


def _predicted(state: LinkState) -> dict[str, float]:
    return dict(zip(state.candidate_modes, state.predicted_latency))


def _newest_state_after(probe, since: float, timeout: float = 10.0) -> LinkState | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with probe._lock:
            fresh = [m for t, m in probe.received["/oc/link_state"] if t > since]
        if fresh:
            return fresh[-1]
        time.sleep(0.05)
    return None


def _wait_for_local(probe, expected_s: float, timeout: float = 10.0) -> LinkState | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = _newest_state_after(probe, time.monotonic() - 0.3)
        if state is not None and math.isclose(_predicted(state)["local"], expected_s, rel_tol=1e-6):
            return state
        time.sleep(0.05)
    return None


def _set_parameter(probe, name: str, value: bool):
    client = probe.node.create_client(SetParameters, "/oc/fsplit_link_monitor/set_parameters")
    assert client.wait_for_service(timeout_sec=30), "link monitor parameter service missing"
    value_msg = ParameterValue(type=ParameterType.PARAMETER_BOOL, bool_value=value)
    future = client.call_async(SetParameters.Request(parameters=[Parameter(name=name, value=value_msg)]))
    deadline = time.monotonic() + 30
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert future.done() and all(r.successful for r in future.result().results)


def _onboard_factor_in_diagnostics(probe, since: float):
    with probe._lock:
        arrays = [m for t, m in probe.received["/diagnostics"] if t > since]
    for array in arrays:
        for status in array.status:
            if status.name.startswith("/oc/"):
                return {kv.key: kv.value for kv in status.values}.get("onboard_factor")
    return None


def test_measured_onboard_and_edge_times_scale_the_predictions(monitor):
    proc, probe, timing_pub, feedback_pub = monitor
    before = _wait_for_local(probe, 0.050 * SLOWDOWN)
    assert before, f"no LinkState with the profile's local time:\n{proc.log()[-2000:]}"

    # The encoder measures local at 3x what the profile predicts for this (emulated) robot.
    for k in range(9):
        timing_pub.publish(OnboardTiming(candidate="local", compute_time=0.3))
        time.sleep(0.03)
    # 0.3 s per frame at 5 fps keeps the robot busy: the prediction adds the frame's wait for it
    local_s = 0.3 + camera_wait_s(0.3, 5.0)
    after = _wait_for_local(probe, local_s)
    assert after, f"local never predicted at {local_s} s: {_predicted(probe.messages('/oc/link_state')[-1])}"
    # every candidate's onboard part is scaled (image: 5 ms x 2 slowdown -> 30 ms); the rest is unchanged
    assert _predicted(after)["image"] - _predicted(before)["image"] == pytest.approx(0.020, abs=1e-6)
    assert _predicted(after)["split@13"] - _predicted(before)["split@13"] == pytest.approx(0.080, abs=1e-6)
    assert "robot computes 3.00x the profile's times" in proc.log()
    mark = time.monotonic()
    deadline = time.monotonic() + 5
    while _onboard_factor_in_diagnostics(probe, mark) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _onboard_factor_in_diagnostics(probe, mark) == "3.00"

    # timings it cannot use change nothing: a candidate the profile lacks, impossible times
    timing_pub.publish(OnboardTiming(candidate="split@99", compute_time=5.0))
    for bad in (float("nan"), -1.0, float("inf")):
        timing_pub.publish(OnboardTiming(candidate="local", compute_time=bad))
    time.sleep(0.5)
    assert _wait_for_local(probe, local_s), "an unusable timing changed the prediction"
    assert "onboard_timing for 'split@99', which the profile does not have" in proc.log()

    # The edge reports image payloads at 2x their profiled 30 ms (a batch of 2 in 120 ms); small
    # payloads leave the rate estimate alone, so only image's edge part (and, at the general edge
    # factor, split@13's) may change.
    base = _predicted(_newest_state_after(probe, time.monotonic()))
    for seq in range(9):
        fb = FrameFeedback(seq=seq, ok=True, bytes=100, mode="image", split_index=0, edge_time=0.120, batch_size=2,
                           sent_stamp=wall_time_msg(), received_stamp=wall_time_msg(), finished_stamp=wall_time_msg())
        feedback_pub.publish(fb)
        time.sleep(0.03)
    deadline, edged = time.monotonic() + 10, None
    while time.monotonic() < deadline:
        state = _newest_state_after(probe, time.monotonic() - 0.3)
        if state is not None and math.isclose(_predicted(state)["image"] - base["image"], 0.030, abs_tol=1e-6):
            edged = state
            break
        time.sleep(0.05)
    assert edged, f"image's edge time never doubled: {_predicted(probe.messages('/oc/link_state')[-1])}, {base}"
    assert _predicted(edged)["split@13"] - base["split@13"] == pytest.approx(0.010, abs=1e-6)
    assert _predicted(edged)["local"] == pytest.approx(base["local"])
    assert "edge computes 2.00x the profile's times" in proc.log()

    # switched off at run time: the profile alone again
    _set_parameter(probe, "measured_time_correction", False)
    assert _wait_for_local(probe, 0.050 * SLOWDOWN), "the correction stayed on after it was switched off"
    assert proc.alive() and "Traceback" not in proc.log(), proc.log()[-2000:]
