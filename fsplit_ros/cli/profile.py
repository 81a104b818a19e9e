"""fsplit-profile: measure per-mode costs for the link monitor.

    fsplit-profile --backbone efficientnet_lite0 --out profile.json            # both sides here
    fsplit-profile --side robot --out robot.json   (on the robot)
    fsplit-profile --side edge --out edge.json     (on the edge)
    fsplit-profile --merge robot.json edge.json --out profile.json
    fsplit-profile --image-codec png --image-quality 1 --out profile.json   # as the encoder is set

Profile with the codecs the encoder node is configured with: the profile's bytes, times and
recorded fidelity (min_fidelity) are those of these codecs.
"""
from __future__ import annotations

import argparse
import sys

from fsplit_ros.policy.link_profile import LinkProfile
from fsplit_ros.profiling import merge_profiles, profile_deployment
from fsplit_ros.profiling.profiler import MAX_OTHER_CPU_LOAD, sample_frames
from fsplit_ros.runtime import Deployment


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="efficientnet_lite0")
    ap.add_argument("--weights", default=None)
    ap.add_argument("--bottleneck", default="default", help="checkpoint, 'default' or '' for none")
    ap.add_argument("--side", choices=["robot", "edge", "both"], default="both")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--tensor-codec", default="uint8-channel+zlib")
    ap.add_argument("--image-codec", default="jpeg", help="the encoder's image_codec")
    ap.add_argument("--image-quality", type=int, default=95, help="the encoder's image_quality")
    ap.add_argument("--image-resolution", default="model", help="the encoder's image_resolution")
    ap.add_argument("--models", nargs="*", default=[], help="the edge decoder's further models (its `models`), "
                    "timed with the bottleneck candidate's edge side")
    ap.add_argument("--decoder-dir", default=None, help="the edge decoder's decoder_dir")
    ap.add_argument("--merge", nargs=2, metavar=("ROBOT", "EDGE"))
    ap.add_argument("--out", required=True)
    args = ap.parse_args(argv)
    if args.merge:
        merge_profiles(LinkProfile.read(args.merge[0]), LinkProfile.read(args.merge[1])).save(args.out)
        return 0
    dep = Deployment.load(args.backbone, args.weights, args.bottleneck or None)
    from fsplit_ros.bottleneck.shared import SharedDecoderMismatch
    from fsplit_ros.runtime.shared_models import load_shared_models
    try:
        shared = load_shared_models(args.models, dep, args.decoder_dir)
    except SharedDecoderMismatch as exc:
        print(f"fsplit-profile: {exc}", file=sys.stderr)
        return 2
    profile = profile_deployment(dep, sample_frames(), side=args.side, repeats=args.repeats,
                                 threads=args.threads, shared_models=shared,
                                 encoder_kwargs={"tensor_codec": args.tensor_codec, "image_codec": args.image_codec,
                                                 "image_quality": args.image_quality,
                                                 "image_resolution": args.image_resolution})
    profile.command = " ".join(["fsplit-profile", *sys.argv[1:]]) if argv is None else " ".join(argv)
    profile.save(args.out)
    load = profile.timing.other_cpu_load
    if load is not None and load > MAX_OTHER_CPU_LOAD:
        print(f"warning: other processes used {load:.0%} of the CPUs while timing: the costs are likely "
              f"inflated; profile again on an idle machine", file=sys.stderr)
    nan = float("nan")
    for name, c in profile.candidates.items():
        fidelity = ("100 % (the model)" if not c.offloads else "unknown" if c.fidelity is None
                    else f"{100 * c.fidelity:.1f} %")
        onboard = nan if c.onboard_ms is None else c.onboard_ms
        print(f"{name:12s} bytes {c.bytes:9.0f}  onboard {onboard:7.2f} ms  "
              f"offboard(B=1) {c.offboard_ms.get(1, nan):7.2f} ms  fidelity {fidelity}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
