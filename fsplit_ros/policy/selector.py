"""Pick the candidate with the lowest predicted latency, with hysteresis and a minimum dwell time
so noise in the measurements does not make the robot flap between modes.

Rules, in order: a pinned mode always wins; a link that stopped answering means `local` at once, and
so does one that answers again but whose rate is not measured yet; the current candidate is left at
once when it becomes forbidden or unsustainable; otherwise the best sustainable candidate replaces
it only when it is `hysteresis` faster and the current one has been kept for `min_dwell_s`. A candidate whose recorded fidelity is below `min_fidelity` is never
eligible (the learned bottleneck trades accuracy for bytes; this is where a user bounds that).
`local` is always eligible: it is the fallback that needs no link.
"""
from __future__ import annotations

from dataclasses import dataclass

from fsplit_ros.modes import LOCAL, candidate_mode
from fsplit_ros.policy.cost_model import Prediction


# The link monitor's default fidelity floor. It lies in the measured gap between the near-lossless
# paths (split tensors >= 99.5 %, the Lite0 bottleneck 96.6-97.9 %, PNG 100 % top-1 agreement on
# the held-out families) and lossy pixels (Lite0 JPEG q95 84-86 %), so sampling noise of a held-out
# set cannot move a configuration across it (fsplit_ros/profiling/fidelity.py; BENCHMARKS.md 1).
DEFAULT_MIN_FIDELITY = 0.9


def faithful(prediction: Prediction, min_fidelity: float) -> bool:
    """Whether a candidate may be chosen under the fidelity floor: unknown fidelity passes (the
    link monitor warns about those at start-up)."""
    return prediction.fidelity is None or prediction.fidelity >= min_fidelity


def preferred_modes(predictions: dict[str, Prediction], hysteresis: float, min_fidelity: float = 0.0) -> set[str]:
    """The modes a selector may settle in for these predictions: the fastest sustainable candidate
    above the fidelity floor (or `local`) and any other whose predicted latency is within the
    hysteresis band of it (the selector does not leave one of those for the other). Tests and
    benchmarks judge the monitor's choices at the true link rate by this."""
    eligible = {n: p for n, p in predictions.items()
                if n == LOCAL or (p.sustainable and faithful(p, min_fidelity))}
    best = min(p.latency_s for p in eligible.values())
    return {candidate_mode(n)[0] for n, p in eligible.items() if p.latency_s * (1 - hysteresis) <= best}


@dataclass(frozen=True)
class Decision:
    candidate: str
    reason: str
    changed: bool


class ModeSelector:
    def __init__(self, allowed_modes, pinned_mode: str = "", hysteresis: float = 0.15,
                 min_dwell_s: float = 2.0, link_timeout_s: float = 1.0, initial: str = LOCAL,
                 min_fidelity: float = 0.0):
        self.allowed_modes = set(allowed_modes) | {LOCAL}
        self.min_fidelity = min_fidelity
        self.pinned_mode = pinned_mode
        self.hysteresis = hysteresis
        self.min_dwell_s = min_dwell_s
        self.link_timeout_s = link_timeout_s
        self.current = initial
        self.since = float("-inf")   # the start-up mode is a placeholder: no dwell before the first choice

    def eligible(self, name: str, pred: Prediction, blocked=frozenset()) -> bool:
        mode = candidate_mode(name)[0]
        if name == LOCAL:
            return True
        return (mode in self.allowed_modes and mode not in blocked and pred.sustainable
                and faithful(pred, self.min_fidelity))

    def _switch(self, name: str, reason: str, now: float, forced: bool = False) -> Decision:
        """forced: the link made the choice (down, or not measured yet), not the predictions; the
        fallback starts no dwell, so the best mode is taken the moment the link is measured again
        (a 2 s dwell after a 0.7 s outage held image mode back 2 s in issue 17's benchmark)."""
        changed = name != self.current
        if changed:
            self.current, self.since = name, now
        if forced:
            self.since = float("-inf")
        return Decision(name, reason, changed)

    def update(self, predictions: dict[str, Prediction], since_last_reply_s: float, now: float,
               blocked=frozenset(), link_measured: bool = True) -> Decision:
        """`blocked`: modes the edge currently rejects (e.g. model mismatch), treated as forbidden.
        `link_measured` False: the link answers again after an outage but its rate is not measured
        yet (LinkEstimator.rate_known): stay in `local` for the few milliseconds until it is rather
        than commit, for min_dwell_s, to a mode chosen from a guess."""
        if self.pinned_mode:
            # Pinning a mode fixes what is sent, not the split point: the cost model still picks it.
            options = [n for n in predictions if candidate_mode(n)[0] == self.pinned_mode] or [LOCAL]
            pinned = min(options, key=lambda n: predictions[n].latency_s if n in predictions else 0.0)
            if self.current in options and pinned != self.current and now - self.since < self.min_dwell_s:
                pinned = self.current
            return self._switch(pinned, f"pinned to {self.pinned_mode}", now)
        if since_last_reply_s > self.link_timeout_s:
            return self._switch(LOCAL, f"link down: no reply for {since_last_reply_s:.1f} s", now, forced=True)
        if not link_measured:
            return self._switch(LOCAL, "link back: measuring its rate", now, forced=True)
        eligible = {n: p for n, p in predictions.items() if self.eligible(n, p, blocked)}
        best = min(eligible, key=lambda n: eligible[n].latency_s)
        current = predictions.get(self.current)
        if current is None or self.current not in eligible:
            why = ("blocked by the edge" if candidate_mode(self.current)[0] in blocked else
                   "unsustainable" if current is not None and not current.sustainable else
                   f"below min_fidelity {self.min_fidelity:g}" if current is not None and current.fidelity is not None
                   and current.fidelity < self.min_fidelity else "not allowed")
            return self._switch(best, f"{self.current} {why}", now)
        if best != self.current:
            faster = eligible[best].latency_s < (1.0 - self.hysteresis) * current.latency_s
            dwelled = now - self.since >= self.min_dwell_s
            if faster and dwelled:
                return self._switch(best, f"{best} predicted {eligible[best].explain()} vs {self.current} "
                                          f"{current.explain()}", now)
        return Decision(self.current, "keep", False)
