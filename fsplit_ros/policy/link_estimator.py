"""Estimate the uplink rate and the round-trip time from what actually crosses the link.

Samples come from two sources, both timed on the robot's own clock:
  * probes: a tiny probe's echo time is the RTT; a padded probe's extra time is padding/rate;
  * payload feedback: the payload finished arriving at the edge at
    end = feedback arrival - edge residence - RTT/2, and could not start arriving before it was
    published (+RTT/2) nor before the previous payload had arrived; end - start = bytes/rate.
    Taking the previous payload's end out removes queueing, which is delay, not rate.
Rate is the ratio sum(bytes)/sum(transfer seconds) over the newest `max_samples` samples inside the
window: a few samples react to a rate step within a few frames in both directions (a long window
would hold a rise back until the old samples expire), and the ratio of sums stays robust to one
odd sample. Samples older than the window, or that spent longer than `max_transfer_s` (stale:
queued across a link cut), are dropped, and so are messages smaller than `min_sample_bytes` (they
only prove the link is up).
"""
from __future__ import annotations

from collections import deque

# A message must span several packets to measure a rate: one packet passes any shaper's burst (and
# a radio's aggregation) at once, so its transfer time says "fast" whatever the link's rate.
MIN_RATE_SAMPLE_BYTES = 3000    # > 2 Ethernet frames
# ...and must take long enough at the estimated rate that the few milliseconds of delay nothing
# accounts for (DDS send and receive threads, scheduling on a busy CPU) do not dominate: 4.5 KB
# detector payloads measured a 20 Mbit/s link at 4-5 Mbit/s and, counted as measuring, stopped
# the probes that would have shown it faster.
MIN_RATE_SAMPLE_S = 0.010


class LinkEstimator:
    def __init__(self, window_s: float = 2.0, initial_rate_bps: float = 1e6, initial_rtt_s: float = 0.05,
                 min_transfer_s: float = 1e-4, max_transfer_s: float = 5.0, outage_s: float = 0.6,
                 max_samples: int = 4, min_sample_bytes: int = MIN_RATE_SAMPLE_BYTES):
        self.window_s = window_s
        self.max_samples = max_samples
        self.min_sample_bytes = min_sample_bytes
        self._transfers: deque = deque()   # (t, bytes, seconds)
        self._rtts: deque = deque()        # (t, rtt)
        self.initial_rate_bps = initial_rate_bps
        self._rate = initial_rate_bps
        self._rtt = initial_rtt_s
        self.min_transfer_s = min_transfer_s
        self.max_transfer_s = max_transfer_s
        self.last_reply: float | None = None
        self._prev_end = float("-inf")
        self.outage_s = outage_s
        self._outage_end = float("-inf")

    def _reply(self, now: float):
        """A reply after a silence longer than `outage_s` ends an outage: what was measured before
        it, and payloads published during it (queued, then retransmitted), say nothing about the
        link now."""
        if self.last_reply is not None and now - self.last_reply > self.outage_s:
            self._transfers.clear()
            # Unknown again: start from the conservative prior, but never ABOVE what was measured
            # before. A slow link whose payloads take longer than outage_s looks like a string of
            # outages; raising its estimate to the prior each time would size probes (and the
            # encoder's flow control) for a link 4x faster than it is.
            self._rate = min(self.rate_bps, self.initial_rate_bps)
            self._outage_end = now
        self.last_reply = now

    def _trim(self, now: float):
        for q in (self._transfers, self._rtts):
            while q and now - q[0][0] > self.window_s and len(q) > 1:
                q.popleft()

    def add_rtt(self, rtt_s: float, now: float):
        self._reply(now)
        if rtt_s > 0:
            self._rtts.append((now, rtt_s))
            self._trim(now)

    def add_transfer(self, nbytes: int, seconds: float, now: float):
        """A message of nbytes spent `seconds` on the link (propagation and edge time removed)."""
        self._reply(now)
        if nbytes >= max(1, self.min_sample_bytes) and seconds <= self.max_transfer_s:
            self._transfers.append((now, nbytes, max(seconds, self.min_transfer_s)))
            self._trim(now)

    def add_feedback(self, nbytes: int, publish_t: float, arrival_t: float, edge_residence_s: float):
        """Payload feedback from the edge: derive the transfer time and record it."""
        if publish_t < self._outage_end:
            self._reply(arrival_t)
            return
        half_rtt = self.rtt_s / 2
        end = arrival_t - edge_residence_s - half_rtt
        start = max(publish_t + half_rtt, self._prev_end)
        self._prev_end = end
        self.add_transfer(nbytes, end - start, arrival_t)

    def measures_rate(self, nbytes: int) -> bool:
        """Whether payloads of nbytes measure the link well enough that probes may pause: big enough
        to be a rate sample and to take MIN_RATE_SAMPLE_S at the current estimate (on a slow link
        every sample-sized payload does; on a fast one only large ones)."""
        return nbytes >= max(self.min_sample_bytes, self.rate_bps * MIN_RATE_SAMPLE_S / 8.0)

    @property
    def rtt_s(self) -> float:
        if self._rtts:
            self._rtt = min(r for _, r in self._rtts)   # queueing only ever adds delay
        return self._rtt

    @property
    def rate_bps(self) -> float:
        if self._transfers:
            recent = list(self._transfers)[-self.max_samples:]
            total_bytes = sum(b for _, b, _ in recent)
            total_s = sum(s for _, _, s in recent)
            self._rate = 8.0 * total_bytes / total_s
        return self._rate

    def sample_count(self) -> int:
        return len(self._transfers)

    def since_last_reply(self, now: float) -> float:
        return float("inf") if self.last_reply is None else now - self.last_reply
