"""How much slower (or faster) the robot computes now than its profile says.

The profile's onboard times are measured once, at start-up or on an idle machine. On a robot the
same CPU also runs the camera driver, the recorder, SLAM...: under that load every candidate's
onboard part takes longer, and a policy that trusts the profile keeps `local` where it has become
the slowest choice. The encoder reports each frame's measured onboard time for the candidate it
ran; the ratio to the profiled time (median of the newest samples) scales every candidate's onboard
time. One factor for all candidates, because they share the CPU whose load changed: only the
candidate that runs can be measured.
"""
from __future__ import annotations

import statistics
from collections import deque


class OnboardTimeCorrection:
    def __init__(self, samples: int = 9, max_age_s: float = 10.0, low: float = 0.5, high: float = 20.0):
        """samples: newest ratios the median is taken over; max_age_s: older ratios are forgotten
        (the load they saw may be gone); [low, high]: bounds of the factor (a single absurd
        timing must not make the robot look 1000x slower)."""
        self.max_age_s = max_age_s
        self.low, self.high = low, high
        self._ratios: deque[tuple[float, float]] = deque(maxlen=samples)   # (time, measured / profiled)

    def add(self, measured_s: float, profiled_s: float, now: float) -> bool:
        """One frame's measured onboard time against the profile's for the same candidate; returns
        False (and ignores it) for a timing that cannot be right (negative, not finite, or a
        candidate without a positive profiled time)."""
        if not (profiled_s > 0.0 and 0.0 <= measured_s < 3600.0):
            return False
        self._ratios.append((now, measured_s / profiled_s))
        return True

    def factor(self, now: float) -> float:
        """Multiply profiled onboard times by this; 1 when no recent timing is known."""
        recent = [ratio for t, ratio in self._ratios if now - t <= self.max_age_s]
        if not recent:
            return 1.0
        return min(self.high, max(self.low, statistics.median(recent)))

    def samples(self, now: float) -> int:
        return sum(1 for t, _ in self._ratios if now - t <= self.max_age_s)
