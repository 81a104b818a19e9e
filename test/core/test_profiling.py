"""The profiler: what the link monitor's cost model reads, and why its timing is interleaved."""
import json
import os
import subprocess
import sys
import threading
import time
from contextlib import contextmanager

import pytest

from fsplit_ros.profiling.profiler import sample_frames
from fsplit_ros.profiling.fidelity import load_record
from fsplit_ros.policy import CostModel, LinkProfile, ProfileError
from fsplit_ros.policy.link_profile import FORMAT
from fsplit_ros.profiling import cached_profile, load_profile, profile_deployment
from fsplit_ros.profiling.profiler import METHOD, OtherCpuLoad, RoundRobinTimer, wait_for_idle_cpus


@contextmanager
def busy_machine():
    """Another process per CPU spinning, as nodes loading their models do."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in os.sched_getaffinity(0)]
    try:
        time.sleep(0.3)
        yield
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()


class LoadedMachine:
    """A fake clock: each operation costs a fixed time, times 4 during `busy_calls` (the operations
    timed while another process loads the machine, as when a node boots during profiling)."""

    def __init__(self, busy_calls: range):
        self.now = 0.0
        self.calls = 0
        self.busy_calls = busy_calls

    def clock(self) -> float:
        return self.now

    def operation(self, cost_s: float):
        def run():
            self.now += cost_s * (4.0 if self.calls in self.busy_calls else 1.0)
            self.calls += 1
        return run


def test_round_robin_keeps_the_ratio_that_back_to_back_timing_loses_under_a_burst_of_load():
    # 'local' costs 30 ms, 'edge' 33 ms; a burst of load covers six consecutive timed calls, the
    # majority of each operation's five samples when interleaved: both medians rise, the ratio stays.
    machine = LoadedMachine(busy_calls=range(2, 8))
    timer = RoundRobinTimer(clock=machine.clock)
    timer.add("local", machine.operation(0.030))
    timer.add("edge", machine.operation(0.033))
    machine.calls = -2                                    # the warm-up calls come first
    medians = timer.run(repeats=5)
    assert medians["local"] == pytest.approx(120.0) and medians["edge"] == pytest.approx(132.0)
    assert medians["edge"] / medians["local"] == pytest.approx(1.1, rel=1e-6)

    # the same burst, timed one operation after the other, makes edge look 4x slower than local
    machine = LoadedMachine(busy_calls=range(4, 10))
    back_to_back = {}
    for key, cost in (("local", 0.030), ("edge", 0.033)):
        timer = RoundRobinTimer(clock=machine.clock)
        timer.add(key, machine.operation(cost))
        back_to_back.update(timer.run(repeats=5, warmup=0))
    assert back_to_back["edge"] / back_to_back["local"] == pytest.approx(4.4, rel=1e-6)


def test_round_robin_interleaves_and_warms_up_every_operation():
    order, now = [], [0.0]
    cost = {"a": 0.001, "b": 0.002, "c": 0.004}          # seconds each operation takes on the fake clock

    def run(key):
        order.append(key)
        now[0] += cost[key]
    timer = RoundRobinTimer(clock=lambda: now[0])
    for key in "abc":
        timer.add(key, lambda key=key: run(key))
    medians = timer.run(repeats=2)
    assert "".join(order) == "abc" + "abcabc"
    assert medians == pytest.approx({"a": 1.0, "b": 2.0, "c": 4.0})   # ms, warm-up calls not counted


def test_other_cpu_load_counts_other_processes_not_this_one():
    with busy_machine(), OtherCpuLoad() as others_busy:
        time.sleep(1.0)
    with OtherCpuLoad() as only_us:
        end = time.monotonic() + 1.0
        while time.monotonic() < end:               # this process busy, the others idle
            pass
    assert others_busy.fraction > 0.6, others_busy.fraction
    assert only_us.fraction < 0.25, only_us.fraction


def test_waiting_for_idle_cpus_returns_once_the_load_is_gone_or_at_the_timeout():
    with busy_machine():
        t0 = time.monotonic()
        assert wait_for_idle_cpus(timeout_s=1.0) > 0.25                 # still busy at the timeout
        assert 1.0 <= time.monotonic() - t0 < 3.0
    # nodes loading their models for 1.5 s, then quiet: the wait ends a window or two after that
    t0 = time.monotonic()
    stopper = threading.Timer(1.5, lambda: spinners.__exit__(None, None, None))
    spinners = busy_machine()
    spinners.__enter__()
    stopper.start()
    try:
        assert wait_for_idle_cpus(timeout_s=20.0) <= 0.25
    finally:
        stopper.join()
    assert 1.5 <= time.monotonic() - t0 < 4.0


def test_profile_has_every_candidate_with_both_sides_and_the_cache_reuses_it(lite0, tmp_path):
    frames = sample_frames(3)
    profile = profile_deployment(lite0, frames, batch_sizes=(1, 2), repeats=1)
    names = set(profile.candidates)
    assert {"local", "image"} <= names
    assert {f"split@{i}" for i in lite0.compressive_split_indices()} <= names
    assert profile.timing.method == METHOD and profile.timing.repeats == 1
    for name, c in profile.candidates.items():
        assert c.onboard_ms > 0, name
        assert set(c.offboard_ms) == {1, 2}, name
        if name == "local":
            assert c.bytes == 0 and all(v == 0 for v in c.offboard_ms.values())
        else:
            assert c.bytes > 0 and all(v > 0 for v in c.offboard_ms.values()), name

    # every offloading candidate carries its recorded held-out fidelity (the Lite0 record)
    record = load_record("efficientnet_lite0")["entries"]
    assert profile.candidates["image"].fidelity == record["image jpeg:95 model"]["fidelity"]
    for i in lite0.compressive_split_indices():
        assert profile.candidates[f"split@{i}"].fidelity == record[f"split@{i} uint8-channel+zlib"]["fidelity"]

    robot = profile_deployment(lite0, frames, side="robot", batch_sizes=(1,), repeats=1)
    assert all(not c.offboard_ms for n, c in robot.candidates.items() if n != "local")
    with pytest.raises(ProfileError, match="lacks onboard or offboard times"):
        CostModel(robot, camera_rate=10)                      # a half profile is no cost model's input
    # the JSON form round-trips, batch sizes back to numbers
    again = LinkProfile.from_dict(json.loads(json.dumps(profile.to_dict())))
    assert again == profile

    quick = {"repeats": 1, "batch_sizes": (1,)}    # (under 2 spinners torch's threads crawl)
    with busy_machine():                             # timed under load: used, not cached
        loaded = cached_profile(lite0, frames, tmp_path, **quick)
    assert loaded.timing.other_cpu_load > 0.25 and loaded.timing.cached is False
    assert not list(tmp_path.iterdir())
    first = cached_profile(lite0, frames, tmp_path, **quick)
    assert first.timing.cached is True, first.timing
    [path] = tmp_path.iterdir()
    assert path.name.endswith(f"-{METHOD}.json")
    path.write_text(json.dumps({**first.to_dict(), "command": "reused"}))
    assert cached_profile(lite0, frames, tmp_path, **quick).command == "reused"
    assert load_profile(path).candidates.keys() == first.candidates.keys()


def test_profile_files_that_the_cost_model_cannot_use_are_refused_with_what_to_do(tmp_path):
    path = tmp_path / "p.json"
    for content, words in [("{", "cannot read the profile"), ('{"format": "x"}', "not an fsplit-profile/1 file"),
                           (json.dumps({"format": FORMAT}), "needs a 'candidates' table"),
                           (json.dumps({"format": FORMAT, "candidates": {"warp": {"mode": "warp"}}}),
                            "candidate 'warp' has no known mode"),
                           (json.dumps({"format": FORMAT, "candidates": {"image": {
                               "mode": "image", "onboard_ms": 1.0, "offboard_ms": {"one": 2.0}}}}),
                            "candidate 'image'"),
                           (json.dumps({"format": FORMAT, "candidates": {"image": {
                               "mode": "image", "onboard_ms": 1.0}}}), "lacks onboard or offboard")]:
        path.write_text(content)
        with pytest.raises(ProfileError, match=words):
            load_profile(path)


def test_fsplit_profile_measures_the_codecs_the_encoder_is_set_to(tmp_path, capsys):
    """Lossless PNG pixels: the image candidate's bytes are PNG's and its fidelity the record's 100 %."""
    from fsplit_ros.cli.profile import main as profile_cli
    out = tmp_path / "robot.json"
    assert profile_cli(["--side", "robot", "--repeats", "1", "--image-codec", "png", "--image-quality", "1",
                        "--out", str(out)]) == 0
    profile = json.loads(out.read_text())
    assert profile["image_codec"] == "png:1" and profile["image_resolution"] == "model"
    assert profile["candidates"]["image"]["fidelity"] == 1.0
    assert profile["candidates"]["image"]["bytes"] > 3 * profile["candidates"]["split@13"]["bytes"] / 2
    assert "fidelity 100.0 %" in capsys.readouterr().out
