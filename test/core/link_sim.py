"""A token-bucket uplink for the estimator's unit tests: what tc's tbf (and, with a big bucket, a
radio that aggregates) does to messages sent back to back.

Messages queue FIFO; the bucket holds up to `burst_bytes` of tokens refilled at the rate, and a
message's bytes leave as tokens allow, so the first bytes after an idle spell pass at once. Each
message arrives `delay_s` after its last byte left.
"""
from __future__ import annotations


class TokenBucketLink:
    def __init__(self, rate_bps: float, burst_bytes: float | None = None, delay_s: float = 0.005,
                 overhead_bytes: int = 60, max_wait_s: float = 1.0, jitter_s: float = 0.0, seed: int = 0):
        """max_wait_s: a message that would wait longer in the queue is dropped (tbf's latency);
        jitter_s: each arrival is stamped up to this much late (receive threads, a busy CPU)."""
        import random
        self.max_wait_s = max_wait_s
        self.jitter_s = jitter_s
        self._random = random.Random(seed)
        self.rate_bps = rate_bps
        # tc tbf's bucket as fsplit_ros.linkemu sizes it: 5 ms of the rate, at least one frame
        self._tbf_burst = burst_bytes is None       # resized with the rate, as linkemu does
        self.burst_bytes = self._tbf(rate_bps) if burst_bytes is None else burst_bytes
        self.delay_s = delay_s
        self.overhead_bytes = overhead_bytes        # headers per message (IP, UDP, RTPS)
        self._tokens = self.burst_bytes
        self._t = 0.0                               # time the bucket was last brought up to date
        self._free_at = 0.0                         # the previous message's last byte left then
        self.up = True                              # False: cut, every message is lost

    @staticmethod
    def _tbf(rate_bps: float) -> float:
        return max(rate_bps / 8 / 250 * 1.25, 1600)

    def set_rate(self, rate_bps: float, now: float) -> None:
        self._refill(max(now, self._t))
        self.rate_bps = rate_bps
        if self._tbf_burst:
            self.burst_bytes = self._tbf(rate_bps)
            self._tokens = min(self._tokens, self.burst_bytes)

    def _refill(self, t: float) -> None:
        self._tokens = min(self.burst_bytes, self._tokens + (t - self._t) * self.rate_bps / 8)
        self._t = t

    def send(self, nbytes: int, now: float) -> float | None:
        """A message of nbytes handed to the link at `now`: returns when it arrives (None: lost)."""
        if not self.up:
            return None
        start = max(now, self._free_at)
        if start - now > self.max_wait_s:
            return None
        self._refill(max(start, self._t))
        need = nbytes + self.overhead_bytes
        if self._tokens >= need:
            self._tokens -= need
            done = self._t
        else:
            done = self._t + (need - self._tokens) * 8 / self.rate_bps
            self._tokens, self._t = 0.0, done
        self._free_at = done
        return done + self.delay_s + self._random.uniform(0.0, self.jitter_s)


def run_monitor(link: TokenBucketLink, seconds: float, payload_bytes: int = 0, fps: float = 10.0,
                events=(), period_s: float = 0.2, residence_s: float = 0.005, sample_s: float = 0.1):
    """The link monitor's probing (LinkProber) and an encoder's payloads (flow-controlled by
    InFlightWindow, as encoder_node does) over `link` for `seconds` of simulated time; feedback and
    echoes return after the link's delay. events: [(t, fn)] with fn(link, t) (rate steps, cuts).
    Returns the estimator, the prober and [(t, rate_bps, measured)] every sample_s (measured: the
    link answers and its rate is known)."""
    import heapq
    import itertools

    from fsplit_ros.policy import InFlightWindow, LinkEstimator, LinkProber
    est = LinkEstimator(window_s=1.0, outage_s=0.6, max_samples=4)
    prober = LinkProber(est, max_fraction=0.05, rtt_timeout_s=0.6)
    window = InFlightWindow()
    order = itertools.count()
    queue: list = []

    def at(t, kind, *data):
        heapq.heappush(queue, (t, next(order), kind, data))

    for k in range(int(seconds / period_s)):
        at(k * period_s, "probe")
    if payload_bytes:
        for k in range(int(seconds * fps)):
            at(0.03 + k / fps, "frame")
    for k in range(int(seconds / sample_s)):
        at(k * sample_s + 1e-6, "sample")
    for t, fn in events:
        at(t, "event", fn)
    seq, samples = itertools.count(1), []
    while queue:
        t, _, kind, data = heapq.heappop(queue)
        if kind == "event":
            data[0](link, t)
        elif kind == "sample":
            samples.append((t, est.rate_bps, est.rate_known(t) and est.since_last_reply(t) <= est.outage_s))
        elif kind == "probe":
            paddings = prober.due(period_s, t)
            seqs = [next(seq) for _ in paddings]
            prober.sent(seqs, t)
            for s, padding in zip(seqs, paddings):
                arrival = link.send(padding + 40, t)
                if arrival is not None:
                    at(arrival + link.delay_s, "echo", s, arrival)
        elif kind == "echo":
            prober.echoed(data[0], data[1], t)
            if prober.train_wanted():       # as link_monitor_node.on_echo
                at(t, "probe")
        elif kind == "frame":
            if window.may_send(t, payload_bytes, est.rate_bps):
                s = next(seq)
                window.sent(s, payload_bytes, t)
                arrival = link.send(payload_bytes, t)
                if arrival is not None:
                    at(arrival + residence_s + link.delay_s, "feedback", s, t, arrival)
        elif kind == "feedback":
            s, published, edge_t = data
            window.answered(s)
            est.add_feedback(payload_bytes, published, t, residence_s, edge_t)
    return est, prober, samples
