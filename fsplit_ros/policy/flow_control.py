"""Flow control on the uplink: few payloads on the link at once, never more than it clears quickly.

Why: a camera produces frames at its own rate whatever the link does. When the link slows down
(20 -> 0.5 Mbit/s with 23 kB image payloads is 4.6x oversubscribed), frames published anyway only
pile up in the radio's queue: latency grows by seconds, the queue overflows, and a dropped IP
fragment loses a whole payload that reliable DDS repairs only after its next heartbeat. The edge
then answers nothing for longer than the link timeout, and the robot falls back to `local`
although the link is up. So a new payload goes out only while
  * fewer than `max_frames` payloads are unanswered, and
  * a second one would still clear the link within `queue_budget_s` at the measured rate
    (in flight + next bytes) -- at low rates that means one payload at a time.
One payload may always go out when none is in flight, so a wrong (low) rate estimate cannot stall
the link. Newest frame wins: a held-back frame is skipped, never queued, so every payload arrives
in about bytes/rate and its feedback measures the new rate within a frame or two.

A payload is answered by the edge's FrameFeedback (decoded or rejected). One that is never answered
(lost in a cut, evicted from the edge's queue) frees its slot after `timeout_s` plus the time the
bytes in flight need at the rate measured NOW: a rate estimate taken before a drop would let a
slow payload "expire" while it is still crossing, and the next one would queue behind it.
"""
from __future__ import annotations


class InFlightWindow:
    def __init__(self, max_frames: int = 2, timeout_s: float = 2.0, queue_budget_s: float = 0.25):
        self.max_frames = max_frames     # 0 = no limit (and no byte rule)
        self.timeout_s = timeout_s
        self.queue_budget_s = queue_budget_s
        self._sent: dict[int, tuple[float, int]] = {}   # seq -> (publish time, bytes)
        self.held_back = 0

    def _expire(self, now: float, rate_bps: float):
        if not self._sent:
            return
        crossing = 8 * sum(b for _, b in self._sent.values()) / rate_bps if rate_bps > 0 else 0.0
        for seq in [s for s, (t, _) in self._sent.items() if now > t + self.timeout_s + crossing]:
            del self._sent[seq]

    def may_send(self, now: float, next_bytes: int = 0, rate_bps: float = 0.0) -> bool:
        """Whether a new payload of about `next_bytes` may go out now at the measured `rate_bps`
        (0 = unknown: only the frame count applies); counts the frames held back."""
        self._expire(now, rate_bps)
        if not self.max_frames or not self._sent:
            return True
        queued = sum(b for _, b in self._sent.values()) + next_bytes
        if len(self._sent) >= self.max_frames or (rate_bps > 0 and queued * 8 / rate_bps > self.queue_budget_s):
            self.held_back += 1
            return False
        return True

    def sent(self, seq: int, nbytes: int, now: float):
        self._sent[seq] = (now, nbytes)

    def answered(self, seq: int):
        """The edge answered payload `seq` (unknown seqs, e.g. another sender's, are ignored). Older
        payloads still unanswered never will be: the publisher keeps only the newest payload, so one
        not yet delivered when the next was published was replaced, and the edge answers in order.
        Holding their slots until the timeout stalled the robot for 2 s at 0.5 Mbit/s (issue 17)."""
        if seq in self._sent:
            for older in [s for s in self._sent if s <= seq]:
                del self._sent[older]

    def in_flight(self, now: float, rate_bps: float = 0.0) -> int:
        self._expire(now, rate_bps)
        return len(self._sent)
