"""Benchmark 9: does the link monitor's rate estimate match the link, do its latency predictions
match what each candidate delivers, and how fast does it recover? Needs root (netns + tc).

    sudo python bench/link_estimation.py [--phase 10] [--cycles 10] [--name link_estimation]

Part 1 (estimate and prediction): one run of the real graph per configuration (each pinned mode,
then the adaptive policy) over the rates RATES, `--phase` seconds each; per rate, after `--settle`
seconds, the median of the monitor's measured/true rate and its 10-90 % range (LinkState.rate_bps
against the tc rate), and for the candidate in use the predicted latency (LinkState) against the
measured one (result - camera stamp), medians.
Part 2 (recovery): the adaptive policy, `--cycles` link cuts (3 s) each restored to 20 Mbit/s, then
`--cycles` / 2 rate steps 0.5 <-> 20 Mbit/s; per event the time until the monitor commands a mode
the cost model prefers at the new true rate (`local` for a cut) (policy.preferred_modes over the profile, the
measured-time correction off so that preference is known), median, p95 and max.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np

from common import write_results
from graph_runs import run_trace
from fsplit_ros.policy import DEFAULT_MIN_FIDELITY, CostModel, preferred_modes
from fsplit_ros.process_graph import GraphConfig

RATES = [20.0, 50.0, 5.0, 1.0, 0.25]        # Mbit/s, in this order (the graph warms up at 20)
CONFIGS = ["local", "split", "bottleneck", "image", "adaptive"]
CUT_S, RESTORED_S = 3.0, 5.0
STEP_LOW, STEP_HIGH, STEP_S = 0.5, 20.0, 6.0
HYSTERESIS = 0.15      # the link monitor's default (config/link_monitor.yaml)
RTT_S = 0.01           # the bed's 5 ms each way (netem)


def profile_file(work: Path, backbone: str) -> tuple[Path, dict]:
    """The profile every run shares (the cached start-up profile of this machine)."""
    from fsplit_ros.profiling.profiler import sample_frames
    from fsplit_ros.profiling import cached_profile
    from fsplit_ros.runtime import Deployment
    profile = cached_profile(Deployment.load(backbone), sample_frames())
    path = work / "profile.json"
    profile.save(path)
    return path, profile


def quantiles(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return float("nan"), float("nan"), float("nan")
    p10, p50, p90 = np.percentile(values, [10, 50, 90])
    return float(p50), float(p10), float(p90)


def estimate_rows(name: str, run: dict, phase_s: float, settle_s: float) -> list[dict]:
    rows = []
    for i, rate in enumerate(RATES):
        a, b = i * phase_s + settle_s, (i + 1) * phase_s
        states = [s for s in run["states"] if a <= s["t"] < b]
        ratio = quantiles([s["rate_bps"] / (rate * 1e6) for s in states])
        candidates = [s["candidate"] for s in states]
        used = max(set(candidates), key=candidates.count) if candidates else ""
        predicted = [s["predicted_s"][used] * 1e3 for s in states if used in s["predicted_s"]]
        measured = [r["latency_ms"] for r in run["results"] if a <= r["t"] < b and r["candidate"] == used]
        rows.append({"config": name, "rate_mbit": rate, "ratio_p50": ratio[0], "ratio_p10": ratio[1],
                     "ratio_p90": ratio[2], "states": len(states), "candidate": used,
                     "predicted_ms": float(np.median(predicted)) if predicted else float("nan"),
                     "measured_ms": float(np.median(measured)) if measured else float("nan"),
                     "results": len(measured), "fps": len(measured) / (b - a)})
    return rows


def split_trace(inputs: Path, t0: float, phase_s: float, name: str, out_dir: Path) -> None:
    """One file per rate phase of the estimator inputs the link monitor recorded."""
    events = [json.loads(line) for line in inputs.read_text().splitlines() if line]
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, rate in enumerate(RATES):
        a, b = t0 + i * phase_s, t0 + (i + 1) * phase_s
        lines = [json.dumps(e) for e in events if a <= e["t"] < b]
        (out_dir / f"{name}_{rate:g}mbit.jsonl").write_text("\n".join(lines) + "\n")


def recovery_trace(cycles: int) -> tuple[list[tuple[float, float]], list[tuple[str, float, float]], float]:
    """[(t, Mbit/s)] and the events [(kind, t, rate after)]: cuts restored to 20, then steps."""
    trace, events, t = [(0.0, 20.0)], [], 6.0
    for _ in range(cycles):
        trace += [(t, 0.0), (t + CUT_S, 20.0)]
        events += [("cut (-> local)", t, 0.0), ("restore after a cut", t + CUT_S, 20.0)]
        t += CUT_S + RESTORED_S
    for _ in range(max(1, cycles // 2)):
        trace += [(t, STEP_LOW), (t + STEP_S, STEP_HIGH)]
        events += [("step 20 -> 0.5", t, STEP_LOW), ("step 0.5 -> 20", t + STEP_S, STEP_HIGH)]
        t += 2 * STEP_S
    return trace, events, t + STEP_S


def recovery_rows(run: dict, events, cost: CostModel) -> dict[str, list[float]]:
    """Seconds from each event to the first LinkState that commands a preferred mode."""
    out: dict[str, list[float]] = {}
    ends = [t for _, t, _ in events[1:]] + [run["duration"]]
    for (kind, t, rate), end in zip(events, ends):
        want = {"local"} if rate == 0 else preferred_modes(cost.predict(rate * 1e6, RTT_S), HYSTERESIS, DEFAULT_MIN_FIDELITY)
        hit = next((s["t"] for s in run["states"] if t <= s["t"] < end and s["mode"] in want), None)
        out.setdefault(kind, []).append(float("inf") if hit is None else hit - t)
    return out


def fmt(x: float, digits: int = 2) -> str:
    return "n/a" if x != x else f"{x:.{digits}f}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phase", type=float, default=10.0, help="seconds per rate")
    ap.add_argument("--settle", type=float, default=4.0, help="seconds skipped at the start of each rate")
    ap.add_argument("--cycles", type=int, default=10, help="cut/restore cycles (and half as many step pairs)")
    ap.add_argument("--slowdown", type=float, default=4.0)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument("--name", default="link_estimation", help="results file name under bench/results")
    ap.add_argument("--record-traces", type=Path, default=None, metavar="DIR",
                    help="also save the link monitor's estimator inputs, one file per configuration and rate "
                         "(<config>_<Mbit/s>mbit.jsonl: what test/core/test_link_estimation.py replays)")
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fsplit_linkest_"))
    path, profile = profile_file(work, "efficientnet_lite0")
    base = GraphConfig(slowdown=args.slowdown, profile_file=str(path))
    cost = CostModel(profile, base.camera_rate, onboard_scale=args.slowdown)

    rows = []
    for name in args.configs.split(","):
        cfg = replace(base, pinned_mode="" if name == "adaptive" else name)
        inputs = work / f"{name}_estimator.jsonl"
        if args.record_traces:
            cfg = replace(cfg, extra_link_monitor={"estimator_trace_file": str(inputs)})
        trace = [(i * args.phase, rate) for i, rate in enumerate(RATES)]
        run = run_trace(cfg, trace, len(RATES) * args.phase, name[:6])
        rows += estimate_rows(name, run, args.phase, args.settle)
        if args.record_traces:
            split_trace(inputs, run["t0"], args.phase, name, args.record_traces)

    trace, events, duration = recovery_trace(args.cycles)
    extra = {"measured_time_correction": False}
    inputs = work / "recovery_estimator.jsonl"
    if args.record_traces:
        extra["estimator_trace_file"] = str(inputs)
    run = run_trace(replace(base, extra_link_monitor=extra), trace, duration, "recov")
    recovery = recovery_rows(run, events, cost)
    if args.record_traces:
        # the estimator's inputs with the link's true rate at each change ({"kind": "link"}, 0 = cut)
        marks = [{"kind": "link", "t": run["t0"] + t, "rate_mbit": rate} for t, rate in trace]
        lines = sorted([json.loads(line) for line in inputs.read_text().splitlines() if line] + marks,
                       key=lambda e: e["t"])
        (args.record_traces / "recovery_cuts_and_steps.jsonl").write_text(
            "\n".join(json.dumps(e) for e in lines if e["t"] >= run["t0"]) + "\n")

    table = ["| configuration | link Mbit/s | measured/true p50 | 10-90 % | candidate | predicted ms | measured ms "
             "| results/s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['config']} | {r['rate_mbit']:g} | {fmt(r['ratio_p50'])} | {fmt(r['ratio_p10'])}-"
                     f"{fmt(r['ratio_p90'])} | {r['candidate']} | {fmt(r['predicted_ms'], 0)} | "
                     f"{fmt(r['measured_ms'], 0)} | {r['fps']:.1f} |")
    rec = ["| event | n | median s | p95 s | max s |", "|---|---|---|---|---|"]
    for kind, times in recovery.items():
        finite = [x for x in times if x != float("inf")]
        missed = len(times) - len(finite)
        p50, p95 = (np.percentile(times, [50, 95]) if not missed else (float("inf"), float("inf")))
        rec.append(f"| {kind} | {len(times)}{f' ({missed} never)' if missed else ''} | {fmt(p50)} | {fmt(p95)} "
                   f"| {fmt(max(times))} |")
    in_band = [r for r in rows if 0.8 <= r["ratio_p50"] <= 1.2]
    md = (f"# Link estimation: measured vs true rate, predicted vs measured latency, recovery\n\n"
          f"Real graph (5 processes, real DDS) over a tc-shaped veth between two network namespaces; robot "
          f"CPU emulated {args.slowdown:g}x slower; camera 10 fps. Rates {RATES} Mbit/s, {args.phase:g} s "
          f"each, the first {args.settle:g} s of each skipped. Latencies are medians over the results of "
          f"the candidate in use (result - camera stamp), predictions the monitor's own for it.\n\n"
          + "\n".join(table)
          + f"\n\n{len(in_band)} of {len(rows)} configurations have a median measured/true within 0.8-1.2.\n\n"
          f"Recovery: time from the event to the first LinkState that commands a mode the cost model prefers "
          f"at the new true rate ({args.cycles} cuts of {CUT_S:g} s; steps held {STEP_S:g} s).\n\n"
          + "\n".join(rec) + "\n")
    write_results(args.name, md, {"rows": rows, "recovery_s": recovery, "events": events, "trace": trace})


if __name__ == "__main__":
    main()
