"""Run the real node graph (separate processes, real DDS, tc-shaped link in network namespaces)
for one configuration over a rate trace, and summarise what the robot saw."""
from __future__ import annotations

import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

from fsplit_ros.linkemu import EmulatedLink
from fsplit_ros.policy import candidate_mode, candidate_name
from fsplit_ros.runtime.deployment import default_bottleneck_path
from fsplit_ros.process_graph import EventLog, GraphConfig, ProcessGraph, start_standard_graph, wait_until_ready


WARM_UP_MBIT = 20.0


def run_trace(cfg: GraphConfig, trace: list[tuple[float, float]], duration: float, tag: str) -> dict:
    """trace: [(t, Mbit/s)] steps (0 = cut). Returns per-result latencies with their time and mode.

    Every configuration starts the same way: the graph comes up over a 20 Mbit/s link until the
    first result arrives (models loaded, profile cached), then the trace starts at t = 0. A
    configuration that delivers nothing at the trace's rates (whole-frame JPEG at 0.25 Mbit/s)
    then shows up as 0 fps instead of never becoming ready."""
    work = Path(tempfile.mkdtemp(prefix=f"fsplit_bench_{tag}_"))
    link = EmulatedLink(name=f"fb{os.getpid() % 10000}", rate_mbit=WARM_UP_MBIT).open()
    graph = ProcessGraph(work / "logs", link, env={"ROS_DOMAIN_ID": str(40 + os.getpid() % 50)})
    log = EventLog(work / "events.jsonl")
    try:
        start_standard_graph(graph, cfg, log.path)
        wait_until_ready(graph, log)
        t0, applied = time.time(), None
        while time.time() - t0 < duration:
            rate = [r for t, r in trace if t <= time.time() - t0][-1]
            if rate != applied:
                link.set_rate(rate)
                applied = rate
            time.sleep(0.05)
        log.poll()
    finally:
        graph.close()
        link.close()
    sent = log.of("compressed_feature", since=t0)
    candidate_of = {e["stamp"]: candidate_name(e["mode"], e["split"]) for e in sent}
    results = [{"t": e["t"] - t0, "latency_ms": (e["t"] - e["stamp"]) * 1e3,
                "candidate": candidate_of.get(e["stamp"], "local"),
                "mode": candidate_mode(candidate_of.get(e["stamp"], "local"))[0]}
               for e in log.results(since=t0)]
    states = [{"t": e["t"] - t0, "mode": e["mode"], "candidate": candidate_name(e["mode"], e["split"]),
               "rate_bps": e["rate_bps"], "rtt": e["rtt"], "predicted_s": e.get("predicted_s", {}),
               "fidelity": e.get("fidelity", {})}
              for e in log.of("link_state", since=t0)]
    frames = len(log.of("image", since=t0)) if cfg.record_images else None
    return {"tag": tag, "t0": t0, "results": results, "states": states, "duration": duration,
            "bytes": [e["bytes"] for e in sent], "frames": frames, "logs": str(work)}


def summary(run: dict, since: float = 0.0, until: float = float("inf")) -> dict:
    lat = np.array([r["latency_ms"] for r in run["results"] if since <= r["t"] < until])
    span = min(until, run["duration"]) - since
    return {"p50_ms": float(np.median(lat)) if lat.size else float("nan"),
            "mean_ms": float(lat.mean()) if lat.size else float("nan"),
            "p95_ms": float(np.percentile(lat, 95)) if lat.size else float("nan"),
            "fps": lat.size / span if span > 0 else float("nan")}


# Image configurations whose encoder codec differs from the one the link monitor profiled (JPEG q95
# of the model crop), so its states name another image fidelity: PNG is lossless; the whole frame has
# no record.
IMAGE_FIDELITY = {"image (224 crop, PNG)": 1.0, "JPEG q95 offload (whole frame)": None}


def fidelity_used(run: dict, name: str) -> tuple[float | None, float | None]:
    """(mean, min) recorded fidelity of the candidates that delivered configuration `name`'s
    results (None where one is unknown), from the fidelity the monitor published (local: 1)."""
    table = {}
    for s in run["states"]:
        table.update(s.get("fidelity") or {})
    if name in IMAGE_FIDELITY:
        table["image"] = IMAGE_FIDELITY[name]
    values = [table.get(r["candidate"]) for r in run["results"]]
    if not values or any(v is None for v in values):
        return None, None
    return float(np.mean(values)), float(min(values))


def time_in_mode(run: dict) -> dict[str, float]:
    """Seconds the link monitor commanded each mode (from its LinkState stream)."""
    states, out = run["states"], {}
    for s, nxt in zip(states, states[1:] + [{"t": run["duration"]}]):
        out[s["mode"]] = out.get(s["mode"], 0.0) + max(0.0, min(nxt["t"], run["duration"]) - s["t"])
    return {mode: round(t, 1) for mode, t in sorted(out.items(), key=lambda kv: -kv[1])}


STATIC = {
    "local": dict(pinned_mode="local"),
    "split": dict(pinned_mode="split"),
    "bottleneck": dict(pinned_mode="bottleneck"),
    "image (224 crop, JPEG q95)": dict(pinned_mode="image"),
    "image (224 crop, PNG)": dict(pinned_mode="image", extra_encoder={"image_codec": "png", "image_quality": 1}),
    "JPEG q95 offload (whole frame)": dict(pinned_mode="image", image_resolution="native"),
    "adaptive": dict(),
}


def config(base: GraphConfig, name: str) -> GraphConfig:
    cfg = replace(base, **STATIC[name])
    if name == "bottleneck":
        path = (default_bottleneck_path(cfg.backbone) if cfg.bottleneck_checkpoint == "default"
                else Path(cfg.bottleneck_checkpoint))
        if not path.is_file():
            # The encoder would run `local` instead (mode unavailable): a silently wrong row.
            raise SystemExit(f"no bottleneck checkpoint at {path}: train one (README, Training) and pass "
                             f"--bottleneck PATH, or leave 'bottleneck' out")
    return cfg
