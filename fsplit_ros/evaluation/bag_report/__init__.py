"""Evaluate a rosbag2 recording (sqlite3 or MCAP) of an fsplit run, without ROS.

Reads the bag with `rosbags` and the fsplit typestore (fsplit_ros + vision_msgs from their .msg
files; the bag's own embedded definition is used for a type whose definition hash differs), finds
the fsplit topics by MESSAGE TYPE, not by name (so remapped and namespaced topics work), and groups
them by topic namespace: one group per robot (`/robot1/compressed_feature`, `/robot1/classification`,
... -> robot `/robot1`). Camera topics (sensor_msgs/Image) belong to the robot whose namespace is
their longest prefix (`/robot1/camera/image_raw` -> `/robot1`); where a robot has several, the one
whose header stamps match the results is used.

Per robot it reports
  * payloads (CompressedFeature): bytes per frame by mode (and split point), bitrate over time by
    mode, seq gaps (payloads the recorder never saw) and restarts;
  * end-to-end latency per result (the task's result message: vision_msgs/Classification or
    Detection2DArray, fsplit_ros/tasks.py): receipt time - camera stamp, by
    the mode its frame was sent in (the CompressedFeature with the same header stamp, or `local`
    where no payload has that stamp: the robot ran the whole model);
  * delivered frame rate and drops: camera frames vs results, and where each frame without a
    result was lost (never sent / no FrameFeedback from the edge / rejected by the edge, counted by
    FrameFeedback's typed error kind / decoded but the result never arrived);
  * the mode timeline commanded by the link monitor (LinkState: mode, split_index, reason) with its
    measured rate (rate_bps);
  * where the camera frames were recorded: the agreement of the received results with the full
    local model run offline on the same frames, matched by header stamp, in the task's metric
    (top-1 agreement, or fidelity mAP@0.5 for detections) with its 95 % interval.

The package is in three steps: `reading` (bag -> records), `analysis` (records -> report dict),
`output` (table and plots); this module runs them.

Clocks. Receipt times are the bag's receive timestamps: the recorder's clock when each message
arrived. The camera stamp (header.stamp) is set by the camera driver and copied unchanged into the
CompressedFeature, the FrameFeedback and the result. The recorder runs on the robot
(`ros2 bag record` there, or the recorder_node the demo starts), so both are the ROBOT's clock and
`latency = receipt time of the result - camera stamp` needs no clock synchronisation; it includes
camera transport, onboard encode, uplink, edge decode + tail, and the downlink of the result.
That does not hold when the bag was recorded on the edge or another machine (latencies are then
offset by the clock difference), with use_sim_time, or with a camera that stamps frames with its
own hardware clock. Where frames are recorded the report checks the camera -> recorder delay
(receipt time of a frame - its stamp; a few ms when the clocks agree) and warns when it is
negative or over a second; it also warns about negative latencies. The edge's stamps in
FrameFeedback (received/finished) are the edge clock and are not mixed with the robot's: only
their difference (edge_time) is used.

Rates: a rate over n events is (n - 1) / (last - first) on the receipt times. Bitrate series:
payload bytes * 8 per bin of `bin_s` seconds from the first message of the robot's topics (the last
bin may be partial and is still divided by `bin_s`); a mode's bitrate "while active" is its bits
divided by the total length of the bins in which it sent anything.

The `fsplit-eval-bag` command (fsplit_ros/cli/eval_bag.py) prints the summary table and writes
report.json and the PNG plots; `evaluate_bag()` is the same as a function.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from fsplit_ros.evaluation.bag_report.analysis import analyse, analyse_robot
from fsplit_ros.evaluation.bag_report.output import format_table, write_plots
from fsplit_ros.evaluation.bag_report.reading import (LocalModelReference, image_owner, read_bag,
                                                      topic_namespace)
from fsplit_ros.evaluation.bag_report.records import BagReportError, rejection_kind

__all__ = ["BagReportError", "LocalModelReference", "analyse", "analyse_robot", "evaluate_bag",
           "format_table", "image_owner", "read_bag", "rejection_kind", "topic_namespace",
           "write_plots"]


def evaluate_bag(path: str | Path, out_dir: str | Path | None = None, backbone: str = "efficientnet_lite0",
                 agreement: bool = True, bin_s: float = 1.0, reference: Callable | None = None) -> dict:
    """Read, analyse, and (with out_dir) write report.json and the plots. `reference` overrides the
    local model used for the agreement (see read_bag); by default it is `backbone`, whose task must
    be the results' (a classifier for Classification, a detector for Detection2DArray)."""
    import json

    if bin_s <= 0:
        raise BagReportError(f"bin_s must be positive, got {bin_s}")
    if agreement and reference is None:
        reference = LocalModelReference(backbone)
    data = read_bag(path, reference if agreement else None)
    if not agreement:
        for robot in data.robots.values():
            robot.agreement_skipped = "disabled (--no-agreement)"
    # The model named in the report (and checked against the payloads' model_name): ours, or whatever
    # a custom reference says it is; and its task, where it says (a plain function does not).
    label = getattr(reference, "backbone", None) if agreement else None
    task = getattr(reference, "task", None) if agreement else None
    report = analyse(data, bin_s, label, task)
    if out_dir is not None:
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        report["plots"] = [str(p) for p in write_plots(report, out_dir)]
        (out_dir / "report.json").write_text(json.dumps(report, indent=1))
    return report
