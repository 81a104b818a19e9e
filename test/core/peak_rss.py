"""Peak resident memory of this process over a piece of work (Linux /proc): the one measurement
behind the tests that prove a bad input cannot make the decoder allocate much."""
from __future__ import annotations

import re
from pathlib import Path


def vm_kib(field: str) -> int:
    """A /proc/self/status field in KiB (VmRSS: now, VmHWM: peak since the last reset)."""
    return int(re.search(rf"^{field}:\s+(\d+)", Path("/proc/self/status").read_text(), re.M).group(1))


def reset_peak() -> bool:
    """Reset the peak (VmHWM) to the current RSS; False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def growth_since(base_kib: int) -> float:
    """MiB the peak rose above `base_kib` (the RSS read right after reset_peak())."""
    return (vm_kib("VmHWM") - base_kib) / 1024


def peak_rss_growth_mib(fn) -> float:
    """Peak resident memory that fn() adds to this process (call only where reset_peak() works)."""
    if not reset_peak():
        raise OSError("cannot reset the peak RSS here (/proc/self/clear_refs)")
    base = vm_kib("VmRSS")
    fn()
    return growth_since(base)
