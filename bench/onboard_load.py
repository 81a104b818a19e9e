"""Benchmark 8: a robot CPU slower than its profile (other load, thermal throttling, a profile timed
on an idle machine), with and without the link monitor's measured onboard correction. Needs root.

The real graph (separate processes, real DDS) over a tc-shaped link at a fixed rate. The link
monitor predicts onboard times from the profile x --slowdown; the encoder really runs
--load-factor times slower than that (its emulated_slowdown is slowdown x load-factor). Three runs,
side by side in one invocation: as profiled, slower without the correction, slower with it.

    sudo python bench/onboard_load.py [--rate 3] [--slowdown 4] [--load-factor 3] [--duration 30]
"""
from __future__ import annotations

import argparse
from dataclasses import replace

from common import write_results
from graph_runs import run_trace, summary, time_in_mode
from fsplit_ros.process_graph import GraphConfig


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rate", type=float, default=3.0, help="link rate, Mbit/s")
    ap.add_argument("--slowdown", type=float, default=4.0, help="robot CPU emulated this much slower (profiled)")
    ap.add_argument("--load-factor", type=float, default=3.0, help="the robot is this much slower again, unprofiled")
    ap.add_argument("--duration", type=float, default=30.0)
    args = ap.parse_args()
    base = GraphConfig(slowdown=args.slowdown)
    loaded = {"emulated_slowdown": args.slowdown * args.load_factor}
    configs = {
        "as profiled": base,
        f"{args.load_factor:g}x slower, correction off": replace(
            base, extra_encoder=loaded, extra_link_monitor={"measured_time_correction": False}),
        f"{args.load_factor:g}x slower, correction on": replace(
            base, extra_encoder=loaded, extra_link_monitor={"measured_time_correction": True}),
    }
    trace = [(0.0, args.rate)]
    runs = {name: run_trace(cfg, trace, args.duration, f"load{i}") for i, (name, cfg) in enumerate(configs.items())}
    # the first seconds at the new rate belong to the switch; judge the steady state
    settle = min(10.0, args.duration / 3)
    stats = {name: summary(run, since=settle) for name, run in runs.items()}
    modes = {name: time_in_mode(run) for name, run in runs.items()}
    names = list(configs)
    off, on = stats[names[1]], stats[names[2]]
    rows = ["| configuration | modes (s commanded) | p50 latency ms | p95 ms | delivered fps |", "|---|---|---|---|---|"]
    for name in names:
        s = stats[name]
        rows.append(f"| {name} | {', '.join(f'{m} {t:g}' for m, t in modes[name].items())} | {s['p50_ms']:.0f} | "
                    f"{s['p95_ms']:.0f} | {s['fps']:.1f} |")
    md = (f"# Robot slower than its profile: measured onboard correction\n\nLink {args.rate:g} Mbit/s (tc, two "
          f"network namespaces), camera 10 fps, profile x {args.slowdown:g} predicted by the link monitor, encoder "
          f"really {args.load_factor:g}x slower than that in the last two runs; statistics after the first "
          f"{settle:g} s of {args.duration:g} s.\n\n" + "\n".join(rows) +
          f"\n\nWith the robot {args.load_factor:g}x slower than profiled, the correction changes the p50 latency "
          f"{off['p50_ms']:.0f} -> {on['p50_ms']:.0f} ms ({on['p50_ms'] / off['p50_ms']:.2f}x) and the delivered rate "
          f"{off['fps']:.1f} -> {on['fps']:.1f} fps ({on['fps'] / off['fps']:.2f}x).\n")
    write_results("onboard_load", md, {"args": vars(args), "stats": stats, "time_in_mode_s": modes,
                                       "logs": {name: run["logs"] for name, run in runs.items()}})


if __name__ == "__main__":
    main()
