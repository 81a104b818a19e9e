"""Robot-to-edge link emulation with Linux network namespaces, a veth pair and tc (needs root)."""
from fsplit_ros.linkemu.netns import EmulatedLink, LinkEmulationUnavailable, parse_trace

__all__ = ["EmulatedLink", "LinkEmulationUnavailable", "parse_trace"]
