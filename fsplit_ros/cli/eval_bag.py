"""fsplit-eval-bag: evaluate a rosbag2 recording (MCAP or sqlite3) of an fsplit run, without ROS.

    fsplit-eval-bag BAG --out DIR [--backbone efficientnet_lite0] [--no-agreement] [--bin-s 1.0]
    python -m fsplit_ros.cli.eval_bag BAG --out DIR

BAG is the bag folder (with metadata.yaml), as written by `ros2 bag record` or the recorder node.
Topics are found by message type (fsplit_ros/CompressedFeature, FrameFeedback, LinkState,
vision_msgs/Classification, sensor_msgs/Image) and grouped by namespace, one group per robot.
Prints a summary table and writes DIR/report.json and PNG plots (bitrate by mode, latency CDF per
mode, mode timeline over the measured link rate).

Latency = the bag's receive time of a result - the camera stamp of its frame: both the robot's
clock when the bag was recorded on the robot (see fsplit_ros.evaluation.bag_report).
Agreement: where the camera frames were recorded, the received top-1 classes are compared with
the full local model (--backbone, the robot's model) run here on the same frames.
"""
from __future__ import annotations

import argparse
import sys

from fsplit_ros.evaluation.bag_report import BagReportError, evaluate_bag, format_table


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="fsplit-eval-bag", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bag", help="rosbag2 folder (MCAP or sqlite3)")
    ap.add_argument("--out", required=True, help="report folder (created if missing)")
    ap.add_argument("--backbone", default="efficientnet_lite0",
                    help="the robot's model, run locally for the agreement (default efficientnet_lite0)")
    ap.add_argument("--no-agreement", action="store_true", help="skip running the local model on the frames")
    ap.add_argument("--bin-s", type=float, default=1.0, help="bitrate bin width in seconds (default 1)")
    args = ap.parse_args(argv)
    try:
        report = evaluate_bag(args.bag, args.out, backbone=args.backbone, agreement=not args.no_agreement,
                              bin_s=args.bin_s)
    except BagReportError as exc:
        print(f"fsplit-eval-bag: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(report))
    print(f"\nreport: {args.out}/report.json; plots: {', '.join(report['plots'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
