"""Soak test: the whole graph (camera, encoder, link monitor, recorder on the robot; decoder on the
edge) as separate processes at camera rate for N minutes, over a tc-shaped link whose rate keeps
changing (network namespaces, needs root; loopback otherwise). Samples every process's resident
memory and the end-to-end latency every few seconds, and says whether memory grows.

    python bench/soak.py [--minutes 10] [--rates 20,5,1,10] [--period 30] [--out bench/results]

Writes soak.md (numbers, per-process memory slope with a verdict) and soak.png (memory and latency
over time) to --out. Latency = recorder receive time - camera stamp of each result (same host
clock on both sides of the emulated link). Memory verdict per process: a least-squares line through
its RSS after the warm-up; it "grows" when the slope exceeds --max-growth-mib-per-hour over the whole
fit window and over its last half (a one-off step that settles is reported as such, not as growth).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

from fsplit_ros.linkemu import EmulatedLink, LinkEmulationUnavailable
from fsplit_ros.process_graph import EventLog, GraphConfig, ProcessGraph, start_standard_graph, wait_until_ready

REPO = Path(__file__).resolve().parents[1]


def rss_mib(pid: int) -> float | None:
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(r"^VmRSS:\s+(\d+)", text, re.M)
    return int(match.group(1)) / 1024 if match else None


def fit_slope(t_s: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope per hour, residual std) of a least-squares line."""
    if len(t_s) < 3:
        return float("nan"), float("nan")
    a, b = np.polyfit(t_s / 3600.0, y, 1)
    return float(a), float(np.std(y - (a * t_s / 3600.0 + b)))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--camera-rate", type=float, default=10.0)
    ap.add_argument("--rates", default="20,5,1,10", help="link rates cycled through, Mbit/s")
    ap.add_argument("--period", type=float, default=30.0, help="seconds per link rate")
    ap.add_argument("--sample-s", type=float, default=5.0, help="sampling period")
    ap.add_argument("--warmup-s", type=float, default=60.0, help="excluded from the memory fit")
    ap.add_argument("--slowdown", type=float, default=4.0, help="emulated robot CPU slowdown")
    ap.add_argument("--link", choices=["auto", "netns", "loopback"], default="auto")
    ap.add_argument("--max-growth-mib-per-hour", type=float, default=30.0,
                    help="fitted RSS growth above this (per process) is reported as growing memory")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    ap.add_argument("--from-samples", type=Path, help="only rewrite the report from a run's samples.json")
    args = ap.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO), *sys.argv[1:]])
    print(command, flush=True)
    if args.from_samples:
        run = json.loads(args.from_samples.read_text())
        return report(argparse.Namespace(**{**vars(args), **run["args"]}), run["command"], run["samples"],
                      run["dead"], run["emulated"], args.from_samples.parent)
    rates = [float(r) for r in args.rates.split(",")]
    work = Path(f"/tmp/fsplit_soak_{os.getpid()}")
    work.mkdir(parents=True, exist_ok=True)

    link = None
    if args.link in ("auto", "netns"):
        try:
            link = EmulatedLink(name=f"fsoak{os.getpid() % 10000}", rate_mbit=rates[0]).open()
        except LinkEmulationUnavailable as exc:
            if args.link == "netns":
                raise
            print(f"[soak] {exc}: loopback, no shaping", flush=True)
    graph = ProcessGraph(work / "logs", link, env={"ROS_DOMAIN_ID": os.environ.get("ROS_DOMAIN_ID", str(os.getpid() % 100 + 1))})
    events = EventLog(work / "events.jsonl")
    cfg = GraphConfig(camera_rate=args.camera_rate, slowdown=args.slowdown)
    samples: list[dict] = []
    try:
        start_standard_graph(graph, cfg, events.path)
        wait_until_ready(graph, events)
        pids = {tag: p.pid for tag, p in graph.procs.items()}
        t0 = time.time()
        end = t0 + args.minutes * 60
        applied = None
        next_sample = t0
        print(f"[soak] graph up ({'netns + tc' if link else 'loopback'}), running {args.minutes:g} min; "
              f"logs in {work}", flush=True)
        while time.time() < end:
            now = time.time()
            rate = rates[int((now - t0) // args.period) % len(rates)]
            if link is not None and rate != applied:
                link.set_rate(rate)
                applied = rate
            if now >= next_sample:
                events.poll()
                window = [e for e in events.results(now - args.sample_s, now)]
                lat = [e["t"] - e["stamp"] for e in window if e.get("stamp")]
                modes = [e["mode"] for e in events.of("link_state", now - args.sample_s, now)]
                sample = {"t": now - t0, "rate_mbit": rate if link else None,
                          "rss": {tag: rss_mib(pid) for tag, pid in pids.items()},
                          "results": len(window), "fps": len(window) / args.sample_s,
                          "latency_p50_ms": float(np.median(lat) * 1e3) if lat else None,
                          "latency_p95_ms": float(np.percentile(lat, 95) * 1e3) if lat else None,
                          "mode": max(set(modes), key=modes.count) if modes else ""}
                samples.append(sample)
                print(f"[soak] {sample['t']:6.0f}s link {rate:g}M mode {sample['mode']:<10} "
                      f"fps {sample['fps']:4.1f} p50 {sample['latency_p50_ms'] or 0:6.0f} ms  RSS "
                      + " ".join(f"{k}={v:.0f}" for k, v in sample["rss"].items() if v), flush=True)
                next_sample += args.sample_s
                dead = graph.dead()
                if dead:
                    print(f"[soak] node(s) died: {dead}", flush=True)
                    break
            time.sleep(max(0.0, min(next_sample, end) - time.time()))
        dead = graph.dead()
    finally:
        graph.close()
        if link is not None:
            link.close()

    run_args = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()
                if k not in ("out", "from_samples")}
    (work / "samples.json").write_text(json.dumps({"command": command, "args": run_args, "samples": samples,
                                                   "dead": dead, "emulated": link is not None}))
    return report(args, command, samples, dead, link is not None, work)


def report(args, command, samples, dead, emulated, work) -> int:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = np.array([s["t"] for s in samples])
    tags = list(samples[0]["rss"]) if samples else []
    fit_mask = t >= min(args.warmup_s, t.max() / 2 if len(t) else 0)
    rows, growing = [], []
    for tag in tags:
        y = np.array([s["rss"][tag] if s["rss"][tag] is not None else np.nan for s in samples])
        ok = np.flatnonzero(fit_mask & ~np.isnan(y))
        slope, resid = fit_slope(t[ok], y[ok])
        late = ok[len(ok) // 2:]
        late_slope, _ = fit_slope(t[late], y[late])
        over_run = slope * (t[ok][-1] - t[ok][0]) / 3600 if len(ok) >= 3 else float("nan")
        # growing = the fitted line rises faster than the threshold AND still does in the last
        # half (a one-off step, e.g. the allocator's first big batch, settles; a leak does not)
        limit = args.max_growth_mib_per_hour
        verdict = ("**grows**" if slope > limit and late_slope > limit else
                   "step, then flat" if slope > limit else "flat")
        growing += [tag] if verdict == "**grows**" else []
        rows.append(f"| {tag} | {y[0]:.0f} | {np.nanmax(y):.0f} | {y[-1]:.0f} | {slope:+.1f} | {late_slope:+.1f} | "
                    f"{over_run:+.1f} | {resid:.1f} | {verdict} |")
    lat50 = [s["latency_p50_ms"] for s in samples if s["latency_p50_ms"] is not None]
    lat95 = [s["latency_p95_ms"] for s in samples if s["latency_p95_ms"] is not None]
    fps = [s["fps"] for s in samples]
    minutes = (t[-1] / 60) if len(t) else 0.0
    verdict = ("memory GROWS in " + ", ".join(growing)) if growing else "no memory growth in any process"
    if dead:
        verdict = f"node(s) DIED: {dead}; " + verdict
    modes = {}
    for s in samples:
        modes[s["mode"]] = modes.get(s["mode"], 0) + 1
    lines = [
        "# Soak test", "",
        f"`{command}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d %H:%M')}. Link: "
        + (f"netns + tc, rate cycling {args.rates} Mbit/s every {args.period:g} s" if emulated else "loopback (not root: no shaping)")
        + f"; camera {args.camera_rate:g} fps; robot CPU emulated {args.slowdown:g}x slower.", "",
        f"**Verdict ({minutes:.1f} min): {verdict}** (threshold {args.max_growth_mib_per_hour:g} MiB/h per "
        f"process, fitted after the first {args.warmup_s:g} s).", "",
        "| process | RSS start MiB | max | end | slope MiB/h | slope, last half | fitted growth over the fit window MiB | residual std MiB | verdict |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *rows, "",
        f"- Results: {np.mean(fps):.1f} fps on average (camera {args.camera_rate:g}); min over a "
        f"{args.sample_s:g}-s window {min(fps):.1f} fps." if fps else "- Results: none",
        f"- End-to-end latency (camera stamp -> result at the recorder): median of per-window medians "
        f"{np.median(lat50):.0f} ms, worst window p95 {max(lat95):.0f} ms." if lat50 else "- Latency: no results",
        f"- Mode (most frequent per window): " + ", ".join(f"{m or '-'} {n}" for m, n in sorted(modes.items())), "",
        "![memory and latency](soak.png)", "",
        f"Samples every {args.sample_s:g} s: {len(samples)}; raw samples and node logs in `{work}`.",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "soak.md").write_text("\n".join(lines) + "\n")

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    for tag in tags:
        y = np.array([s["rss"][tag] if s["rss"][tag] is not None else np.nan for s in samples])
        ax1.plot(t / 60, y - y[0], label=f"{tag} (starts at {y[0]:.0f} MiB)")
    ax1.axvline(args.warmup_s / 60, color="gray", ls=":", lw=1)
    ax1.set_ylabel("RSS growth since start (MiB)")
    ax1.legend(loc="center right", fontsize=8, ncol=2)
    ax1.set_title(f"fsplit soak: {verdict}")
    ax2.plot(t / 60, [s["latency_p50_ms"] for s in samples], label="latency p50")
    ax2.plot(t / 60, [s["latency_p95_ms"] for s in samples], label="latency p95", alpha=0.7)
    ax2.set_ylabel("end-to-end latency (ms)")
    ax2.set_xlabel("minutes")
    if emulated:
        ax3 = ax2.twinx()
        ax3.step([s["t"] / 60 for s in samples], [s["rate_mbit"] for s in samples], where="post", color="gray",
                 alpha=0.4, label="link Mbit/s")
        ax3.set_ylabel("link rate (Mbit/s)")
    ax2.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(args.out / "soak.png", dpi=110)
    print("\n".join(lines))
    print(f"wrote {args.out / 'soak.md'} and {args.out / 'soak.png'}")
    return 1 if dead or growing else 0


if __name__ == "__main__":
    sys.exit(main())
