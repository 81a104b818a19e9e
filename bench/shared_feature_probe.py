"""Can one backbone's features be predicted from another's? (issue 19's shared encoder, a probe)

    python bench/shared_feature_probe.py > bench/results/shared_feature_probe.md

Least-squares 1x1 map (after resampling to the target grid) from EfficientNet-Lite0's features to
EfficientNet-Lite2's at the same stage, fitted on 500 training frames, scored on 300 held-out
family A frames without any quantization: relative error of the features and Lite2's top-1
agreement through its own tail. The shipped deep design shares Lite0's stride-32 features; this
asks whether a shallower shared point would let a simple decoder serve Lite2."""
import numpy as np, torch
from fsplit_ros.runtime import Deployment
from fsplit_ros.datasets.frames import default_corpus, heldout_families, load_frames
from fsplit_ros.evaluation.intervals import format_interval, wilson_interval
torch.set_num_threads(2)
l0, l2 = Deployment.load("efficientnet_lite0", bottleneck=None), Deployment.load("efficientnet_lite2", bottleneck=None)
def frames(src, n):
    f=[x.rgb for x in load_frames(src)]; k=np.linspace(0,len(f)-1,min(n,len(f))).round().astype(int); return [f[i] for i in k]
tr, _ = default_corpus(); fam = heldout_families()
train, test = frames(tr, 500), frames(fam["A"], 300)
pairs = [(13, 17), (12, 16), (6, 8)]   # Lite0 blocks.4.2 (112x14x14) -> Lite2 blocks.4.3 (120x17x17); stride 8
print("# Lite0 -> Lite2 feature probe\n\nCommand: `python bench/shared_feature_probe.py`\n\n| Lite0 split (shape) | Lite2 split (shape) | relative error | Lite2 top-1 agreement [95 % Wilson] (300 frames, A) |\n|---|---|---|---|")
with torch.no_grad():
    for s0, s2 in pairs:
        h0f, h2f = l0.splittable.head(s0), l2.splittable.head(s2)
        def feats(fs):
            a=[];b=[];lg=[]
            for k in range(0,len(fs),16):
                x0=torch.cat([l0.pixels_to_tensor(l0.model_pixels(f)) for f in fs[k:k+16]])
                x2=torch.cat([l2.pixels_to_tensor(l2.model_pixels(f)) for f in fs[k:k+16]])
                a.append(h0f(x0)); h=h2f(x2); b.append(h); lg.append(l2.splittable.tail(s2)(h).argmax(1))
            return torch.cat(a),torch.cat(b),torch.cat(lg)
        a,b,_=feats(train); ta,tb,tl=feats(test)
        side=b.shape[-1]
        up=lambda z: torch.nn.functional.interpolate(z,size=(side,side),mode="bilinear",align_corners=False)
        X=up(a).permute(0,2,3,1).reshape(-1,a.shape[1]).double(); Y=b.permute(0,2,3,1).reshape(-1,b.shape[1]).double()
        xm,ym=X.mean(0),Y.mean(0); G=(X-xm).T@(X-xm); G+=1e-3*G.diagonal().mean()*torch.eye(G.shape[0],dtype=G.dtype)
        W=torch.linalg.solve(G,(X-xm).T@(Y-ym))
        pred=(up(ta).permute(0,2,3,1).double()-xm)@W+ym
        pred=pred.permute(0,3,1,2).float()
        rel=float((pred-tb).pow(2).mean()/tb.pow(2).mean())
        hits=int((l2.splittable.tail(s2)(pred).argmax(1)==tl).sum())
        lo, hi = wilson_interval(hits, len(tl))
        print(f"| {s0} {tuple(a.shape[1:])} | {s2} {tuple(b.shape[1:])} | {rel:.3f} | "
              f"{format_interval(hits / len(tl), lo, hi)} |")
