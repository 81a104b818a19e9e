"""Run the fsplit node graph as separate OS processes, the way `ros2 run` / `ros2 launch` would,
optionally split across an emulated robot-to-edge link (two network namespaces). Used by the demo,
the benchmarks and the link-emulation tests where `ros2 launch` is not installed."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from fsplit_ros.launch_support import MODEL_PARAMETERS, further_model_names
from fsplit_ros.linkemu import EmulatedLink
from fsplit_ros.modes import MODE_NAMES
from fsplit_ros.tasks import TASKS


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


@dataclass
class GraphConfig:
    """The standard fsplit graph: camera, encoder, link monitor, recorder (robot); decoder (edge)."""
    backbone: str = "efficientnet_lite0"
    camera_rate: float = 10.0
    video: str = ""                        # '' = bundled demo video
    slowdown: float = 4.0                  # emulated robot CPU slowdown (encoder and monitor)
    pinned_mode: str = ""                  # '' = adaptive
    allowed_modes: tuple = MODE_NAMES
    profile_file: str = ""                 # '' = profile at start-up (cached)
    image_resolution: str = "model"
    image_quality: int = 95
    weights: str = ""                      # local backbone checkpoint ('' = offline default)
    bottleneck_checkpoint: str = "default"  # FrankenSplit checkpoint of all three model nodes
    update_period_s: float = 0.1
    record_images: bool = False
    models: tuple = ()                     # further edge models on the bottleneck payloads (issue 19)
    decoder_dir: str = ""                  # their decoders ('' = the shipped weights)
    extra_encoder: dict = field(default_factory=dict)
    extra_link_monitor: dict = field(default_factory=dict)


def start_standard_graph(graph: ProcessGraph, cfg: GraphConfig, events_path: Path, bag_path: Path | None = None):
    """The nodes of robot.launch.py, edge.launch.py and demo.launch.py (a test holds them to the same
    executables, remappings and model parameters), plus the recorder."""
    model = {name: getattr(cfg, name) for name in MODEL_PARAMETERS}
    common = {**model, "num_threads": 1}
    models = list(cfg.models) or [""]
    shared = {"models": models, "decoder_dir": cfg.decoder_dir}
    graph.start("decoder", "decoder_node", "edge", params={**common, **shared})
    graph.start("link_monitor", "link_monitor_node", "robot",
                params={**model, **shared, "emulated_slowdown": cfg.slowdown, "camera_rate": cfg.camera_rate,
                        "update_period_s": cfg.update_period_s, "pinned_mode": cfg.pinned_mode,
                        "allowed_modes": list(cfg.allowed_modes), "profile_file": cfg.profile_file,
                        **cfg.extra_link_monitor})
    graph.start("encoder", "encoder_node", "robot",
                params={**common, "emulated_slowdown": cfg.slowdown, "image_resolution": cfg.image_resolution,
                        "image_quality": cfg.image_quality, **cfg.extra_encoder},
                remaps={"image": "camera/image_raw"})
    further = further_model_names(cfg.models, cfg.backbone) or [""]
    recorder = {"events_path": str(events_path), "record_images": cfg.record_images, "models": further}
    if bag_path is not None:
        recorder["bag_path"] = str(bag_path)
    graph.start("recorder", "recorder_node", "robot", params=recorder, remaps={"image": "camera/image_raw"})
    graph.start("camera", "video_source_node", "robot", params={"source": cfg.video, "rate": cfg.camera_rate},
                remaps={"image": "camera/image_raw"})


RESULT_TOPICS = tuple(task.result_topic for task in TASKS.values())


def wait_until_ready(graph: ProcessGraph, events: "EventLog", topics=("results", "link_state"),
                     timeout: float = 240.0):
    """Block until every topic in `topics` was recorded (models loaded, profile cached)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        events.poll()
        if set(topics) <= events.topics():
            return
        if graph.dead():
            raise RuntimeError(f"node(s) {graph.dead()} exited; see {graph.log_dir}:\n"
                               + "\n".join(graph.log(t)[-1500:] for t in graph.dead()))
        time.sleep(0.5)
    raise RuntimeError(f"graph not ready after {timeout:.0f} s (have {sorted(events.topics())}); see {graph.log_dir}")


class EventLog:
    """The recorder's JSON-lines event stream, read incrementally."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.events: list[dict] = []
        self._offset = 0

    def poll(self) -> list[dict]:
        if not self.path.exists():
            return []
        with open(self.path) as f:
            f.seek(self._offset)
            data = f.read()
        complete = data[:data.rfind("\n") + 1]
        self._offset += len(complete)
        new = [json.loads(line) for line in complete.splitlines() if line]
        self.events += new
        return new

    def topics(self) -> set[str]:
        """Recorded topic names; either task's result topic also counts as "results"."""
        names = {e["topic"] for e in self.events}
        return names | ({"results"} if names & set(RESULT_TOPICS) else set())

    def results(self, since: float = float("-inf"), until: float = float("inf")) -> list[dict]:
        """Result events of either task (classification or detections)."""
        return [e for e in self.events if e["topic"] in RESULT_TOPICS and since <= e["t"] < until]

    def of(self, topic: str, since: float = float("-inf"), until: float = float("inf")) -> list[dict]:
        return [e for e in self.events if e["topic"] == topic and since <= e["t"] < until]
