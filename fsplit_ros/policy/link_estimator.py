"""Estimate the uplink rate and the round-trip time from what actually crosses the link.

Samples come from two sources, both timed on the robot's own clock:
  * probes: a tiny probe's echo time is the RTT; a padded probe's extra time is padding/rate;
  * payload feedback: (feedback arrival - publish time) - edge residence - RTT = bytes/rate.
Rate is the windowed ratio sum(bytes)/sum(transfer seconds), robust to single outliers.
"""
from __future__ import annotations

from collections import deque


class LinkEstimator:
    def __init__(self, window_s: float = 2.0, initial_rate_bps: float = 1e6, initial_rtt_s: float = 0.05,
                 min_transfer_s: float = 1e-4):
        self.window_s = window_s
        self._transfers: deque = deque()   # (t, bytes, seconds)
        self._rtts: deque = deque()        # (t, rtt)
        self._rate = initial_rate_bps
        self._rtt = initial_rtt_s
        self.min_transfer_s = min_transfer_s
        self.last_reply: float | None = None

    def _trim(self, now: float):
        for q in (self._transfers, self._rtts):
            while q and now - q[0][0] > self.window_s and len(q) > 1:
                q.popleft()

    def add_rtt(self, rtt_s: float, now: float):
        self.last_reply = now
        if rtt_s > 0:
            self._rtts.append((now, rtt_s))
            self._trim(now)

    def add_transfer(self, nbytes: int, seconds: float, now: float):
        """A message of nbytes spent `seconds` on the link (propagation and edge time removed)."""
        self.last_reply = now
        if nbytes > 0:
            self._transfers.append((now, nbytes, max(seconds, self.min_transfer_s)))
            self._trim(now)

    def add_feedback(self, nbytes: int, publish_t: float, arrival_t: float, edge_residence_s: float):
        """Payload feedback from the edge: derive the transfer time and record it."""
        transfer = arrival_t - publish_t - edge_residence_s - self.rtt_s
        self.add_transfer(nbytes, transfer, arrival_t)

    @property
    def rtt_s(self) -> float:
        if self._rtts:
            self._rtt = min(r for _, r in self._rtts)   # queueing only ever adds delay
        return self._rtt

    @property
    def rate_bps(self) -> float:
        if self._transfers:
            total_bytes = sum(b for _, b, _ in self._transfers)
            total_s = sum(s for _, _, s in self._transfers)
            self._rate = 8.0 * total_bytes / total_s
        return self._rate

    def since_last_reply(self, now: float) -> float:
        return float("inf") if self.last_reply is None else now - self.last_reply
