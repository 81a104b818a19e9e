"""Flow control on the uplink: at most `max_frames` payloads on the link at once.

Why: a camera produces frames at its own rate whatever the link does. When the link slows down
(20 -> 0.5 Mbit/s with 23 kB image payloads is 4.6x oversubscribed), frames published anyway only
pile up in the radio's queue: latency grows by seconds, the queue overflows, and a dropped IP
fragment loses a whole payload that reliable DDS retransmits only after its next heartbeat. The
edge then answers nothing for longer than the link timeout, and the robot falls back to `local`
although the link is up. Holding newer frames back while `max_frames` payloads are unanswered
keeps the queue short, so every payload arrives in ~bytes/rate and its feedback measures the new
rate within a frame or two. Newest frame wins: a held-back frame is skipped, never queued.

A payload is answered by the edge's FrameFeedback (decoded or rejected). One that is never answered
(lost in a cut, evicted from the edge's queue) frees its slot after `timeout_s`.
"""
from __future__ import annotations


class InFlightWindow:
    def __init__(self, max_frames: int = 2, timeout_s: float = 2.0):
        self.max_frames = max_frames     # 0 = no limit
        self.timeout_s = timeout_s
        self._sent: dict[int, float] = {}   # seq -> publish time
        self.held_back = 0

    def _expire(self, now: float):
        for seq in [s for s, t in self._sent.items() if now - t > self.timeout_s]:
            del self._sent[seq]

    def may_send(self, now: float) -> bool:
        """Whether a new payload may go out now; counts the frames held back."""
        self._expire(now)
        if self.max_frames and len(self._sent) >= self.max_frames:
            self.held_back += 1
            return False
        return True

    def sent(self, seq: int, now: float):
        self._sent[seq] = now

    def answered(self, seq: int):
        """The edge answered payload `seq` (unknown seqs, e.g. another sender's, are ignored)."""
        self._sent.pop(seq, None)

    def in_flight(self, now: float) -> int:
        self._expire(now)
        return len(self._sent)
