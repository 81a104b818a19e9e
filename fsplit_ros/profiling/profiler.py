"""Measure what the cost model needs, per candidate (local, image, bottleneck, split@l for every
compressive bottleneck l):

    onboard_ms       robot: head / learned encoder + payload encoding (after the shared preprocessing)
    bytes, bytes_p95 payload size over the sample frames
    offboard_ms[B]   edge: payload decoding + tail, per frame, when B frames are batched
    fidelity         held-out agreement with the unmodified model: the bottleneck's from its
                     checkpoint, image and split ones from the backbone's fidelity record
                     (profiling/fidelity.py); absent where unknown

A profile is measured on the machine that runs each side: `side="robot"` fills onboard numbers,
`side="edge"` offboard ones, and `merge_profiles` combines the two files.
"""
from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from fsplit_ros.modes import MODES, candidate_name
from fsplit_ros.policy.link_profile import CandidateProfile, LinkProfile, ProfileTiming
from fsplit_ros.profiling.fidelity import attach_fidelity, load_record
from fsplit_ros.runtime import Deployment, EdgeDecoder, OnboardEncoder
from fsplit_ros.runtime.payload_modes import PAYLOAD_MODES

METHOD = "round-robin"   # in cache file names: profiles timed the older way are measured again
MAX_OTHER_CPU_LOAD = 0.25  # a profile timed while other processes used more of the CPUs is not cached


class OtherCpuLoad:
    """The share of the machine's CPU time that *other* processes used while this block ran
    (Linux /proc/stat minus this process's own CPU time); None where it cannot be read.

    Profiles timed while nodes load their models or a test runs read 3-10x the idle costs, and a
    cached one was reused by every later start on that machine."""

    def __enter__(self):
        self.start = self._sample()
        return self

    def __exit__(self, *exc):
        end = self._sample()
        self.fraction = None
        if self.start is not None and end is not None:
            (total0, busy0, own0), (total1, busy1, own1) = self.start, end
            if total1 > total0:
                self.fraction = min(1.0, max(0.0, ((busy1 - busy0) - (own1 - own0)) / (total1 - total0)))
        return False

    @staticmethod
    def _sample():
        """(all CPUs' time, their busy time, this process's CPU time), in seconds."""
        try:
            fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        except (OSError, ValueError):
            return None
        hz = os.sysconf("SC_CLK_TCK")
        total = sum(fields[:8]) / hz                      # user .. steal (guest time is inside user)
        idle = (fields[3] + fields[4]) / hz               # idle + iowait
        own = os.times()
        return total, total - idle, own.user + own.system


def median_ms(fn, repeats: int = 15, warmup: int = 1) -> float:
    """Median wall time of fn() in ms, after `warmup` calls (lazy allocations, first-call costs)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def sample_frames(n: int = 8) -> list[np.ndarray]:
    """The frames profiles are timed on: the first n offline labelled photos (RGB)."""
    import cv2
    from fsplit_ros.datasets.offline import labelled_imagenet_photos
    return [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p, _ in labelled_imagenet_photos()[:n]]


def candidates(encoder: OnboardEncoder) -> list[tuple[str, str, int | None]]:
    """(candidate name, mode, split index) for every configuration the policy can choose: each mode
    this deployment can send, a split-point mode once per compressive split point."""
    dep = encoder.dep
    out = []
    for mode in encoder.available_modes():
        if MODES[mode].per_split_point:
            out += [(candidate_name(mode, i), mode, i) for i in dep.compressive_split_indices()]
        else:
            out.append((mode, mode, PAYLOAD_MODES[mode].split_index(dep) if mode in PAYLOAD_MODES else None))
    return out


class RoundRobinTimer:
    """Times several operations in interleaved rounds (a, b, c, a, b, c, ...) and keeps each one's
    median. A burst of load from another process then slows every operation of the rounds it
    overlaps, not only the one that happened to be timed during it, so the ratios between
    candidates, which decide the mode, survive it. Sustained load it does not undo (timed while
    three nodes booted, image's edge still read 67 ms against local's 23 ms, idle ~21 vs ~20): that
    is what OtherCpuLoad detects."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter):
        self.clock = clock
        self.operations: dict[str, Callable[[], object]] = {}
        self.samples: dict[str, list[float]] = {}

    def add(self, key: str, fn) -> None:
        self.operations[key] = fn
        self.samples[key] = []

    def run(self, repeats: int, warmup: int = 1) -> dict[str, float]:
        for fn in self.operations.values():
            for _ in range(warmup):
                fn()
        for _ in range(repeats):
            for key, fn in self.operations.items():
                t0 = self.clock()
                fn()
                self.samples[key].append((self.clock() - t0) * 1e3)
        return {key: statistics.median(times) for key, times in self.samples.items()}


@torch.no_grad()
def profile_deployment(dep: Deployment, frames: list[np.ndarray], side: str = "both",
                       batch_sizes=(1, 2, 4, 8), repeats: int = 5, threads: int | None = None,
                       encoder_kwargs: dict | None = None, shared_models=()) -> LinkProfile:
    """shared_models: further edge models answering bottleneck payloads (runtime/shared_models.py):
    the bottleneck candidate's edge time then includes each one's decoder and tail."""
    if side not in ("robot", "edge", "both"):
        raise ValueError("side must be robot, edge or both")
    if threads:
        torch.set_num_threads(threads)
    enc = OnboardEncoder(dep, **(encoder_kwargs or {}))
    dec = EdgeDecoder(dep, shared_models=shared_models)
    prepared = [enc.prepare(f) for f in frames]
    first = prepared[0]
    profile = LinkProfile(
        candidates={}, backbone=dep.name, model_hashes=dep.model_hashes(), input_size=dep.input_size,
        tensor_codec=enc.tensor_codec.name, image_codec=f"{enc.image_codec.name}:{enc.image_codec.quality}",
        image_resolution=enc.image_resolution, edge_models=[m.name for m in shared_models],
        machine={side_name: {"host": platform.node(), "cpu": platform.processor() or platform.machine(),
                             "threads": torch.get_num_threads(), "torch": torch.__version__}
                 for side_name in (["robot", "edge"] if side == "both" else [side])},
        timing=ProfileTiming(method=METHOD, repeats=repeats))
    timer = RoundRobinTimer()
    timer.add("preprocess", lambda: enc.prepare(frames[0]))
    for name, mode, split in candidates(enc):
        entry = CandidateProfile(mode=mode, split_index=split)
        if not MODES[mode].offloads:
            if side != "edge":
                timer.add(f"{name}/onboard", lambda: enc.predict_local(first))
        else:
            payloads = [enc.encode(p, mode, split) for p in prepared]
            sizes = [len(p) for p in payloads]
            entry.bytes, entry.bytes_p95 = float(np.mean(sizes)), float(np.percentile(sizes, 95))
            entry.fidelity, entry.fidelity_source = PAYLOAD_MODES[mode].checkpoint_fidelity(dep)
            if MODES[mode].per_split_point:
                point = dep.split_point(split)
                entry.layer, entry.compression, entry.shape = point.name, point.compression, list(point.shape)
            if side != "edge":
                timer.add(f"{name}/onboard", lambda mode=mode, split=split: enc.encode(first, mode, split))
            if side != "robot":
                for b in batch_sizes:
                    batch = [payloads[i % len(payloads)] for i in range(b)]
                    timer.add(f"{name}/offboard/{b}", lambda batch=batch: _edge(dec, batch))
        profile.candidates[name] = entry
    attach_fidelity(profile, load_record(dep.name))
    with OtherCpuLoad() as load:
        medians = timer.run(repeats)
    profile.timing.other_cpu_load = load.fraction
    profile.preprocess_ms = medians["preprocess"]
    for name, entry in profile.candidates.items():
        if f"{name}/onboard" in medians:
            entry.onboard_ms = medians[f"{name}/onboard"]
        if not entry.offloads:
            entry.offboard_ms = {b: 0.0 for b in batch_sizes}
        elif side != "robot":
            entry.offboard_ms = {b: medians[f"{name}/offboard/{b}"] / b for b in batch_sizes}
    return profile


def _edge(dec: EdgeDecoder, payloads: list[bytes]) -> None:
    """What the decoder node does with a batch: decode, every model's tail."""
    frames = [dec.decode(p) for p in payloads]
    dec.run_tails(frames)
    dec.run_shared_models(frames)


def merge_profiles(robot: LinkProfile, edge: LinkProfile) -> LinkProfile:
    """Onboard numbers from the robot's profile, offboard ones from the edge's."""
    if robot.model_hashes != edge.model_hashes:
        raise ValueError("robot and edge profiles are for different models: profile the deployed "
                         "weights on both sides")
    merged = LinkProfile.from_dict(robot.to_dict())
    merged.machine = {**robot.machine, **edge.machine}
    merged.edge_models = list(edge.edge_models)
    for name, entry in merged.candidates.items():
        if name not in edge.candidates:
            raise ValueError(f"the edge profile has no candidate {name}: profile both sides with the same "
                             f"bottleneck and codecs")
        entry.offboard_ms = dict(edge.candidates[name].offboard_ms)
    return merged


def load_profile(path: str | Path) -> LinkProfile:
    """A complete profile file (both sides), with the fidelity records attached."""
    profile = LinkProfile.read(path).complete(str(path))
    attach_fidelity(profile, load_record(profile.backbone))   # profiles made before the record
    return profile


def wait_for_idle_cpus(timeout_s: float, window_s: float = 0.5) -> float | None:
    """Wait until other processes use at most MAX_OTHER_CPU_LOAD of the CPUs over a `window_s`
    window, or `timeout_s` passed; returns the last window's load (None: cannot be measured).
    The link monitor starts with the nodes that load models next to it: timing then is wasted."""
    deadline = time.monotonic() + timeout_s
    while True:
        with OtherCpuLoad() as load:
            time.sleep(window_s)
        if load.fraction is None or load.fraction <= MAX_OTHER_CPU_LOAD or time.monotonic() >= deadline:
            return load.fraction


# Where start-up profiles of this machine are cached (link monitor, tests, benchmarks).
PROFILE_CACHE_DIR = Path.home() / ".cache" / "fsplit_ros" / "profiles"


def cached_profile(dep: Deployment, frames: list[np.ndarray], cache_dir: str | Path = PROFILE_CACHE_DIR,
                   idle_wait_s: float = 0.0, repeats: int = 5, batch_sizes=(1, 2, 4, 8),
                   shared_models=()) -> LinkProfile:
    """Profile both sides on this machine once per model (keyed by its hashes), then reuse it.

    Before timing, waits up to `idle_wait_s` for the other processes to quieten down. A profile
    timed while they used more than MAX_OTHER_CPU_LOAD of the CPUs is returned for this run but not
    cached (its `timing.cached` is false): the next start measures again."""
    key = "-".join([h[:10] for _, h in sorted(dep.model_hashes().items())] + [m.decoder_hash[:10] for m in shared_models])
    path = Path(cache_dir) / f"{dep.name}-{key}-{METHOD}.json"
    if path.is_file():
        return load_profile(path)
    if idle_wait_s > 0:
        wait_for_idle_cpus(idle_wait_s)
    profile = profile_deployment(dep, frames, side="both", repeats=repeats, batch_sizes=batch_sizes,
                                 shared_models=shared_models)
    load = profile.timing.other_cpu_load
    profile.timing.cached = load is not None and load <= MAX_OTHER_CPU_LOAD
    if profile.timing.cached:
        profile.save(path)
    return profile
