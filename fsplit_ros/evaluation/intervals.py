"""Confidence intervals for the fractions this project reports (agreement, accuracy)."""
from __future__ import annotations

import math


def wilson_interval(successes: float, trials: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval of a binomial proportion (95 % by default). Unlike the normal
    approximation it stays inside [0, 1] and is sensible at 0 % and 100 %. (nan, nan) for no trials.
    Frames of one video are not independent, so on video footage it is, if anything, too narrow."""
    if trials <= 0:
        return float("nan"), float("nan")
    p = successes / trials
    denom = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denom
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denom
    # at 0 % and 100 % one bound is exactly the observed proportion (rounding left 0.9999999999999998)
    lo, hi = max(0.0, centre - half), min(1.0, centre + half)
    return (0.0 if successes <= 0 else lo), (1.0 if successes >= trials else hi)


def format_interval(value: float, lo: float, hi: float, scale: float = 100.0, digits: int = 1) -> str:
    """'85.1 [83.0, 87.0]' (percent by default)."""
    return f"{scale * value:.{digits}f} [{scale * lo:.{digits}f}, {scale * hi:.{digits}f}]"
