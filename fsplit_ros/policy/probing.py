"""What the link monitor probes the link with: a tiny probe every period, and packet trains.

A tiny probe (RTT, liveness) goes out every period. The rate is measured by a *train*: a few padded
probes published back to back, whose arrival times at the edge (LinkProbe.received_stamp, edge clock)
are spaced by the time the link needs for each one. A single message cannot measure a rate: a
shaper's token bucket, a radio's aggregation and the sender's socket buffer let its first bytes pass
at once, so one 24 KB probe read a 20 Mbit/s tbf link as 31-36 Mbit/s (issue 17). In a train, the
burst is spent on the first members; the spacing of the later ones is the link's rate
(LinkEstimator.add_train uses the second half). A train is sized to TRAIN_S of link time at the
current estimate, at least MIN_TRAIN_MEMBERS packets of MEMBER_MIN_BYTES, so its second half still
spans several milliseconds at the estimated rate and each member fills a packet at low rates.

Trains cost bytes: they come from a credit that accrues at `max_fraction` of the estimated rate
(at least `floor_bps`, the slowest link fsplit targets, so a rate underestimated after an outage
cannot starve the probing that would correct it), and pause while payloads measure the link
themselves (backlogged payloads: LinkEstimator.payloads_measure). Two cases skip the credit,
because the estimate is known to be stale and a train settles it at once (`train_wanted`): the
link's first reply ever or the first after an outage (LinkEstimator.outages), and a train that
only bounded the rate (LinkEstimator.unresolved_trains). The train after an outage is sized for the
conservative estimate: on a link restored slower than before, a train sized for the old rate would
queue for seconds and look like the next outage. On a faster link it passes inside the burst
and only bounds the rate from below; the estimate jumps to that bound and the next train, sized for
it, measures: a restored link is measured within a few periods instead of crawling up by slow start
from a small probe (3.01 s to recover in one run, issue 17).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fsplit_ros.policy.link_estimator import LinkEstimator

# One padded probe per packet at low rates: the payload of a 1500-byte Ethernet frame after the IP,
# UDP and RTPS headers and the LinkProbe fields (a 1,400-byte padding made a 1,490-byte frame).
MEMBER_MIN_BYTES = 1_400
MIN_TRAIN_MEMBERS = 2
MAX_TRAIN_MEMBERS = 4
TRAIN_S = 0.020                      # link time of one train at the estimated rate
MAX_MEMBER_BYTES = 64 * 1024         # the edge drops probes over 256 KiB (decoder_node.MAX_PROBE_BYTES)
BUDGET_FLOOR_BPS = 250_000


def train_sizes(rate_bps: float, train_s: float = TRAIN_S) -> list[int]:
    """Padding of each member of a train sized for rate_bps: TRAIN_S of link time, 2-4 members of
    at least one packet each, at most MAX_MEMBER_BYTES each."""
    total = rate_bps * train_s / 8.0
    members = max(MIN_TRAIN_MEMBERS, min(MAX_TRAIN_MEMBERS, int(total // MEMBER_MIN_BYTES)))
    each = int(min(MAX_MEMBER_BYTES, max(MEMBER_MIN_BYTES, total / members)))
    return [each] * members


@dataclass
class _Train:
    sizes: dict[int, int]                                     # seq -> padding bytes
    received: dict[int, float] = field(default_factory=dict)  # seq -> edge arrival (edge clock)
    sent_t: float = 0.0


class LinkProber:
    """The link monitor's probing, ROS-free: which probes to publish each period (`due`, then `sent`
    with their sequence numbers) and what each echo tells the estimator (`echoed`)."""

    def __init__(self, estimator: LinkEstimator, max_fraction: float = 0.05, floor_bps: float = BUDGET_FLOOR_BPS,
                 rtt_timeout_s: float = 0.6, train_timeout_s: float = 2.0):
        """rtt_timeout_s: a tiny probe's echo later than this is stale (the link timeout); a train
        member's may come later (its spacing at the edge is what counts), up to train_timeout_s."""
        self.estimator = estimator
        self.max_fraction = max_fraction
        self.floor_bps = floor_bps
        self.rtt_timeout_s = rtt_timeout_s
        self.train_timeout_s = train_timeout_s
        self.credit = 0.0
        self._outages_answered = self._bounds_answered = 0
        self._due: list[int] = []
        self._sent: dict[int, tuple[float, int]] = {}            # seq -> (sent at, padding)
        self._trains: dict[int, _Train] = {}                      # first seq -> train (one, rarely two)
        self.trains_sent = self.trains_lost = 0

    def train_wanted(self) -> bool:
        """The estimate is known to be stale: the link answered for the first time (or the first time
        after an outage), or the last train passed inside the burst and only bounded the rate. The
        next due() sends a train whatever the credit; the link monitor calls it at once."""
        est = self.estimator
        return est.outages != self._outages_answered or est.unresolved_trains != self._bounds_answered

    def due(self, period_s: float, now: float) -> list[int]:
        """Paddings of the probes to publish now, in order: a tiny one (0), then a train's members
        when one is due."""
        self._expire(now)
        est = self.estimator
        if self.train_wanted():     # the link answered after an outage, or a train only bounded the rate
            self._outages_answered, self._bounds_answered = est.outages, est.unresolved_trains
            sizes = train_sizes(est.rate_bps)
        elif est.payloads_measure(now) or self.max_fraction <= 0:
            self.credit, sizes = 0.0, []   # payloads measure the link: no probe burst saved up for later
        else:
            sizes = train_sizes(est.rate_bps)
            accrual = self.max_fraction * max(est.rate_bps, self.floor_bps) / 8.0 * period_s
            self.credit = min(self.credit + accrual, 2.0 * sum(sizes))
            if self.credit < sum(sizes) or self._trains:   # one train on the link at a time
                sizes = []
            else:
                self.credit -= sum(sizes)
        self._due = [0] + sizes
        return list(self._due)

    def sent(self, seqs: list[int], now: float) -> None:
        """The probes due() returned went out with these sequence numbers."""
        members = {}
        for seq, padding in zip(seqs, self._due):
            self._sent[seq] = (now, padding)
            if padding:
                members[seq] = padding
        self._due = []
        if members:
            self._trains[min(members)] = _Train(members, sent_t=now)
            self.trains_sent += 1
            self.estimator.train_sent(sum(members.values()), now)
        while len(self._sent) > 256:
            self._sent.pop(next(iter(self._sent)))

    def echoed(self, seq: int, edge_received_t: float, now: float) -> None:
        """An echo arrived at `now` (robot clock); the edge had received the probe at edge_received_t."""
        sent_t, padding = self._sent.pop(seq, (None, 0))
        if sent_t is None or now < sent_t:
            return                                   # unknown, answered already, or not ours
        if not padding:
            if now - sent_t <= self.rtt_timeout_s:
                self.estimator.add_rtt(now - sent_t, now)
            self._lost_before(seq)
            return
        first = next((f for f, train in self._trains.items() if seq in train.sizes), None)
        if first is None:
            return                                   # its train was given up
        train = self._trains[first]
        if edge_received_t <= 0.0:       # an echo without the edge's stamp: no spacing to read
            self._forget(first)
            return
        train.received[seq] = edge_received_t
        if len(train.received) == len(train.sizes):
            del self._trains[first]
            order = sorted(train.sizes)
            self.estimator.add_train([train.sizes[s] for s in order], [train.received[s] for s in order], now)

    def _lost_before(self, seq: int) -> None:
        """A probe sent after a train came back before all of it: the link delivers in order, so the
        missing members were lost (a queue that overflowed when the rate dropped)."""
        for first, train in list(self._trains.items()):
            if max(train.sizes) < seq:
                self._forget(first)

    def _forget(self, first: int) -> None:
        del self._trains[first]
        self.trains_lost += 1

    def _expire(self, now: float) -> None:
        """A train with a member unanswered for train_timeout_s was lost (cut, queue overflow):
        forget it so the next can go out."""
        for first, train in list(self._trains.items()):
            if now - train.sent_t > self.train_timeout_s:
                self._forget(first)
