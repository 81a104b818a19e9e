"""How much slower (or faster) a side computes now than its profile says.

The profile's times are measured once, at start-up or on an idle machine. On a robot the same CPU
also runs the camera driver, the recorder, SLAM...; an edge serves other robots. Under that load
every candidate's part on that side takes longer, and a policy that trusts the profile keeps
`local` where it has become the slowest choice (or offloads to an edge that has become slow). One
instance per side: the encoder reports each frame's measured onboard time (OnboardTiming), the
edge each payload's processing time (FrameFeedback.edge_time), and the ratio to the profiled time
corrects the predictions:

- a candidate measured within `memory_s` keeps its own ratio (median of its newest samples). Load
  does not slow every candidate alike: on this 2-core machine the graph's own load slowed the
  convolutional `local` 2-2.5x and image mode's JPEG encoding 1.3x. With one shared factor the
  monitor flapped between them every few seconds (each looked worse while it ran);
- any other candidate takes the general ratio: the median of all recent samples (`recent_s`) of
  candidates profiled at `min_informative_s` or more, i.e. the best guess for how loaded that side
  is now; 1 when nothing recent was measured. A timing of a few milliseconds (image mode's JPEG)
  says more about Python and the scheduler than about the load: its ratio swung 0.7-3.8 from one
  second to the next in the detector demo.

After `memory_s` without running, a candidate falls back to the general ratio, so a load that has
gone away is noticed: the monitor may try it again and measure it anew.
"""
from __future__ import annotations

import math
import statistics
from collections import deque
from collections.abc import Iterable


class MeasuredTimeCorrection:
    def __init__(self, samples: int = 9, recent_s: float = 10.0, memory_s: float = 60.0,
                 low: float = 0.5, high: float = 20.0, min_informative_s: float = 0.010):
        """samples: newest ratios a median is taken over; recent_s: age up to which a sample speaks
        for the CPU's load now; memory_s: how long a candidate's own ratio is kept; [low, high]:
        bounds of a factor (a single absurd timing must not make the robot look 1000x slower);
        min_informative_s: candidates profiled faster than this keep their own ratio but do not
        speak for the others."""
        self.samples_kept = samples
        self.recent_s, self.memory_s = recent_s, memory_s
        self.low, self.high = low, high
        self.min_informative_s = min_informative_s
        self._all: deque[tuple[float, float]] = deque(maxlen=samples)           # (time, ratio)
        self._own: dict[str, deque[tuple[float, float]]] = {}

    def add(self, candidate: str, measured_s: float, profiled_s: float, now: float) -> bool:
        """One frame's measured time against the profile's for the same candidate and side; returns
        False (and ignores it) for a timing that cannot be right (negative, not finite, or a
        candidate without a positive profiled time)."""
        if not (profiled_s > 0.0 and math.isfinite(measured_s) and 0.0 <= measured_s < 3600.0):
            return False
        sample = (now, measured_s / profiled_s)
        if profiled_s >= self.min_informative_s:
            self._all.append(sample)
        self._own.setdefault(candidate, deque(maxlen=self.samples_kept)).append(sample)
        return True

    def _median(self, samples: Iterable[tuple[float, float]], now: float, max_age_s: float) -> float | None:
        ratios = [ratio for t, ratio in samples if now - t <= max_age_s]
        return min(self.high, max(self.low, statistics.median(ratios))) if ratios else None

    def general_factor(self, now: float) -> float:
        """How much slower than profiled this side computes now, over every candidate measured recently."""
        factor = self._median(self._all, now, self.recent_s)
        return 1.0 if factor is None else factor

    def factor(self, candidate: str, now: float) -> float:
        """Multiply the candidate's profiled time on this side by this."""
        own = self._median(self._own.get(candidate, ()), now, self.memory_s)
        return self.general_factor(now) if own is None else own

    def factors(self, candidates: Iterable[str], now: float) -> dict[str, float]:
        return {name: self.factor(name, now) for name in candidates}

    def recent_samples(self, now: float) -> int:
        return sum(1 for t, _ in self._all if now - t <= self.recent_s)
