"""Child process for the rANS fuzz check: CompressAI's rANS decoder is C++, so garbage that made it
read out of bounds would kill the process (SIGSEGV), not raise. The parent runs this script and
asserts it exits 0; a crash or a hang shows up as a non-zero exit or a timeout there.

    python rans_fuzz_child.py BOTTLENECK.pt COUNT SEED

Every body goes through the full edge path (EdgeDecoder.decode of a payload with the right model
hash and a recomputed CRC). Prints one JSON line: counts per outcome, examples run, the peak RSS
growth in MiB over the run, and the slowest single decode in seconds.
"""
from __future__ import annotations

import json
import random
import sys
import time
from collections import Counter

from peak_rss import growth_since, reset_peak, vm_kib

RANS64_L = 1 << 31


def rans_bodies(rng: random.Random, real: list[bytes], max_len: int):
    """Endless hostile rANS bodies: mostly ones that pass the cheap checks (aligned, valid
    initial state) so the C++ decoder itself runs on them."""
    while True:
        kind = rng.choices(["aligned", "flipped", "cut", "extended", "zeros_ones", "any"],
                           [5, 3, 1, 1, 1, 1])[0]
        base = bytearray(rng.choice(real))
        if kind == "aligned":
            n = 4 * rng.randrange(2, max_len // 4)
            body = bytearray(rng.randbytes(n))
            body[:8] = rng.randrange(RANS64_L, 1 << 64).to_bytes(8, "little")
        elif kind == "flipped":
            body = base
            for _ in range(rng.randrange(1, 64)):
                pos = rng.randrange(len(body))
                body[pos] ^= 1 << rng.randrange(8)
        elif kind == "cut":
            body = base[: 4 * rng.randrange(2, max(3, len(base) // 4))]
        elif kind == "extended":
            body = base + rng.randbytes(4 * rng.randrange(1, 1024))
        elif kind == "zeros_ones":
            n = 4 * rng.randrange(2, max_len // 4)
            fill = rng.choice([b"\x00", b"\xff", b"\x80"])
            body = bytearray(fill * n)
            body[:8] = rng.randrange(RANS64_L, 1 << 64).to_bytes(8, "little")
        else:
            body = bytearray(rng.randbytes(rng.randrange(0, 4096)))
        yield kind, bytes(body)


def main(argv: list[str]) -> int:
    bottleneck_path, count, seed = argv[1], int(argv[2]), int(argv[3])
    import cv2

    from fsplit_ros.codecs.entropy import MAX_BITS_PER_ELEMENT
    from fsplit_ros.datasets.offline import labelled_imagenet_photos
    from fsplit_ros.runtime import Deployment, EdgeDecoder, OnboardEncoder
    from payload_fuzzing import outcome, repack, split_payload

    dep = Deployment.load("efficientnet_lite0", bottleneck=bottleneck_path)
    encoder = OnboardEncoder(dep)
    real_payloads = []
    for path, _ in labelled_imagenet_photos()[:3]:
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        real_payloads.append(encoder.encode(encoder.prepare(rgb), "bottleneck"))
    real_bodies = [split_payload(p)[1] for p in real_payloads]
    numel = 1
    for d in encoder.entropy_codec.latent_shape:
        numel *= d
    max_len = MAX_BITS_PER_ELEMENT * numel // 8 + 64     # a little beyond the codec's own cap

    decoder = EdgeDecoder(dep)
    for p in real_payloads:   # positive control: the real streams decode
        assert outcome(decoder, p) == "decoded"
    rng = random.Random(seed)
    counts: Counter = Counter()
    by_kind: Counter = Counter()
    slowest = 0.0
    reset_peak()
    base = vm_kib("VmRSS")
    gen = rans_bodies(rng, real_bodies, max_len)
    for _ in range(count):
        kind, body = next(gen)
        start = time.perf_counter()
        result = outcome(decoder, repack(real_payloads[0], body))
        slowest = max(slowest, time.perf_counter() - start)
        counts[result] += 1
        by_kind[kind] += 1
    print(json.dumps({"examples": count, "outcomes": dict(counts), "inputs": dict(by_kind),
                      "peak_rss_growth_mib": growth_since(base), "slowest_s": slowest}),
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
