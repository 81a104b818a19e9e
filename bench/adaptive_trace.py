"""Benchmark 4: the adaptive policy over a bandwidth trace (steps and a slow fade) against every
static mode and the hindsight oracle (the best static mode in each interval). Needs root.

    sudo python bench/adaptive_trace.py [--slowdown 4] [--interval 5] [--trace steps]

--trace steps: 10 s phases between 20 and 0.5 Mbit/s (20, 2, 0.5, 5, 20, 0.5, 20), the step trace of
issue 17, written to adaptive_steps.md.
"""
from __future__ import annotations

import argparse

import numpy as np

from common import write_results
from graph_runs import config, fidelity_used, run_trace, summary
from fsplit_ros.policy import DEFAULT_MIN_FIDELITY
from fsplit_ros.process_graph import GraphConfig

# steps 20 -> 5 -> 1, a slow fade 1 -> 0.25 over 20 s, then back to 20 Mbit/s
TRACE = [(0, 20), (15, 5), (30, 1)] + [(45 + 2 * i, round(1 - 0.075 * i, 3)) for i in range(11)] + [(70, 20)]
DURATION = 85.0
STEPS = [(0, 20), (10, 2), (20, 0.5), (30, 5), (40, 20), (50, 0.5), (60, 20)]
TRACES = {"default": (TRACE, DURATION, "adaptive_trace"), "steps": (STEPS, 70.0, "adaptive_steps")}
CONFIGS = ["local", "split", "bottleneck", "image (224 crop, JPEG q95)", "image (224 crop, PNG)", "adaptive"]


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--slowdown", type=float, default=4.0)
    ap.add_argument("--bottleneck", default="default",
                    help="FrankenSplit checkpoint for the bottleneck mode (default: the shipped one)")
    ap.add_argument("--interval", type=float, default=5.0)
    ap.add_argument("--trace", choices=sorted(TRACES), default="default")
    args = ap.parse_args()
    trace, duration, result_name = TRACES[args.trace]
    base = GraphConfig(slowdown=args.slowdown, bottleneck_checkpoint=args.bottleneck)
    runs = {name: run_trace(config(base, name), trace, duration, name[:6]) for name in CONFIGS}
    edges = np.arange(0, duration + 1e-9, args.interval)
    per = {name: [summary(runs[name], a, b)["mean_ms"] for a, b in zip(edges, edges[1:])] for name in CONFIGS}
    fidelity = {name: fidelity_used(runs[name], name) for name in CONFIGS}
    # Static modes compete only above the default fidelity floor (what the monitor may choose).
    static = [n for n in CONFIGS if n != "adaptive" and fidelity[n][1] is not None
              and fidelity[n][1] >= DEFAULT_MIN_FIDELITY]
    # Hindsight oracle: in each interval the static configuration with the lowest mean latency,
    # among those that delivered at least half the camera rate there (a stalled mode is no option).
    fps = {name: [summary(runs[name], a, b)["fps"] for a, b in zip(edges, edges[1:])] for name in CONFIGS}
    oracle = []
    for i in range(len(edges) - 1):
        options = [per[n][i] for n in static if fps[n][i] >= 5 and not np.isnan(per[n][i])] or \
                  [min(per[n][i] for n in static if not np.isnan(per[n][i]))]
        oracle.append(min(options))
    overall = {name: summary(runs[name])["mean_ms"] for name in CONFIGS}
    overall_fps = {name: summary(runs[name])["fps"] for name in CONFIGS}
    oracle_mean = float(np.mean(oracle))
    adaptive_interval_mean = float(np.nanmean(per["adaptive"]))
    best_static = min(static, key=lambda n: overall[n])
    rows = ["| configuration | mean latency ms | delivered fps | vs adaptive | fidelity of what it sent (mean / min) |",
            "|---|---|---|---|---|"]
    for name in CONFIGS:
        mean_f, min_f = fidelity[name]
        shown = "unknown" if mean_f is None else f"{100 * mean_f:.1f} / {100 * min_f:.1f} %" + (
            "" if min_f >= DEFAULT_MIN_FIDELITY else " (below the floor)")
        rows.append(f"| {name} | {overall[name]:.0f} | {overall_fps[name]:.1f} | "
                    f"{overall[name] / overall['adaptive']:.2f}x | {shown} |")
    rows.append(f"| hindsight oracle (best static per {args.interval:g} s interval) | {oracle_mean:.0f} (interval mean) | | |")
    md = (f"# Adaptive policy over a bandwidth trace\n\nTrace (s: Mbit/s): {trace}; {duration:g} s; robot CPU "
          f"emulated {args.slowdown:g}x slower; real graph over a tc-shaped veth between two namespaces.\n\n"
          + "\n".join(rows) + f"\n\nAdaptive interval-mean latency {adaptive_interval_mean:.0f} ms vs oracle "
          f"{oracle_mean:.0f} ms: {100 * (adaptive_interval_mean / oracle_mean - 1):+.1f}%. Best static mode overall: "
          f"{best_static} ({overall[best_static]:.0f} ms): adaptive is "
          f"{100 * (1 - overall['adaptive'] / overall[best_static]):.1f}% lower. Oracle and best static mode "
          f"are taken among the configurations at or above the default fidelity floor "
          f"({DEFAULT_MIN_FIDELITY:g}: recorded held-out agreement with the full model).\n")
    write_results(result_name, md, {"trace": trace, "per_interval_mean_ms": per, "per_interval_fps": fps,
                                         "oracle": oracle, "overall_mean_ms": overall,
                                         "fidelity_mean_min": fidelity, "min_fidelity": DEFAULT_MIN_FIDELITY})


if __name__ == "__main__":
    main()
