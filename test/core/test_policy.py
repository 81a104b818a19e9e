"""The link policy without ROS: estimator, cost model and selector on synthetic measurements."""
import pytest

from fsplit_ros.policy import CostModel, InFlightWindow, ModeSelector, MeasuredTimeCorrection
from fsplit_ros.policy.cost_model import camera_wait_s

PROFILE = {"candidates": {
    "local": {"mode": "local", "split_index": None, "bytes": 0, "onboard_ms": 100.0, "offboard_ms": {"1": 0.0}},
    "image": {"mode": "image", "split_index": 0, "bytes": 25000, "onboard_ms": 1.0, "offboard_ms": {"1": 30.0}},
    "bottleneck": {"mode": "bottleneck", "split_index": 6, "bytes": 3000, "onboard_ms": 10.0,
                   "offboard_ms": {"1": 60.0, "8": 10.0}},
    "split@13": {"mode": "split", "split_index": 13, "bytes": 10000, "onboard_ms": 40.0, "offboard_ms": {"1": 7.0}},
    "split@19": {"mode": "split", "split_index": 19, "bytes": 1000, "onboard_ms": 90.0, "offboard_ms": {"1": 0.5}},
}}


def test_cost_model_formula_and_sustainability():
    cost = CostModel(PROFILE, camera_rate=10)
    p = cost.predict(rate_bps=1e6, rtt_s=0.02)
    assert p["image"].latency_s == pytest.approx(0.001 + 25000 * 8 / 1e6 + 0.01 + 0.030)
    assert not p["image"].sustainable             # 25 kB x 10 fps = 2 Mbit/s > 1 Mbit/s
    # local (100 ms at 10 fps) keeps the robot busy: each frame also waits for the previous one
    assert p["bottleneck"].sustainable and p["local"].latency_s == pytest.approx(0.1 + camera_wait_s(0.1, 10))
    assert camera_wait_s(0.1, 10) == pytest.approx(0.025) and camera_wait_s(0.08, 10) == 0.0
    assert camera_wait_s(0.2, 10) == pytest.approx(0.05)           # at most half a camera period
    for pred in p.values():                                         # the parts a decision is logged with
        assert sum(pred.parts) == pytest.approx(pred.latency_s)
    assert p["image"].explain() == "241 ms (wait 0 + robot 1 + link 210 + edge 30)"
    assert cost.predict(1e6, 0.02, batch=8)["bottleneck"].latency_s < p["bottleneck"].latency_s
    slow = CostModel(PROFILE, camera_rate=10, onboard_scale=4).predict(1e6, 0.02)
    assert slow["local"].latency_s == pytest.approx(0.4 + 0.05) and not slow["local"].sustainable
    # a robot too slow for the camera may still offload what it computes at least as fast as local:
    # split@13 (160 ms) and split@19 (360 ms) miss 10 fps but beat local's 400 ms
    assert slow["split@13"].sustainable and slow["split@19"].sustainable
    slower = CostModel(PROFILE, camera_rate=10, onboard_scale=4).predict(
        1e6, 0.02, onboard_factors={"split@19": 1.2})              # 432 ms measured: slower than local
    assert not slower["split@19"].sustainable and slower["split@13"].sustainable


def test_selector_follows_rate_with_hysteresis_and_dwell():
    cost, sel = CostModel(PROFILE, 10), ModeSelector(["local", "split", "bottleneck", "image"], min_dwell_s=2.0)
    assert sel.update(cost.predict(50e6, 0.002), 0.0, now=0.0).candidate == "image"
    # image becomes unsustainable at 1 Mbit/s: leave at once, despite the dwell time
    d = sel.update(cost.predict(1e6, 0.002), 0.0, now=0.5)
    assert d.changed and d.candidate == "bottleneck" and "unsustainable" in d.reason
    # back to a fast link: image is better, but only after the dwell time
    assert sel.update(cost.predict(50e6, 0.002), 0.0, now=1.0).candidate == "bottleneck"
    assert sel.update(cost.predict(50e6, 0.002), 0.0, now=2.6).candidate == "image"
    # a candidate only marginally faster (inside the hysteresis band) does not cause a switch
    near = CostModel({"candidates": {**PROFILE["candidates"], "bottleneck": {
        **PROFILE["candidates"]["bottleneck"], "offboard_ms": {"1": 22.0}}}}, 10)   # 7% faster than image
    assert sel.update(near.predict(50e6, 0.002), 0.0, now=10.0).candidate == "image"


def test_selector_link_down_pinned_forbidden_and_blocked():
    cost = CostModel(PROFILE, 10)
    sel = ModeSelector(["local", "split", "bottleneck"], link_timeout_s=0.6)
    assert sel.update(cost.predict(50e6, 0.002), 0.0, now=0.0).candidate == "split@13"  # image forbidden
    d = sel.update(cost.predict(50e6, 0.002), 0.7, now=0.1)
    assert d.candidate == "local" and "link down" in d.reason
    assert sel.update(cost.predict(50e6, 0.002), 0.0, now=5, blocked={"split", "bottleneck"}).candidate == "local"
    pinned = ModeSelector(["local", "split"], pinned_mode="split")
    assert pinned.update(cost.predict(0.5e6, 0.002), 0.0, now=0.0).candidate == "split@19"
    assert pinned.update(cost.predict(100e6, 0.002), 0.0, now=3.0).candidate == "split@13"


def test_selector_waits_in_local_until_a_restored_link_is_measured():
    """Back from an outage the rate is a guess; a mode chosen from it would be kept for min_dwell_s
    once the real rate is in (the 3.01 s recovery of issue 17)."""
    cost, sel = CostModel(PROFILE, 10), ModeSelector(["local", "split", "bottleneck", "image"], min_dwell_s=2.0)
    assert sel.update(cost.predict(50e6, 0.002), 1.5, now=0.0).candidate == "local"        # link down
    d = sel.update(cost.predict(1e6, 0.002), 0.0, now=3.0, link_measured=False)          # back, rate unknown
    assert d.candidate == "local" and "measuring" in d.reason
    d = sel.update(cost.predict(50e6, 0.002), 0.0, now=3.05)                              # measured: at once
    assert d.changed and d.candidate == "image"
    # a short outage: the fallback to local starts no dwell, so image returns the moment it can
    assert sel.update(cost.predict(50e6, 0.002), 0.7, now=10.0, link_measured=True).candidate == "image"
    sel.link_timeout_s = 0.6
    assert sel.update(cost.predict(50e6, 0.002), 0.7, now=10.1).candidate == "local"
    assert sel.update(cost.predict(1e6, 0.002), 0.0, now=10.3, link_measured=False).candidate == "local"
    assert sel.update(cost.predict(50e6, 0.002), 0.0, now=10.35).candidate == "image"
    pinned = ModeSelector(["local", "image"], pinned_mode="image")                        # pinning still wins
    assert pinned.update(cost.predict(1e6, 0.002), 0.0, now=0.0, link_measured=False).candidate == "image"


def test_min_fidelity_keeps_a_lossy_bottleneck_out_and_can_be_lowered_again():
    # the bottleneck agrees with the full model on 77 % of held-out frames (from its checkpoint)
    profile = {"candidates": {**PROFILE["candidates"], "bottleneck": {
        **PROFILE["candidates"]["bottleneck"], "fidelity": 0.77}}}
    cost = CostModel(profile, 10)
    at_2mbit = cost.predict(2e6, 0.002)     # bottleneck 83 ms, split@13 88 ms, local 125 ms
    assert at_2mbit["bottleneck"].fidelity == 0.77 and at_2mbit["split@13"].fidelity is None
    modes = ["local", "split", "bottleneck", "image"]
    assert ModeSelector(modes).update(at_2mbit, 0.0, now=0.0).candidate == "bottleneck"
    strict = ModeSelector(modes, min_fidelity=0.8)
    assert strict.update(at_2mbit, 0.0, now=0.0).candidate == "split@13"  # the fastest lossless one
    strict.current = "bottleneck"                                          # the floor raised while in it:
    d = strict.update(at_2mbit, 0.0, now=10.0)                             # left at once, saying why
    assert d.changed and d.candidate == "split@13" and "below min_fidelity 0.8" in d.reason
    assert not strict.eligible("bottleneck", at_2mbit["bottleneck"])
    strict.min_fidelity = 0.7
    assert strict.eligible("bottleneck", at_2mbit["bottleneck"])
    # pinning is the user's explicit choice: the floor does not override it
    pinned = ModeSelector(["local", "bottleneck"], pinned_mode="bottleneck", min_fidelity=0.9)
    assert pinned.update(at_2mbit, 0.0, now=0.0).candidate == "bottleneck"


def test_measured_time_correction_is_a_robust_recent_ratio():
    corr = MeasuredTimeCorrection(samples=5, recent_s=10.0, memory_s=60.0, low=0.5, high=20.0)
    assert corr.factor("local", now=0.0) == 1.0 and corr.general_factor(0.0) == 1.0   # trust the profile
    for t, measured in enumerate([0.2, 0.21, 0.19, 5.0, 0.2]):  # one frame hit a 5 s hiccup
        assert corr.add("local", measured, 0.1, now=float(t))
    assert corr.factor("local", now=5.0) == pytest.approx(2.0)  # the median ignores it
    assert corr.factor("image", now=5.0) == pytest.approx(2.0)  # never measured: the general factor
    assert corr.recent_samples(now=5.0) == 5
    for t in range(5, 10):                                      # the load is gone: the newest 5 decide
        corr.add("local", 0.1, 0.1, now=float(t))
    assert corr.factor("local", now=10.0) == pytest.approx(1.0)
    assert corr.general_factor(now=30.0) == 1.0 and corr.recent_samples(now=30.0) == 0   # too old for "now"
    assert not corr.add("local", -1.0, 0.1, now=31.0) and not corr.add("local", float("nan"), 0.1, now=31.0)
    assert not corr.add("local", float("inf"), 0.1, now=31.0)
    assert not corr.add("image", 0.1, 0.0, now=31.0)            # a candidate the profile timed at 0
    corr.add("image", 1e3, 0.001, now=32.0)
    assert corr.factor("image", now=32.0) == 20.0               # bounded
    assert corr.general_factor(now=32.0) == 1.0                 # a 1 ms candidate's timing is its own only
    corr.add("split@7", 1e-6, 0.1, now=33.0)
    assert corr.factor("split@7", now=33.0) == 0.5


def test_each_candidate_keeps_its_own_measured_ratio_so_the_monitor_does_not_flap():
    """Measured on this machine under the graph's own load: local (convolutions) 2-2.5x its profile,
    image mode's JPEG encoding 1.3x. With one shared factor the monitor flapped local <-> image every
    few seconds, each looking worse while it ran. Per candidate it settles; a candidate not run for
    memory_s is re-tried at the general factor."""
    profile = {"candidates": {"local": {**PROFILE["candidates"]["local"], "onboard_ms": 60.0},
                              "image": PROFILE["candidates"]["image"]}}
    cost = CostModel(profile, camera_rate=5)
    at_3mbit = dict(rate_bps=3e6, rtt_s=0.002)   # profile: local 60 ms, image 1 + 67 + 1 + 30 = 99 ms
    # local measured 2.4x (144 ms) -> image; image's own ratio 1.3 would price local at 78 ms again

    def run(shared_factor: bool, seconds: float = 70.0) -> list[tuple[float, str]]:
        sel = ModeSelector(["local", "image"], min_dwell_s=2.0)
        corr = MeasuredTimeCorrection(memory_s=60.0)
        assert sel.update(cost.predict(**at_3mbit), 0.0, now=0.0).candidate == "local"
        modes = []
        for step in range(int(seconds * 10)):
            t = step / 10
            ratio = 2.4 if sel.current == "local" else 1.3
            corr.add(sel.current, cost.profiled_onboard_s(sel.current) * ratio, cost.profiled_onboard_s(sel.current), t)
            factors = ({n: corr.general_factor(t) for n in cost.candidates} if shared_factor
                       else corr.factors(cost.candidates, t))
            modes.append((t, sel.update(cost.predict(**at_3mbit, onboard_factors=factors), 0.0, now=t).candidate))
        return modes

    def switch_times(modes):
        return [t for (_, a), (t, b) in zip(modes, modes[1:]) if a != b]

    assert len(switch_times(run(shared_factor=True))) >= 8             # flaps: 10 switches in 70 s
    own = run(shared_factor=False)
    assert own[0][1] == "image" and switch_times(own)[:1] and switch_times(own)[0] > 59
    # after memory_s local is re-tried at the general factor (1: image's 1 ms JPEG timing does not speak
    # for the CPU), measured again, and left again
    assert len(switch_times(own)) == 2 and own[-1][1] == "image", switch_times(own)


def test_measured_onboard_times_price_in_the_robots_current_load():
    """At 1 Mbit/s the profile says local 100 ms, bottleneck 95 ms: inside the hysteresis, the robot
    stays local. The encoder then measures local at 200 ms (the CPU is loaded): every onboard part
    is priced 2x, the bottleneck's 10 ms onboard hardly matters and it wins; measured there at 2x
    its profile too, the factor holds and the robot does not flap back."""
    cost = CostModel(PROFILE, camera_rate=5)
    sel = ModeSelector(["local", "split", "bottleneck"], min_dwell_s=0.0)
    corr = MeasuredTimeCorrection()
    assert sel.update(cost.predict(1e6, 0.002, onboard_factors=corr.factors(cost.candidates, 0.0)), 0.0,
                      now=0.0).candidate == "local"
    for t in range(5):
        corr.add("local", 0.2, cost.profiled_onboard_s("local"), now=1.0 + t * 0.2)
    predictions = cost.predict(1e6, 0.002, onboard_factors=corr.factors(cost.candidates, 2.0))
    assert predictions["local"].latency_s == pytest.approx(0.2 + camera_wait_s(0.2, 5))
    assert predictions["bottleneck"].latency_s == pytest.approx(0.020 + 3000 * 8 / 1e6 + 0.001 + 0.060)
    d = sel.update(predictions, 0.0, now=2.0)
    assert d.changed and d.candidate == "bottleneck" and "predicted" in d.reason
    for t in range(9):
        corr.add("bottleneck", 0.020, cost.profiled_onboard_s("bottleneck"), now=2.5 + t * 0.2)
    factors = corr.factors(cost.candidates, 5.0)
    assert factors["bottleneck"] == pytest.approx(2.0) and factors["local"] == pytest.approx(2.0)
    assert sel.update(cost.predict(1e6, 0.002, onboard_factors=factors), 0.0, now=5.0).candidate == "bottleneck"
    # the emulated slowdown is part of what the profile predicts for this robot
    assert CostModel(PROFILE, 5, onboard_scale=4).profiled_onboard_s("split@13") == pytest.approx(0.16)
    assert cost.profiled_onboard_s("split@7") is None


def test_a_busy_edge_makes_offloading_look_as_slow_as_it_is():
    """At 1 Mbit/s the bottleneck (95 ms) is preferred to local (100 ms x 1.2 measured). The edge,
    serving other robots, then reports the bottleneck's decode + tail at 3x its profile (per frame
    of a batch of 8: edge_time / batch_size against offboard_ms[8]); offloading loses its edge."""
    cost = CostModel(PROFILE, camera_rate=5)
    robot, edge = MeasuredTimeCorrection(), MeasuredTimeCorrection()
    robot.add("local", 0.12, cost.profiled_onboard_s("local"), now=0.0)
    sel = ModeSelector(["local", "bottleneck"], min_dwell_s=0.0)

    def choose(t):
        names = cost.candidates
        return sel.update(cost.predict(1e6, 0.002, onboard_factors=robot.factors(names, t),
                                       offboard_factors=edge.factors(names, t)), 0.0, now=t)
    assert choose(0.1).candidate == "bottleneck"
    assert cost.profiled_offboard_s("bottleneck", 8) == pytest.approx(0.010)
    assert cost.profiled_offboard_s("local") is None and cost.profiled_offboard_s("split@7") is None
    for t in range(5):
        edge.add("bottleneck", 8 * 0.030 / 8, cost.profiled_offboard_s("bottleneck", 8), now=1.0 + t * 0.1)
    predicted = cost.predict(1e6, 0.002, offboard_factors=edge.factors(cost.candidates, 2.0))
    assert predicted["bottleneck"].latency_s == pytest.approx(0.010 + 0.024 + 0.001 + 3 * 0.060)
    assert predicted["split@13"].latency_s == pytest.approx(0.040 + 0.080 + 0.001 + 3 * 0.007)  # general factor
    d = choose(2.0)
    assert d.changed and d.candidate == "local"


def test_profile_records_the_bottleneck_checkpoints_held_out_fidelity():
    from fsplit_ros.runtime.payload_modes import PAYLOAD_MODES
    bottleneck_fidelity = PAYLOAD_MODES["bottleneck"].checkpoint_fidelity

    class Dep:
        bottleneck_metadata = {"heldout": {"frames": 114, "fidelity_map50": 0.79, "mse": 0.1}}
    assert bottleneck_fidelity(Dep()) == (0.79, "checkpoint held-out fidelity_map50 (114 frames)")
    Dep.bottleneck_metadata = {"heldout": {"frames": 20, "top1_agreement": 0.81}}
    assert bottleneck_fidelity(Dep())[0] == 0.81
    Dep.bottleneck_metadata = None                          # a checkpoint without a record: no floor applies
    assert bottleneck_fidelity(Dep()) == (None, "")


def _simulate_uplink(window: InFlightWindow, rate_bps: float, payload_bytes: int, fps: float, seconds: float,
                     measured_rate_bps: float = 0.0):
    """Camera frames into a FIFO link; feedback at each payload's arrival. Returns per-payload
    latencies (arrival - publish) and how many frames were sent."""
    arrivals: list[tuple[float, int]] = []   # (arrival time, seq)
    link_free_at, latencies, seq = 0.0, [], 0
    for k in range(int(seconds * fps)):
        now = k / fps
        for done, s in [a for a in arrivals if a[0] <= now]:
            window.answered(s)
            arrivals.remove((done, s))
        if not window.may_send(now, payload_bytes, measured_rate_bps):
            continue
        seq += 1
        done = max(now, link_free_at) + payload_bytes * 8 / rate_bps
        link_free_at = done
        window.sent(seq, payload_bytes, now)
        arrivals.append((done, seq))
        latencies.append(done - now)
    return latencies, seq


def test_in_flight_window_keeps_an_oversubscribed_link_from_queueing():
    # 23 kB image payloads at 10 fps over 0.5 Mbit/s: 4.6x more than the link carries.
    per_payload = 23_000 * 8 / 0.5e6                      # 0.368 s on the link
    unlimited, _ = _simulate_uplink(InFlightWindow(max_frames=0), 0.5e6, 23_000, 10.0, 10.0)
    assert max(unlimited) > 10 * per_payload              # without flow control the queue only grows
    # Right after the step the rate estimate still says 20 Mbit/s: the frame count alone bounds the
    # queue to one payload ahead.
    stale = InFlightWindow(max_frames=2, timeout_s=2.0)
    limited, sent_stale = _simulate_uplink(stale, 0.5e6, 23_000, 10.0, 10.0, measured_rate_bps=20e6)
    assert max(limited) <= 2 * per_payload + 0.1 + 1e-9
    assert stale.held_back == 100 - sent_stale > 0
    assert sent_stale >= int(10.0 / per_payload) - 1      # the link stays busy: ~27 payloads in 10 s
    # Once the rate is measured, two 23 kB payloads (0.74 s) exceed the 0.25 s queue budget: one at
    # a time, so a payload never waits behind another.
    measured = InFlightWindow(max_frames=2, timeout_s=2.0, queue_budget_s=0.25)
    one_at_a_time, sent_measured = _simulate_uplink(measured, 0.5e6, 23_000, 10.0, 10.0, measured_rate_bps=0.5e6)
    assert max(one_at_a_time) == pytest.approx(per_payload)
    assert sent_measured >= 0.8 * 10.0 / per_payload      # idle only until the next camera frame
    # a fast link is never throttled: every frame goes out
    fast = InFlightWindow(max_frames=2)
    _, sent_fast = _simulate_uplink(fast, 20e6, 23_000, 10.0, 10.0, measured_rate_bps=20e6)
    assert sent_fast == 100 and fast.held_back == 0


def test_in_flight_window_pipelines_small_payloads_and_always_lets_one_through():
    window = InFlightWindow(max_frames=2, queue_budget_s=0.25)
    window.sent(1, 2_000, 0.0)
    assert window.may_send(0.01, 2_000, 0.5e6)            # 4 kB clear 0.5 Mbit/s in 64 ms: pipeline
    window.sent(2, 2_000, 0.01)
    assert not window.may_send(0.02, 2_000, 0.5e6)        # but never more than max_frames
    idle = InFlightWindow(max_frames=2, queue_budget_s=0.25)
    assert idle.may_send(0.0, 10_000_000, 1e3)            # nothing in flight: even a huge payload goes


def test_in_flight_window_frees_unanswered_slots_after_the_timeout():
    window = InFlightWindow(max_frames=2, timeout_s=2.0)
    window.sent(1, 1_000, 0.0)
    window.sent(2, 1_000, 0.1)
    assert not window.may_send(0.5)            # both lost in a cut: nobody answers
    window.answered(99)                         # another robot's seq: no effect
    assert window.in_flight(0.5) == 2
    assert window.may_send(2.05)                # seq 1 expired
    window.answered(2)
    assert window.in_flight(2.05) == 0 and window.held_back == 1
    # a payload that takes long to cross a slow link is not given up before it could arrive, even if
    # it was sent while the estimate still said "fast"
    slow = InFlightWindow(max_frames=1, timeout_s=2.0)
    slow.sent(1, 150_000, 0.0)                  # 4.8 s at 0.25 Mbit/s
    assert slow.in_flight(5.0, 0.25e6) == 1 and slow.in_flight(6.9, 0.25e6) == 0


def test_an_answer_frees_the_older_payloads_the_newest_replaced():
    """The publisher keeps the newest payload only: one not yet delivered when the next went out is
    replaced and never answered. The answer to the newer one frees its slot at once, instead of
    after the timeout (a 2 s stall at 0.5 Mbit/s, issue 17); another sender's seq frees nothing."""
    window = InFlightWindow(max_frames=2, timeout_s=2.0)
    window.sent(157, 1_000, 0.0)
    window.sent(158, 1_000, 0.1)
    assert not window.may_send(0.3)
    window.answered(158)
    assert window.in_flight(0.3) == 0 and window.may_send(0.3)
    window.sent(159, 1_000, 0.3)
    window.answered(1_000)                      # not ours
    assert window.in_flight(0.4) == 1
