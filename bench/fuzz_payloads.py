"""Long payload-fuzzing run: the generators of test/core/test_fuzz.py (test/core/payload_fuzzing.py)
for many more examples, through EdgeDecoder.decode of EfficientNet-Lite0 + an untrained
FrankenSplit bottleneck; plus garbage rANS bodies in a child process (a C++ crash there kills only
the child, and is reported).

    python bench/fuzz_payloads.py [--examples 200000] [--rans-child 20000] [--out bench/results/fuzz.md]

Writes a Markdown report with the count of every outcome (PayloadError kind or 'decoded') per
generator, the slowest single decode, throughput and the peak RSS growth of the process. Exits 1
on any untyped exception, invalid decode or child crash (the failing example is printed by
hypothesis with a reproducer).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "test" / "core"))

import cv2  # noqa: E402
import torch  # noqa: E402
from hypothesis import HealthCheck, given, settings  # noqa: E402

import payload_fuzzing as pf  # noqa: E402

# Share of the examples per generator (same generators as the CI test, rANS-heavy ones weighted
# by how much of the codec they reach).
SHARES = {"truncated": 0.08, "bit_flipped": 0.12, "header_field": 0.12, "appended": 0.04,
          "random_bytes": 0.04, "garbage_body": 0.22, "mutated_body": 0.18, "absurd_shape": 0.1,
          "foreign_model": 0.1}
CHUNK = 5000     # examples per hypothesis run (keeps hypothesis' own bookkeeping small)


def vm_kib(field: str) -> int:
    return int(re.search(rf"^{field}:\s+(\d+)", Path("/proc/self/status").read_text(), re.M).group(1))


def strategy(name: str, corpus):
    fn = getattr(pf, name)
    return fn() if name == "random_bytes" else fn(corpus)


def run_generator(name: str, corpus, n: int, timing: dict) -> Counter:
    counts: Counter = Counter()
    done = 0
    while done < n:
        chunk = min(CHUNK, n - done)

        @settings(max_examples=chunk, deadline=timedelta(seconds=5), database=None, print_blob=True,
                  suppress_health_check=list(HealthCheck))
        @given(case=strategy(name, corpus))
        def run(case):
            start = time.perf_counter()
            result = pf.outcome(corpus.decoder, case[1])
            elapsed = time.perf_counter() - start
            if elapsed > timing["slowest_s"]:
                timing.update(slowest_s=elapsed, slowest_case=case[0])
            counts[result] += 1
        run()
        done += chunk
    return counts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--examples", type=int, default=200_000, help="in-process examples in total")
    ap.add_argument("--rans-child", type=int, default=20_000, help="garbage rANS bodies in the child")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "fuzz.md")
    args = ap.parse_args()
    command = "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(__file__, REPO), *sys.argv[1:]])
    print(command, flush=True)
    torch.set_num_threads(args.threads)

    import conftest  # test/core/conftest.py: the seeded untrained bottleneck factory
    from fsplit_ros.bottleneck import save_bottleneck
    from fsplit_ros.datasets.offline import labelled_imagenet_photos
    from fsplit_ros.runtime import Deployment

    tmp = Path(tempfile.mkdtemp(prefix="fsplit_fuzz_"))
    ckpt = tmp / "lite0_bottleneck.pt"
    save_bottleneck(conftest._make_bottleneck(seed=0), ckpt, metadata={"note": "untrained, fuzzing"})
    child = None
    if args.rans_child:
        child_out = open(tmp / "child.out", "w+")
        child = subprocess.Popen([sys.executable, str(REPO / "test" / "core" / "rans_fuzz_child.py"), str(ckpt),
                                  str(args.rans_child), str(int(time.time()))], stdout=child_out,
                                 stderr=subprocess.STDOUT, cwd=str(REPO / "test" / "core"),
                                 env={**os.environ, "OMP_NUM_THREADS": "1"})
    dep = Deployment.load("efficientnet_lite0", bottleneck=ckpt)
    other = Deployment.load("mobilenetv2", bottleneck=None)
    rgb = cv2.cvtColor(cv2.imread(str(labelled_imagenet_photos()[0][0])), cv2.COLOR_BGR2RGB)
    corpus = pf.build_corpus(dep, other, rgb, other_bottleneck=conftest._make_bottleneck(seed=1))

    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    base_rss = vm_kib("VmRSS")
    results: dict[str, Counter] = {}
    timing = {"slowest_s": 0.0, "slowest_case": ""}
    failure = None
    start = time.time()
    for name, share in SHARES.items():
        n = max(1, int(args.examples * share))
        t0 = time.time()
        try:
            results[name] = run_generator(name, corpus, n, timing)
        except Exception as exc:   # hypothesis has printed the falsifying example
            failure = f"{name}: {type(exc).__name__}: {exc}"
            print("FAILED", failure, flush=True)
            break
        print(f"{name}: {n} examples in {time.time() - t0:.0f} s: {dict(results[name])}", flush=True)
    elapsed = time.time() - start
    growth_mib = (vm_kib("VmHWM") - base_rss) / 1024

    child_report, child_status = None, "not run"
    if child is not None:
        try:
            child.wait(timeout=max(600, args.rans_child * 0.1))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
            child_status = "HUNG (killed)"
        child_out.seek(0)
        text = child_out.read()
        if child.returncode == 0:
            child_report = json.loads(text.strip().splitlines()[-1])
            child_status = "exit 0"
        elif child_status == "not run":
            child_status = f"DIED with {child.returncode}"
            failure = failure or f"rANS child {child_status}: {text[-2000:]}"

    total: Counter = sum(results.values(), Counter())
    kinds = sorted(set(total) | set(child_report["outcomes"] if child_report else []))
    lines = [
        "# Payload fuzzing", "",
        f"`{command}`", "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{args.threads} torch thread(s); {time.strftime('%Y-%m-%d %H:%M')}.", "",
        "Every payload went through `EdgeDecoder.decode` (EfficientNet-Lite0 + an untrained "
        "FrankenSplit bottleneck). Outcomes: the `PayloadError.kind` it was rejected with, or "
        "`decoded` (the mutation left a valid payload; the decoded features were checked to be "
        "finite and of the tail's input shape). Any other exception fails the run.", "",
        f"**Verdict: {'FAILED: ' + failure if failure else 'no crash, no untyped exception, no invalid decode'}**", "",
        "| generator | examples | " + " | ".join(kinds) + " |",
        "|---|---:|" + "---:|" * len(kinds),
    ]
    for name, counts in results.items():
        lines.append(f"| {name} | {sum(counts.values())} | " + " | ".join(str(counts.get(k, 0)) for k in kinds) + " |")
    lines.append(f"| **in process** | **{sum(total.values())}** | "
                 + " | ".join(f"**{total.get(k, 0)}**" for k in kinds) + " |")
    if child_report:
        oc = child_report["outcomes"]
        lines.append(f"| rANS child | {child_report['examples']} | " + " | ".join(str(oc.get(k, 0)) for k in kinds) + " |")
    lines += [
        "",
        f"- In process: {sum(total.values())} examples in {elapsed:.0f} s "
        f"({sum(total.values()) / max(elapsed, 1e-9):.0f}/s incl. generation); slowest decode "
        f"{timing['slowest_s'] * 1e3:.1f} ms ({timing['slowest_case']}).",
        f"- Peak RSS growth of the fuzzing process over the run: {growth_mib:.1f} MiB "
        f"(baseline {base_rss / 1024:.0f} MiB after loading the models).",
        f"- rANS child ({args.rans_child} garbage bodies that mostly pass the cheap checks, bit-flipped, cut "
        f"and extended real streams): {child_status}"
        + (f"; peak RSS growth {child_report['peak_rss_growth_mib']:.1f} MiB, slowest decode "
           f"{child_report['slowest_s'] * 1e3:.0f} ms, inputs {child_report['inputs']}" if child_report else "") + ".",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {args.out}")
    return 1 if failure else 0


if __name__ == "__main__":
    sys.exit(main())
