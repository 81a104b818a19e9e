"""Two network namespaces (robot, edge) joined by a veth pair whose robot->edge and edge->robot
directions are shaped with tc (tbf rate; netem delay and loss where the kernel has it). The rate
can change while nodes run (a robot driving away from the access point), and the link can be cut
and restored.

Only this test bed's own namespaces and addresses (a private /30 inside them) are touched; they
are removed on close(), also after a crash of an earlier run with the same name.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass


ETHERNET_FRAME_BYTES = 1514   # 1500 MTU + 14 header


class LinkEmulationUnavailable(RuntimeError):
    """Not root, or `ip`/`tc` missing: say so instead of pretending the link is shaped."""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(argv, check=check, capture_output=True, text=True)


def parse_trace(text: str) -> list[tuple[float, float]]:
    """'0:20,15:0.5,30:20' -> [(0, 20), (15, 0.5), (30, 20)]: at t seconds, rate in Mbit/s (0 = cut)."""
    steps = []
    for item in text.split(","):
        t, rate = item.split(":")
        steps.append((float(t), float(rate)))
    if not steps or sorted(steps) != steps:
        raise ValueError(f"trace '{text}' must list t:rate pairs in increasing time")
    return steps


@dataclass
class EmulatedLink:
    name: str = "fsplit"
    subnet: str = "10.213.7"          # /30 inside the namespaces only
    rate_mbit: float = 20.0
    delay_ms: float = 5.0
    loss_pct: float = 0.0

    def __post_init__(self):
        self.robot_ns, self.edge_ns = f"{self.name}_robot", f"{self.name}_edge"
        self.robot_if, self.edge_if = f"{self.name[:8]}_r", f"{self.name[:8]}_e"
        self.robot_ip, self.edge_ip = f"{self.subnet}.1", f"{self.subnet}.2"
        self.up = False
        self.connected = False
        self.netem_available: bool | None = None

    @staticmethod
    def check_available():
        if os.geteuid() != 0:
            raise LinkEmulationUnavailable("link emulation needs root (network namespaces and tc)")
        for tool in ("ip", "tc"):
            if shutil.which(tool) is None:
                raise LinkEmulationUnavailable(f"'{tool}' not found: apt-get install iproute2")

    def open(self) -> "EmulatedLink":
        self.check_available()
        self.close()   # leftovers of a crashed run
        _run("ip", "netns", "add", self.robot_ns)
        _run("ip", "netns", "add", self.edge_ns)
        _run("ip", "link", "add", self.robot_if, "netns", self.robot_ns, "type", "veth",
             "peer", "name", self.edge_if, "netns", self.edge_ns)
        for ns, dev, ip in ((self.robot_ns, self.robot_if, self.robot_ip), (self.edge_ns, self.edge_if, self.edge_ip)):
            _run("ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev)
            _run("ip", "-n", ns, "link", "set", dev, "up", "multicast", "on")
            _run("ip", "-n", ns, "link", "set", "lo", "up")
            # DDS discovery multicast goes out over the veth.
            _run("ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", dev)
        self.up = self.connected = True
        self._shape("add")
        return self

    def _shape(self, verb: str):
        """Token bucket (rate) at the root of each direction; netem (delay, loss) below it where the
        kernel has sch_netem (some container kernels do not: then delay and loss are not emulated)."""
        rate = max(self.rate_mbit, 0.01)
        # The smallest burst the kernel can keep the rate with (rate/HZ, HZ <= 250) plus margin, and
        # at least one Ethernet frame. A radio serializes every packet at its rate; a bigger bucket
        # (4 KB at 0.5 Mbit/s is 65 ms of free airtime) lets small payloads through at wire speed,
        # which no real link does and which made the measured rate jump (issue #5).
        burst = max(int(rate * 1e6 / 8 / 250 * 1.25), ETHERNET_FRAME_BYTES + 86)
        for ns, dev in ((self.robot_ns, self.robot_if), (self.edge_ns, self.edge_if)):
            # latency 1 s: a Wi-Fi-like buffer big enough to hold a large payload at a low rate.
            _run("ip", "netns", "exec", ns, "tc", "qdisc", verb, "dev", dev, "root", "handle", "1:",
                 "tbf", "rate", f"{rate}mbit", "burst", str(burst), "latency", "1000ms")
            if self.netem_available is not False and (self.delay_ms or self.loss_pct):
                done = _run("ip", "netns", "exec", ns, "tc", "qdisc", verb, "dev", dev, "parent", "1:1",
                            "handle", "10:", "netem", "delay", f"{self.delay_ms}ms", "loss",
                            f"{self.loss_pct}%", check=False)
                self.netem_available = done.returncode == 0

    def set_rate(self, rate_mbit: float):
        """Change the rate while traffic flows; 0 cuts the link."""
        if rate_mbit <= 0:
            self.cut()
            return
        if not self.connected:
            self.restore()
        self.rate_mbit = rate_mbit
        self._shape("change")

    def cut(self):
        """The link vanishes (both veth ends down), as Wi-Fi out of range looks to the robot."""
        for ns, dev in ((self.robot_ns, self.robot_if), (self.edge_ns, self.edge_if)):
            _run("ip", "-n", ns, "link", "set", dev, "down")
        self.connected = False

    def restore(self):
        for ns, dev in ((self.robot_ns, self.robot_if), (self.edge_ns, self.edge_if)):
            _run("ip", "-n", ns, "link", "set", dev, "up")
            _run("ip", "-n", ns, "route", "replace", "224.0.0.0/4", "dev", dev)
        self.connected = True

    def exec_prefix(self, side: str) -> list[str]:
        """Prefix a command with this to run it on the robot or the edge side."""
        return ["ip", "netns", "exec", {"robot": self.robot_ns, "edge": self.edge_ns}[side]]

    def close(self):
        for ns in (self.robot_ns, self.edge_ns):
            _run("ip", "netns", "del", ns, check=False)
        self.up = False

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc):
        self.close()
