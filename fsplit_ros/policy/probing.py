"""How big the link monitor's next probe is: the padded-probe budget.

A tiny probe (RTT, liveness) goes out every period; a padded probe, sent after it, measures the rate
while no payload traffic does it for us (e.g. in `local` mode). Padding never replaces the tiny
probe: on a fast link the budget allows a padded probe every period, and when they were sent instead
of the tiny ones the RTT was never measured once the first tiny echoes were lost (the edge still
booting), so it stayed at the 50 ms prior and made offloading look 25 ms slower than it is. Padded
probes' bytes come from a credit that accrues at `max_fraction` of the measured rate, so probing stays
within that fraction however slow the link; one goes out once the credit reaches `min_padding` (at
0.25 Mbit/s and 5 %: every 2 s). A padded probe must span several packets: a single packet passes
any shaper's burst (and a radio's aggregation) at once and measures only the round trip. Sizes grow
by slow start (doubling per answered padded probe, back to the minimum after one was lost).

The budget is computed from at least `floor_bps` (0.25 Mbit/s, the slowest, BLE-like link fsplit
targets): a rate underestimated after an outage (the first probe queued behind the old backlog) must
not starve the probing that would correct it. Below the floor the robot is in `local` mode and the
probes are the only traffic it sends."""
from __future__ import annotations

from fsplit_ros.policy.link_estimator import MIN_RATE_SAMPLE_BYTES

MAX_PROBE_PADDING = 64 * 1024
MIN_PROBE_PADDING = MIN_RATE_SAMPLE_BYTES
BUDGET_FLOOR_BPS = 250_000


class ProbeBudget:
    def __init__(self, max_fraction: float = 0.05, min_padding: int = MIN_PROBE_PADDING,
                 max_padding: int = MAX_PROBE_PADDING, floor_bps: float = BUDGET_FLOOR_BPS):
        self.max_fraction = max_fraction
        self.floor_bps = floor_bps
        self.min_padding, self.max_padding = min_padding, max_padding
        self.credit = 0.0
        self.size = min_padding
        self.outstanding = False      # the last padded probe has not been answered yet

    def probes(self, rate_bps: float, period_s: float, payloads_flowing: bool) -> list[int]:
        """Padding sizes of the probes to send now, in order: always a tiny one (0), then a padded
        one when the budget allows."""
        padding = self.padding(rate_bps, period_s, payloads_flowing)
        return [0, padding] if padding else [0]

    def padding(self, rate_bps: float, period_s: float, payloads_flowing: bool) -> int:
        """Padding bytes for the probe sent now (0 = a tiny probe). `payloads_flowing`: payloads big
        enough to measure the rate (LinkEstimator.measures_rate) arrived recently."""
        if payloads_flowing:
            self.credit = 0.0         # payloads measure the link; no probe burst saved up for later
            return 0
        accrual = self.max_fraction * max(rate_bps, self.floor_bps) / 8.0 * period_s
        self.credit = min(self.credit + accrual, float(self.max_padding))
        if self.credit < self.min_padding:
            return 0
        if self.outstanding:          # the previous padded probe was lost: start small again
            self.size = self.min_padding
        padding = int(min(self.size, self.credit))
        self.credit -= padding
        self.outstanding = True
        return padding

    def answered(self) -> None:
        """The last padded probe's echo arrived."""
        self.outstanding = False
        self.size = min(2 * self.size, self.max_padding)
