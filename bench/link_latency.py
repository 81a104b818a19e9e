"""Benchmark 3: end-to-end latency and delivered fps through the real node graph over tc-shaped
links of 0.25 (BLE-like), 1, 5 and 20 Mbit/s, for each static mode, JPEG q95 offload of the whole
camera frame (what image_transport users do), and the adaptive policy. Needs root.

    sudo python bench/link_latency.py [--seconds 20] [--slowdown 4]
"""
from __future__ import annotations

import argparse

from common import write_results
from graph_runs import STATIC, config, fidelity_used, run_trace, summary
from fsplit_ros.policy import DEFAULT_MIN_FIDELITY
from fsplit_ros.process_graph import GraphConfig


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--slowdown", type=float, default=4.0)
    ap.add_argument("--bottleneck", default="default",
                    help="FrankenSplit checkpoint for the bottleneck mode (default: the shipped one)")
    ap.add_argument("--rates", default="0.25,1,5,20")
    ap.add_argument("--configs", default="", help="subset, separated by semicolons: " + "; ".join(STATIC))
    args = ap.parse_args()
    base = GraphConfig(slowdown=args.slowdown, bottleneck_checkpoint=args.bottleneck)
    rates = [float(r) for r in args.rates.split(",")]
    table = {}
    names = [n for n in STATIC if n in args.configs.split(";")] if args.configs else list(STATIC)
    for rate in rates:
        for name in names:
            run = run_trace(config(base, name), [(0.0, rate)], args.seconds, f"{name[:5]}{rate}")
            table[(rate, name)] = summary(run, since=2.0)   # skip the first 2 s (mode settling)
            table[(rate, name)]["fidelity_mean_min"] = fidelity_used(run, name)
            print(rate, name, table[(rate, name)], flush=True)
    rows = ["| link | configuration | p50 ms | mean ms | p95 ms | delivered fps | p50 vs JPEG q95 offload | "
            "fidelity of what it sent (mean / min) |", "|---|---|---|---|---|---|---|---|"]
    for rate in rates:
        ref = table.get((rate, "JPEG q95 offload (whole frame)"), {}).get("p50_ms", float("nan"))
        for name in names:
            s = table[(rate, name)]
            if s["fps"] == 0:
                rows.append(f"| {rate:g} Mbit/s | {name} | no result in {args.seconds - 2:g} s | | | 0 | |")
                continue
            ratio = f"{ref / s['p50_ms']:.2f}x" if ref == ref else "JPEG offload: no result"
            mean_f, min_f = s["fidelity_mean_min"]
            shown = "unknown" if mean_f is None else f"{100 * mean_f:.1f} / {100 * min_f:.1f} %" + (
                "" if min_f >= DEFAULT_MIN_FIDELITY else " (below the floor)")
            rows.append(f"| {rate:g} Mbit/s | {name} | {s['p50_ms']:.0f} | {s['mean_ms']:.0f} | {s['p95_ms']:.0f} | "
                        f"{s['fps']:.1f} | {ratio} | {shown} |")
    md = (f"# End-to-end latency over shaped links\n\nEach row: {args.seconds:g} s of the real graph at 10 fps "
          f"camera (first 2 s skipped), robot CPU emulated {args.slowdown:g}x slower, robot and edge in two network "
          f"namespaces joined by a tbf-shaped veth; each graph first comes up at 20 Mbit/s, then the link is set to the row's rate. Latency = result arrival on the robot - camera stamp "
          f"(same clock). 'x' = JPEG q95 offload's p50 / this p50 (higher is better). Fidelity: the recorded "
          f"held-out agreement with the full model of the candidates that delivered the results; the "
          f"link monitor's default floor is {DEFAULT_MIN_FIDELITY:g}.\n\n" + "\n".join(rows))
    write_results("link_latency", md, {"runs": {f"{r}|{n}": v for (r, n), v in table.items()}})


if __name__ == "__main__":
    main()
