"""Payload fuzzing: over 10,000 hostile payloads through EdgeDecoder.decode (the edge's entry point
for everything a robot sends). Every one must be rejected with a typed PayloadError or, where the
mutation happens to leave it valid, decode to exactly what the tail takes: no other exception, no
hang (per-example deadline plus a watchdog), bounded memory (peak RSS growth per run). The rANS
decoder is C++, so thousands of garbage rANS bodies also run in a child process, which must exit 0.

The generators live in payload_fuzzing.py; bench/fuzz_payloads.py runs the same ones for 200k
examples. A failing example is printed by hypothesis with its seed: it reproduces exactly.
"""
from __future__ import annotations

import dataclasses
import faulthandler
import json
import os
import subprocess
import sys
from collections import Counter
from datetime import timedelta
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fsplit_ros.payload.format import CODECS
from peak_rss import growth_since, reset_peak, vm_kib
from payload_fuzzing import (absurd_shape, appended, bit_flipped, build_corpus, foreign_model,
                             garbage_body, header_field, mutated_body, outcome, random_bytes, truncated)

HERE = Path(__file__).resolve().parent
DEADLINE = timedelta(seconds=2)       # one decode is milliseconds; 2 s only absorbs a loaded CI box
WATCHDOG_S = 240                      # a decode that never returns kills the run with a traceback
MAX_PEAK_GROWTH_MIB = 64              # the largest legitimate decode buffer is ~5 MiB (rANS padding)
RANS_CHILD_EXAMPLES = 2000            # through EdgeDecoder.decode too, in a child process
EXAMPLES = {                          # test -> hypothesis examples in this process
    "structure": 3900, "garbage_per_codec": 250, "mutated": 1200, "absurd": 700, "foreign": 600}
TOTAL_EXPECTED = (EXAMPLES["structure"] + EXAMPLES["garbage_per_codec"] * len(CODECS) + EXAMPLES["mutated"]
                  + EXAMPLES["absurd"] + EXAMPLES["foreign"] + RANS_CHILD_EXAMPLES)



def _settings(n: int):
    return settings(max_examples=n, deadline=DEADLINE, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Decodes are small: a 2-thread pool only adds wake-up latency (tens of ms on a busy box)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def corpus(lite0, mbv2, lite0_bottleneck_ckpt, make_bottleneck, photos):
    """Valid payloads of every mode and codec for Lite0 + an untrained bottleneck, payloads of
    MobileNetV2, and the bitstreams of another Lite0 bottleneck."""
    dep = dataclasses.replace(lite0, bottleneck=None, bottleneck_hash=None, bottleneck_metadata=None)
    dep.attach_bottleneck(lite0_bottleneck_ckpt[0])
    c = build_corpus(dep, mbv2, photos[0][0], other_bottleneck=make_bottleneck(seed=1))
    for label, data in c.valid.items():    # positive control: the corpus itself decodes
        assert outcome(c.decoder, data) == "decoded", label
    assert {label.split(":")[1].split("@")[0] for label in c.valid} == set(CODECS), \
        "the corpus must hold a valid payload of every codec"
    return c


@pytest.fixture(scope="module", autouse=True)
def rans_child(lite0_bottleneck_ckpt, tmp_path_factory):
    """Start the rANS child at once, so it runs on the second core while the in-process fuzzing
    runs; test_rans_garbage_in_a_child_process collects it."""
    log = tmp_path_factory.mktemp("rans_child") / "stderr.log"
    seed = os.getpid()      # differs per run; printed on failure: `python rans_fuzz_child.py CKPT N SEED`
    with open(log, "w") as err:
        proc = subprocess.Popen([sys.executable, str(HERE / "rans_fuzz_child.py"), str(lite0_bottleneck_ckpt[0]),
                                 str(RANS_CHILD_EXAMPLES), str(seed)],
                                stdout=subprocess.PIPE, stderr=err, text=True, cwd=str(HERE),
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
    yield proc, log, seed
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _fuzz(name: str, strategy, corpus, n: int) -> Counter:
    """Run `strategy` for n examples through the decoder; returns outcome counts."""
    counts: Counter = Counter()

    @_settings(n)
    @given(case=strategy)
    def run(case):
        label, data = case
        counts[outcome(corpus.decoder, data)] += 1

    measurable = reset_peak()
    base = vm_kib("VmRSS")
    faulthandler.dump_traceback_later(WATCHDOG_S, exit=True)
    try:
        run()
    finally:
        faulthandler.cancel_dump_traceback_later()
    growth = growth_since(base)
    print(f"{name}: {sum(counts.values())} examples, {dict(counts)}, peak RSS growth {growth:.1f} MiB")
    if measurable:
        assert growth < MAX_PEAK_GROWTH_MIB, f"{name}: peak RSS grew {growth:.0f} MiB"
    assert sum(counts.values()) >= 0.9 * n, f"{name}: hypothesis ran only {sum(counts.values())} of {n}"
    return counts


def test_truncated_flipped_and_rewritten_headers_are_rejected(corpus):
    strategy = st.one_of(truncated(corpus), bit_flipped(corpus), header_field(corpus), appended(corpus),
                         random_bytes())
    counts = _fuzz("structure", strategy, corpus, EXAMPLES["structure"])
    # the mix must reach the typed checks behind the magic, not stop at the first one
    assert {"truncated", "corrupt", "codec", "oversized", "version", "foreign"} <= set(counts), counts


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_rechecksummed_garbage_bodies_for_every_codec(corpus, codec):
    labels = [label for label in corpus.labels if label.split(":")[1].split("@")[0] == codec]
    counts = _fuzz(f"garbage:{codec}", garbage_body(corpus, labels), corpus, EXAMPLES["garbage_per_codec"])
    # with a valid CRC the garbage must reach the codec: rejections there are corrupt or shape
    assert counts["corrupt"] + counts["shape"] > 0.5 * sum(counts.values()), counts


def test_rechecksummed_mutations_of_real_bodies(corpus):
    counts = _fuzz("mutated", mutated_body(corpus), corpus, EXAMPLES["mutated"])
    assert counts["corrupt"] + counts["shape"] > 0, counts


def test_absurd_shapes_never_allocate(corpus):
    counts = _fuzz("absurd", absurd_shape(corpus), corpus, EXAMPLES["absurd"])
    assert counts["decoded"] == 0, counts
    assert counts["oversized"] > 0 and counts["shape"] + counts["codec"] > 0, counts


def test_other_models_payloads_are_rejected_or_decoded_consistently(corpus):
    counts = _fuzz("foreign", foreign_model(corpus), corpus, EXAMPLES["foreign"])
    assert counts["model_mismatch"] > 0, counts


def test_rans_garbage_in_a_child_process(rans_child):
    """Thousands of rANS bodies that pass the cheap checks, bit-flipped and cut real streams:
    the C++ decoder must neither crash the process nor hang, and reject all garbage as typed."""
    proc, log, seed = rans_child
    try:
        out, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"rANS child (seed {seed}) hung (no exit after 300 s):\n{log.read_text()[-3000:]}")
    assert proc.returncode == 0, (f"rANS child (seed {seed}) died with {proc.returncode} (negative = signal, "
                                  f"e.g. -11 SIGSEGV):\n{out[-2000:]}\n{log.read_text()[-3000:]}")
    report = json.loads(out.strip().splitlines()[-1])
    print("rANS child:", report)
    assert report["examples"] == RANS_CHILD_EXAMPLES
    assert sum(report["outcomes"].values()) == RANS_CHILD_EXAMPLES
    assert set(report["outcomes"]) <= {"corrupt", "decoded"}, report
    assert report["outcomes"].get("corrupt", 0) > 0.5 * RANS_CHILD_EXAMPLES, report
    assert report["peak_rss_growth_mib"] < MAX_PEAK_GROWTH_MIB, report
    assert report["slowest_s"] < DEADLINE.total_seconds(), report


def test_the_fuzz_budget_reaches_ten_thousand_payloads():
    """Every fuzz test above must run >= 90 % of its examples (the rANS child all of its), so when
    they all pass at least 10,000 payloads went through EdgeDecoder.decode: the budget, checked on
    its own (no test depends on another's state or order)."""
    in_process = TOTAL_EXPECTED - RANS_CHILD_EXAMPLES
    assert 0.9 * in_process + RANS_CHILD_EXAMPLES >= 10_000, (in_process, RANS_CHILD_EXAMPLES)
