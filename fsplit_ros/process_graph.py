"""Run the fsplit node graph as separate OS processes, the way `ros2 run` / `ros2 launch` would,
optionally split across an emulated robot-to-edge link (two network namespaces). Used by the demo,
the benchmarks and the link-emulation tests where `ros2 launch` is not installed."""
from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

from fsplit_ros.linkemu import EmulatedLink


def installed_executable(name: str) -> str:
    """lib/fsplit_ros/<name> of the sourced install (what `ros2 run fsplit_ros <name>` runs)."""
    for prefix in os.environ.get("AMENT_PREFIX_PATH", "").split(":"):
        path = Path(prefix) / "lib" / "fsplit_ros" / name
        if prefix and path.exists():
            return str(path)
    raise FileNotFoundError(f"fsplit_ros executable '{name}' not found on AMENT_PREFIX_PATH: build the package "
                            f"and source its install (tools/env.sh)")


def ros_args(params: dict | None = None, remaps: dict | None = None, namespace: str = "") -> list[str]:
    argv = ["--ros-args"]
    for key, value in (params or {}).items():
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (list, tuple)):
            value = "[" + ",".join(f"'{v}'" if isinstance(v, str) else str(v) for v in value) + "]"
        elif isinstance(value, str):
            value = f"'{value}'" if value == "" or value[0].isdigit() else value
        argv += ["-p", f"{key}:={value}"]
    for src, dst in (remaps or {}).items():
        argv += ["-r", f"{src}:={dst}"]
    if namespace:
        argv += ["-r", f"__ns:={namespace}"]
    return argv


class ProcessGraph:
    """Start nodes on the robot or edge side; stop them all (SIGINT, then SIGKILL) on close()."""

    def __init__(self, log_dir: Path, link: EmulatedLink | None = None, env: dict | None = None):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.link = link
        self.env = {**os.environ, **(env or {})}
        # Across namespaces DDS must discover over the veth; on loopback keep traffic on this host.
        self.env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "SUBNET" if link else "LOCALHOST"
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs = []

    def start(self, tag: str, executable: str, side: str = "robot", params: dict | None = None,
              remaps: dict | None = None, namespace: str = "", argv: list[str] | None = None) -> subprocess.Popen:
        cmd = argv or [installed_executable(executable), *ros_args(params, remaps, namespace)]
        if self.link is not None:
            cmd = self.link.exec_prefix(side) + cmd
        log = open(self.log_dir / f"{tag}.log", "w")
        self._logs.append(log)
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs[tag] = proc
        return proc

    def log(self, tag: str) -> str:
        return (self.log_dir / f"{tag}.log").read_text(errors="replace")

    def stop(self, tag: str, timeout: float = 10.0) -> int | None:
        proc = self.procs.pop(tag, None)
        if proc is None:
            return None
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def dead(self) -> list[str]:
        return [tag for tag, p in self.procs.items() if p.poll() is not None]

    def close(self):
        for tag in list(self.procs):
            self.stop(tag)
        for log in self._logs:
            log.close()
