"""Estimate the uplink rate and the round-trip time from what actually crosses the link.

The rate comes from *dispersion*: how far apart the edge received messages that sat back to back on
the link (differences of edge-clock stamps, so robot and edge clocks need not agree):
  * probe trains (policy/probing.py): the second half of a train, after its first members spent
    whatever burst the link allows;
  * payloads that queued behind the previous payload (published before it had arrived): their
    bytes over the gap between the two arrivals. That is what a backlogged sender sees: the rate.
A single message's own transfer time is not a rate: bursts (a shaper's token bucket, a radio's
aggregation, socket buffers) let its first bytes through at once, and delays nothing accounts for
(DDS threads, a busy CPU) add to it. Timed alone, 24 KB probes read a 20 Mbit/s link 1.5-1.7x high
and 4.5 KB payloads a 1 Mbit/s link 15-30 % low (issue 17). A lone payload is used for one thing:
one that took far longer than the estimate allows (below DROP_FACTOR of it) proves the link slowed
down, and replaces the samples at once (a burst only ever makes a message look faster).
A train that arrived faster than MIN_DISPERSION_S (all of it inside the burst) only says the link
is at least that fast: the estimate rises to that bound and the next train, sized for it, measures.

Rate = sum(bytes) / sum(seconds) over the newest `max_samples` samples inside the window: a few
samples follow a rate step within a train or two, and the ratio of sums is robust to one odd sample.
After an outage (no reply for `outage_s`) the samples say nothing about the link now: they are
dropped, and for up to `remeasure_s` the rate counts as unknown (`rate_known`) so the policy can
wait for the train the link monitor sends at once (LinkProber.train_wanted) instead of choosing
from a guess; after that the estimate is the conservative prior, never above the rate before.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

# A lone payload shorter than this says nothing about the rate, even when it looks slow: scheduling
# delays of a few milliseconds on a busy CPU would read as a slow link.
MIN_RATE_SAMPLE_S = 0.010
# ...and must span several packets (one packet passes any burst at once).
MIN_RATE_SAMPLE_BYTES = 3000
# A lone payload slower than this fraction of the estimate proves a drop (bursts only speed up).
DROP_FACTOR = 0.5
# Spacing the edge's reception stamps resolve; a train arriving faster is only a lower bound.
MIN_DISPERSION_S = 0.001
MAX_RATE_BPS = 10e9
# A payload published this long before the previous one had arrived queued behind it on the link.
QUEUED_MARGIN_S = 0.002
# Payload dispersion this recent lets the probe trains pause (payloads_measure).
PAYLOAD_MEASURE_S = 1.0


class LinkEstimator:
    def __init__(self, window_s: float = 2.0, initial_rate_bps: float = 1e6, initial_rtt_s: float = 0.05,
                 max_transfer_s: float = 5.0, outage_s: float = 0.6, max_samples: int = 4,
                 remeasure_s: float = 1.0, record: Callable[[dict], None] | None = None):
        """record: called with every input (a dict), to save timing traces for replay in tests."""
        self.window_s = window_s
        self.max_samples = max_samples
        self.initial_rate_bps = initial_rate_bps
        self.max_transfer_s = max_transfer_s
        self.outage_s = outage_s
        self.remeasure_s = remeasure_s
        self.record = record
        self._samples: deque = deque()     # (t, bytes, seconds, source)
        self._rtts: deque = deque()        # (t, rtt)
        self._rate = initial_rate_bps
        self._rtt = initial_rtt_s
        self.last_reply: float | None = None
        self._outage_end = float("-inf")
        self._measured_since_outage = False
        self.outages = 0                   # ended outages (the link monitor sends a train on each)
        self.unresolved_trains = 0         # trains that only bounded the rate (it sends another at once)
        self._prev_end = float("-inf")     # previous payload's arrival, robot clock (estimated)
        self._prev_edge_t: float | None = None
        self._last_payload_sample = float("-inf")
        self._prev_publish = float("-inf")
        self._trains_sent: deque = deque(maxlen=8)   # (sent, occupies the link until: estimated)

    # --- inputs --------------------------------------------------------------------------------

    def add_rtt(self, rtt_s: float, now: float) -> None:
        """A tiny probe's round trip (0 = only a sign of life, e.g. a rejected payload's feedback)."""
        self._note("rtt", now, rtt_s=rtt_s)
        self._reply(now)
        if rtt_s > 0:
            self._rtts.append((now, rtt_s))
            self._trim(self._rtts, now)

    def add_train(self, sizes: Sequence[int], edge_times: Sequence[float], now: float) -> None:
        """Every member of a probe train was echoed: paddings and edge arrival times in send order."""
        self._note("train", now, sizes=list(sizes), edge_times=list(edge_times))
        self._reply(now)
        n = len(sizes)
        if n < 2 or len(edge_times) != n:
            return
        half = n // 2
        nbytes, span = sum(sizes[half:]), edge_times[-1] - edge_times[half - 1]
        if span < 0:
            return                          # reordered: no spacing to read
        if span < MIN_DISPERSION_S:
            bound = min(MAX_RATE_BPS, 8.0 * sum(sizes[1:]) / MIN_DISPERSION_S)
            if bound > self.rate_bps:       # "at least this fast": the next train, sized for it, measures
                self._samples.clear()
                self._rate = bound
                self._measured_since_outage = True
                self.unresolved_trains += 1
            return
        self._add_sample(now, nbytes, span, "train")

    def train_sent(self, nbytes: int, now: float) -> None:
        """A probe train of nbytes went out: payloads behind it wait for it (not a slower link), and
        payloads either side of it are not back to back."""
        self._note("train_sent", now, nbytes=nbytes)
        busy = max(self._trains_sent[-1][1], now) if self._trains_sent else now
        self._trains_sent.append((now, busy + 8.0 * nbytes / self.rate_bps))

    def add_feedback(self, nbytes: int, publish_t: float, arrival_t: float, edge_residence_s: float,
                     edge_received_t: float) -> None:
        """Payload feedback: published at publish_t and answered at arrival_t (robot clock), received
        by the edge at edge_received_t (edge clock) and kept there edge_residence_s."""
        self._note("feedback", arrival_t, nbytes=nbytes, publish_t=publish_t,
                   edge_residence_s=edge_residence_s, edge_received_t=edge_received_t)
        self._reply(arrival_t)
        if publish_t < self._outage_end:    # published before or during an outage: it queued there
            return
        half_rtt = self.rtt_s / 2
        end = arrival_t - edge_residence_s - half_rtt          # its last byte arrived (robot clock)
        start = publish_t + half_rtt                           # its first byte could arrive
        last_train = self._trains_sent[-1][0] if self._trains_sent else float("-inf")
        queued = (self._prev_edge_t is not None and start < self._prev_end - QUEUED_MARGIN_S
                  and not self._prev_publish <= last_train <= publish_t)
        gap = edge_received_t - self._prev_edge_t if self._prev_edge_t is not None else 0.0
        self._prev_end, self._prev_edge_t, self._prev_publish = end, edge_received_t, publish_t
        if queued and gap > 0 and nbytes >= MIN_RATE_SAMPLE_BYTES:
            self._add_sample(arrival_t, nbytes, gap, "payload")
            self._last_payload_sample = arrival_t
            return
        busy_until = max((until for sent, until in self._trains_sent if sent <= publish_t), default=start)
        alone = end - max(start, busy_until)
        if (nbytes >= MIN_RATE_SAMPLE_BYTES and MIN_RATE_SAMPLE_S <= alone <= self.max_transfer_s
                and 8.0 * nbytes / alone < DROP_FACTOR * self.rate_bps):
            self._samples.clear()           # the link slowed down: older samples describe another link
            self._add_sample(arrival_t, nbytes, alone, "drop")

    # --- outputs -------------------------------------------------------------------------------

    @property
    def rtt_s(self) -> float:
        if self._rtts:
            self._rtt = min(r for _, r in self._rtts)   # queueing only ever adds delay
        return self._rtt

    @property
    def rate_bps(self) -> float:
        if self._samples:
            recent = list(self._samples)[-self.max_samples:]
            self._rate = 8.0 * sum(s[1] for s in recent) / sum(s[2] for s in recent)
        return self._rate

    def rate_known(self, now: float) -> bool:
        """False from the end of an outage until the link was measured again (or remeasure_s passed)."""
        return self._measured_since_outage or now - self._outage_end > self.remeasure_s

    def payloads_measure(self, now: float) -> bool:
        """Backlogged payloads measured the link recently: probe trains may pause."""
        return now - self._last_payload_sample <= PAYLOAD_MEASURE_S

    def sample_count(self) -> int:
        return len(self._samples)

    def since_last_reply(self, now: float) -> float:
        return float("inf") if self.last_reply is None else now - self.last_reply

    # --- internals -----------------------------------------------------------------------------

    def _note(self, kind: str, now: float, **fields) -> None:
        if self.record is not None:
            self.record({"kind": kind, "t": now, **fields})

    def _reply(self, now: float) -> None:
        """A reply after a silence longer than `outage_s` (or the first ever) ends an outage."""
        if self.last_reply is None or now - self.last_reply > self.outage_s:
            if self.last_reply is not None:
                # Unknown again: never ABOVE what was measured before (a slow link whose payloads
                # take longer than outage_s looks like a string of outages).
                self._rate = min(self.rate_bps, self.initial_rate_bps)
            self._samples.clear()
            self._outage_end = now
            self._measured_since_outage = False
            self._prev_end, self._prev_edge_t = float("-inf"), None
            self.outages += 1
        self.last_reply = now

    def _add_sample(self, now: float, nbytes: int, seconds: float, source: str) -> None:
        if seconds > self.max_transfer_s:
            return                          # queued across a cut: stale
        if source != "drop":   # a lone payload only bounds the rate from above: dispersion replaces it
            self._samples = deque(x for x in self._samples if x[3] != "drop")
        self._samples.append((now, nbytes, seconds, source))
        self._measured_since_outage = True
        self._trim(self._samples, now)

    def _trim(self, queue: deque, now: float) -> None:
        """Drop entries older than the window, keeping the newest (the best there is)."""
        while len(queue) > 1 and now - queue[0][0] > self.window_s:
            queue.popleft()
