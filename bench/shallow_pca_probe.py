"""Is a shallow shared point cheap to code classically? (issue 19, a probe)

    python bench/shallow_pca_probe.py > bench/results/shallow_pca_probe.md

The shipped deep bottleneck codes Lite0's blocks.5.0 (stride 32) with principal components and a
factorized prior: 4.8 KB at 97-98 % agreement, no learned encoder. A shared encoder for several
models wants a shallower point (FrankenSplit shares stride 8). This codes Lite0's stride-8 features
(split 6, blocks.2's output, 40x28x28) the same way: principal components of each position's
channels (r=1) or of each 2x2 patch (r=2), the top L kept, uniform quantization with `step` (in
feature units). Bytes are ideal code lengths under per-component histograms of the quantized
training features (what a factorized prior learns; no coder overhead): an estimate, not coded
bytes. Agreement: Lite0's top-1 through its tail vs the unmodified model, 300 frames of held-out
family A (Wilson 95 %); components fitted on 600 training frames."""
import numpy as np
import torch
import torch.nn.functional as F

from fsplit_ros.datasets.frames import default_corpus, heldout_families, load_frames
from fsplit_ros.evaluation.intervals import format_interval, wilson_interval
from fsplit_ros.runtime import Deployment

SPLIT = 6
torch.set_num_threads(2)
lite0 = Deployment.load("efficientnet_lite0", bottleneck=None)
head, tail = lite0.splittable.head(SPLIT), lite0.splittable.tail(SPLIT)


def frames(sources, n):
    rgb = [f.rgb for f in load_frames(sources)]
    keep = np.linspace(0, len(rgb) - 1, min(n, len(rgb))).round().astype(int)
    return [rgb[i] for i in keep]


@torch.no_grad()
def features(rgb):
    out, top1 = [], []
    for k in range(0, len(rgb), 16):
        h = head(torch.cat([lite0.pixels_to_tensor(lite0.model_pixels(f)) for f in rgb[k:k + 16]]))
        out.append(h)
        top1.append(tail(h).argmax(1))
    return torch.cat(out).double(), torch.cat(top1)


def ideal_bytes(train_q, test_q):
    bits = 0.0
    for c in range(train_q.shape[1]):
        lo = int(min(train_q[:, c].min(), test_q[:, c].min()))
        hi = int(max(train_q[:, c].max(), test_q[:, c].max()))
        counts = torch.bincount((train_q[:, c] - lo).long(), minlength=hi - lo + 1).double() + 0.5
        bits += float(-torch.log2((counts / counts.sum())[(test_q[:, c] - lo).long()]).sum())
    return bits / 8


train_sources, _ = default_corpus()
train, test = features(frames(train_sources, 600))[0], features(frames(heldout_families()["A"], 300))
test, reference = test
n, channels, side = len(test), test.shape[1], test.shape[-1]
print(f"# Lite0 stride-8 features coded with principal components\n\nCommand: "
      f"`python bench/shallow_pca_probe.py`; Lite0 split {SPLIT} ({channels}x{side}x{side}), "
      f"{n} frames of held-out family A.\n\n| patch r | components kept (of r*r*{channels}) | "
      f"energy kept | step | bytes/frame (ideal) | Lite0 top-1 agreement [95 % Wilson] |\n|---|---|---|---|---|---|")
for r, kept in ((1, (16, 24, 32, 40)), (2, (32, 64, 96))):
    dims = channels * r * r
    v = F.pixel_unshuffle(train, r).permute(0, 2, 3, 1).reshape(-1, dims)
    t = F.pixel_unshuffle(test, r).permute(0, 2, 3, 1).reshape(-1, dims)
    mean = v.mean(0)
    energy, basis = torch.linalg.eigh((v - mean).T @ (v - mean) / len(v))
    energy, basis = energy.flip(0), basis.flip(1)
    for comps in kept:
        for step in (0.5, 1.0, 1.5):
            b = basis[:, :comps]
            q_train, q_test = ((v - mean) @ b / step).round(), ((t - mean) @ b / step).round()
            rebuilt = (q_test * step) @ b.T + mean
            h = F.pixel_shuffle(rebuilt.reshape(n, side // r, side // r, dims).permute(0, 3, 1, 2), r).float()
            with torch.no_grad():
                hits = int((tail(h).argmax(1) == reference).sum())
            lo, hi = wilson_interval(hits, n)
            print(f"| {r} | {comps} | {float(energy[:comps].sum() / energy.sum()):.3f} | {step:g} | "
                  f"{ideal_bytes(q_train, q_test) / n:,.0f} | {format_interval(hits / n, lo, hi)} |", flush=True)
