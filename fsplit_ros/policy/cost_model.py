"""Dynamic Split Computing's cost model with the profiled per-candidate costs:

    T(candidate) = W + T_onboard + bytes / rate + RTT/2 + T_offboard(batch)  (local: W + T_onboard)

W is the wait of a frame for the robot to be free (camera_wait_s): a candidate slower than the
camera keeps the robot busy, and the frame it takes next (newest wins) arrived on average half a
camera period earlier. Without it `local` at 110 ms per frame and 10 fps was predicted at 99-119 ms
and measured at 162-186 ms (result - camera stamp), so the monitor kept it where split@19 delivered
132 ms (issue 17, bench/results/link_estimation_before.md).

T_onboard is the profiled time x the robot's emulated slowdown x the candidate's measured onboard
factor, T_offboard the profiled time x its measured edge factor (MeasuredTimeCorrection: how much
slower than profiled each side computes it now).

A candidate is *sustainable* when the link can carry its payloads at the camera rate
(bytes * 8 * fps <= rate) and the robot can compute it at that rate (T_onboard * fps <= 1 s) or
at least as fast as `local`, the fallback that is always allowed (a robot too slow for the camera
must still be able to offload: NanoDet's 42 ms head x 4 missed 10 fps, so `local`, 3x slower
again, was all that was left at 1 Mbit/s).
Its `fidelity` (agreement with the unmodified model) is passed on where the profile records one
(the learned bottleneck); lossless or near-lossless candidates have none.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from fsplit_ros.policy.link_profile import LinkProfile, as_link_profile


# Utilisation (T_onboard x camera rate) over which the wait rises from 0 to half a period: frame
# times jitter, so a candidate at 95 % of the camera period already waits now and then.
WAIT_RAMP = (0.9, 1.1)


def camera_wait_s(onboard_s: float, camera_rate: float) -> float:
    """Mean wait of a frame for the robot to finish the previous one (newest frame wins)."""
    load = onboard_s * camera_rate
    low, high = WAIT_RAMP
    return 0.5 / camera_rate * min(1.0, max(0.0, (load - low) / (high - low)))


@dataclass(frozen=True)
class Prediction:
    # the parts of the latency: wait for the robot, onboard, link (bytes/rate + RTT/2), edge
    parts: tuple[float, float, float, float]
    sustainable: bool
    bytes: float
    fidelity: float | None = None

    @property
    def latency_s(self) -> float:
        return sum(self.parts)

    def explain(self) -> str:
        """'83 ms (wait 12 + robot 60 + link 5 + edge 6)': what a decision was made from."""
        wait, robot, link, edge = (1e3 * x for x in self.parts)
        return f"{self.latency_s * 1e3:.0f} ms (wait {wait:.0f} + robot {robot:.0f} + link {link:.0f} + edge {edge:.0f})"


class CostModel:
    def __init__(self, profile: LinkProfile | dict, camera_rate: float, onboard_scale: float = 1.0):
        """profile: a complete LinkProfile (or its JSON dict); onboard_scale multiplies profiled
        onboard times (to model a slower robot CPU)."""
        self.profile = as_link_profile(profile).complete()
        self.onboard_scale = onboard_scale
        self.camera_rate = camera_rate
        self.candidates = dict(self.profile.candidates)

    def profiled_onboard_s(self, name: str) -> float | None:
        """The profile's onboard time of a candidate on this robot (emulated slowdown included)."""
        c = self.candidates.get(name)
        return None if c is None else c.onboard_ms / 1e3 * self.onboard_scale

    def profiled_offboard_s(self, name: str, batch: int = 1) -> float | None:
        """The profile's per-frame edge time of a candidate when `batch` frames run together."""
        c = self.candidates.get(name)
        return None if c is None or not c.offloads else c.offboard_s(batch)

    def predict(self, rate_bps: float, rtt_s: float, batch: int = 1,
                onboard_factors: Mapping[str, float] | None = None,
                offboard_factors: Mapping[str, float] | None = None) -> dict[str, Prediction]:
        """onboard_factors / offboard_factors: per candidate, how much slower than profiled the robot /
        the edge computes it now (MeasuredTimeCorrection.factors); a candidate not in them is
        predicted as profiled."""
        factors, edge_factors = onboard_factors or {}, offboard_factors or {}
        onboard_s = {name: self.profiled_onboard_s(name) * factors.get(name, 1.0) for name in self.candidates}
        local_s = min((onboard_s[n] for n, c in self.candidates.items() if not c.offloads), default=0.0)
        out = {}
        for name, c in self.candidates.items():
            onboard = onboard_s[name]
            compute_ok = onboard * self.camera_rate <= 1.0 or (c.offloads and onboard <= local_s)
            wait = camera_wait_s(onboard, self.camera_rate)
            if not c.offloads:
                out[name] = Prediction((wait, onboard, 0.0, 0.0), compute_ok, 0.0)
                continue
            offboard = self.profiled_offboard_s(name, batch) * edge_factors.get(name, 1.0)
            transfer = 8.0 * c.bytes / max(rate_bps, 1.0)
            link_ok = 8.0 * c.bytes * self.camera_rate <= rate_bps
            out[name] = Prediction((wait, onboard, transfer + rtt_s / 2, offboard), compute_ok and link_ok,
                                   c.bytes, c.fidelity)
        return out
