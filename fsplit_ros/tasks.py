"""The tasks a backbone serves, each defined once: how camera pixels become the model input, how its
output becomes a result, which vision_msgs message and topic carry that result, and how a bag
report scores received results against the unmodified model.

A backbone names its task (`BackboneSpec.task`); the deployment, the nodes and the bag report ask
the task and never test which kind of model they hold. ROS-free: a task names its message type and
builds the message in `to_msg`, which imports vision_msgs only when a node calls it; `from_msg` reads
any object with the message's fields (rclpy messages, or rosbags' deserialised ones).

To add a task: a class with the members of `Task` below, one instance in `TASKS`, and a
`BackboneSpec(task=...)` that uses it."""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np
import torch

from fsplit_ros.models.preprocess import normalize, resize_center_crop

if TYPE_CHECKING:
    from fsplit_ros.models.backbones import LoadedBackbone


class Task(Protocol):
    name: str            # BackboneSpec.task, Deployment.task.name
    result_topic: str    # the result's topic (relative: the nodes' namespace applies)
    result_type: str     # its ROS message type, e.g. "vision_msgs/msg/Classification"
    metric: str          # what `agreement` measures, as a report says it

    def model_pixels(self, backbone: "LoadedBackbone", rgb: np.ndarray) -> np.ndarray:
        """Camera frame (HxWx3 uint8 RGB) -> the uint8 image the model sees."""

    def pixels_to_tensor(self, backbone: "LoadedBackbone", pixels: np.ndarray) -> torch.Tensor:
        """model_pixels' image -> the normalised (1, 3, S, S) input."""

    def results(self, backbone: "LoadedBackbone", output: torch.Tensor, width: int, height: int, **options):
        """One frame's model output -> its result in camera pixels (what `to_msg` publishes)."""

    def to_msg(self, header, results, top_k: int):
        """The vision_msgs message of one frame's results."""

    def summary(self, results):
        """What a report compares: a result reduced to the same form `from_msg` reads back."""

    def from_msg(self, msg):
        """A result message (any object with its fields) -> `summary`'s form."""

    def summary_json(self, summary):
        """`summary` as plain JSON values (report.json)."""

    def event_fields(self, msg) -> dict:
        """The few values of a result message the recorder's live event log keeps."""

    def agreement(self, pairs: list[tuple[object, object]]) -> dict:
        """(reference summary of the unmodified local model, received summary) per frame ->
        {"metric", "evaluated", "rate", "low", "high", ...}: how often they agree, with a 95 % interval."""


class ClassificationTask:
    """ImageNet-style classifiers (timm): centre crop, logits, top-k classes; scored by top-1 agreement."""
    name = "classification"
    result_topic = "classification"
    result_type = "vision_msgs/msg/Classification"
    metric = "top-1 agreement"

    def model_pixels(self, backbone, rgb):
        return resize_center_crop(rgb, backbone.input_size, backbone.data_config.get("crop_pct", 0.875))

    def pixels_to_tensor(self, backbone, pixels):
        return normalize(pixels, backbone.data_config["mean"], backbone.data_config["std"])

    def results(self, backbone, output, width, height, **options):
        return output

    def to_msg(self, header, results, top_k):
        from vision_msgs.msg import Classification, ObjectHypothesis
        msg = Classification(header=header)
        msg.results = [ObjectHypothesis(class_id=str(i), score=p) for i, p in self.top_k(results, top_k)]
        return msg

    @staticmethod
    def top_k(logits: torch.Tensor, k: int) -> list[tuple[int, float]]:
        """The k most probable classes with their softmax probabilities, best first."""
        probs = torch.softmax(logits.reshape(-1).float(), dim=0)
        values, indices = probs.topk(min(k, probs.numel()))
        return [(int(i), float(v)) for i, v in zip(indices, values)]

    def summary(self, results) -> str:
        return str(int(results.argmax()))

    def from_msg(self, msg) -> str:
        """The top-1 class id ('' for an empty result)."""
        if not len(msg.results):
            return ""
        return str(max(msg.results, key=lambda h: h.score).class_id)

    def summary_json(self, summary):
        return summary

    def event_fields(self, msg):
        top = msg.results[0] if msg.results else None
        return {"class": top.class_id if top else "", "score": top.score if top else 0.0}

    def agreement(self, pairs):
        from fsplit_ros.evaluation.intervals import wilson_interval
        n, agree = len(pairs), sum(ref == got for ref, got in pairs)
        low, high = wilson_interval(agree, n) if n else (None, None)
        return {"metric": self.metric, "evaluated": n, "agree": agree, "rate": agree / n if n else None,
                "low": low, "high": high}


class DetectionTask:
    """COCO detectors (NanoDet): letterbox, boxes in camera pixels; scored by fidelity mAP@0.5, the
    unmodified model's detections taken as ground truth (evaluation/detection_fidelity.py)."""
    name = "detection"
    result_topic = "detections"
    result_type = "vision_msgs/msg/Detection2DArray"
    metric = "fidelity mAP@0.5"

    def model_pixels(self, backbone, rgb):
        return backbone.detector.letterbox(rgb)[0]

    def pixels_to_tensor(self, backbone, pixels):
        return backbone.detector.normalize(pixels, "rgb")

    def results(self, backbone, output, width, height, **options):
        from fsplit_ros.detection.detector import LetterboxMeta, letterbox_geometry
        scale, _, _, left, top = letterbox_geometry(width, height, backbone.input_size)
        meta = LetterboxMeta(width, height, scale, left, top, backbone.input_size)
        return backbone.detector.postprocess(output, meta, **options)

    def to_msg(self, header, results, top_k):
        """Every detection (top_k does not apply), the COCO class name as class_id."""
        from vision_msgs.msg import BoundingBox2D, Detection2D, Detection2DArray, ObjectHypothesis, \
            ObjectHypothesisWithPose
        out = Detection2DArray(header=header)
        for d in results:
            x1, y1, x2, y2 = d.box
            det = Detection2D(header=header)
            det.bbox = BoundingBox2D(size_x=float(x2 - x1), size_y=float(y2 - y1))
            det.bbox.center.position.x, det.bbox.center.position.y = float(x1 + x2) / 2, float(y1 + y2) / 2
            det.results = [ObjectHypothesisWithPose(hypothesis=ObjectHypothesis(class_id=d.class_name,
                                                                                score=d.score))]
            out.detections.append(det)
        return out

    def summary(self, results) -> tuple:
        return tuple(results)

    def from_msg(self, msg) -> tuple:
        """Detections as published (boxes rounded to the message's float64 centre and size); an
        unknown class name keeps the id -1, which matches no reference."""
        from fsplit_ros.detection.coco import COCO_CLASSES
        from fsplit_ros.detection.detector import Detection
        ids = {n: i for i, n in enumerate(COCO_CLASSES)}
        out = []
        for det in msg.detections:
            if not len(det.results):
                continue
            hyp = det.results[0].hypothesis
            cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
            w, h = det.bbox.size_x, det.bbox.size_y
            out.append(Detection((cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2), float(hyp.score),
                                 ids.get(str(hyp.class_id), -1), str(hyp.class_id)))
        return tuple(out)

    def event_fields(self, msg):
        best = max(msg.detections, key=lambda d: d.results[0].hypothesis.score, default=None)
        return {"count": len(msg.detections), "class": best.results[0].hypothesis.class_id if best else "",
                "score": best.results[0].hypothesis.score if best else 0.0}

    def summary_json(self, summary):
        return [[*(round(v, 1) for v in d.box), round(d.score, 3), d.class_name] for d in summary]

    def agreement(self, pairs):
        """Fidelity mAP@0.5 of the published detections (the nodes' score threshold, so lower than
        fsplit-eval's, which ranks detections down to 0.05) with its frame-bootstrap interval."""
        from fsplit_ros.evaluation.detection_fidelity import map50_with_interval
        reference = [list(ref) for ref, _ in pairs]
        received = [list(got) for _, got in pairs]
        if not pairs:
            return {"metric": self.metric, "evaluated": 0, "rate": None, "low": None, "high": None}
        value, low, high = map50_with_interval(reference, received)
        nan = lambda v: None if np.isnan(v) else v   # noqa: E731  (no reference detections at all)
        return {"metric": self.metric, "evaluated": len(pairs), "rate": nan(value), "low": nan(low),
                "high": nan(high), "reference_detections": sum(len(r) for r in reference)}


TASKS: dict[str, Task] = {t.name: t for t in (ClassificationTask(), DetectionTask())}


def task_named(name: str) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task '{name}': one of {', '.join(TASKS)}")
    return TASKS[name]
