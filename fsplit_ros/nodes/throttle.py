"""Log each kind of problem once per period, ROS-free. rclpy's `throttle_duration_sec` throttles
per call site, so when bad inputs of several kinds arrive together one kind hides the others;
this keeps one line per kind (with how many were dropped silently since) and counts them all."""
from __future__ import annotations

import time


class PerKindThrottle:
    def __init__(self, period_s: float = 10.0, clock=time.monotonic):
        self.period_s = period_s
        self.clock = clock
        self.counts: dict[str, int] = {}                  # kind -> events so far
        self._logged: dict[str, tuple[float, int]] = {}   # kind -> (last logged at, count then)

    def note(self, kind: str) -> str | None:
        """Count one event of `kind`. Returns None to stay quiet, or the suffix for the line to
        log now: '' the first time, ' [N more since]' after a quiet period."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        now = self.clock()
        last = self._logged.get(kind)
        if last is not None and now - last[0] < self.period_s:
            return None
        suppressed = self.counts[kind] - last[1] - 1 if last else 0
        self._logged[kind] = (now, self.counts[kind])
        return f" [{suppressed} more since]" if suppressed else ""
