"""FrankenSplit for the detector: NanoDet-g loads as a backbone, training inputs match the deployed
normalisation (BGR, NanoDet's statistics), Grad-CAM of the detector's own confidence lands on the
objects, the architecture-only head fits a checkpoint, and a tiny real training run on NanoDet
writes a checkpoint whose bottleneck payloads the edge decodes into detections."""
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fsplit_ros.bottleneck import BottleneckConfig, FrankenSplitBottleneck, load_bottleneck
from fsplit_ros.datasets.frames import Frame, FrameDataset
from fsplit_ros.datasets.offline import labelled_imagenet_photos
from fsplit_ros.models import BACKBONES, build_architecture, load_backbone
from fsplit_ros.runtime import Deployment, EdgeDecoder, OnboardEncoder
from fsplit_ros.splitting import SplittableModel
from fsplit_ros.training.config import TrainConfig
from fsplit_ros.training.saliency import detection_evidence, grad_cam
from fsplit_ros.training.trainer import train_sweep

PHOTOS = [str(p) for p, _ in labelled_imagenet_photos()]
SPLIT = BACKBONES["nanodet"].injection_split


@pytest.fixture(scope="module")
def nanodet_backbone():
    from test_detector import _files_or_skip
    return load_backbone("nanodet", _files_or_skip().directory)


@pytest.fixture(scope="module")
def bus_rgb():
    from fsplit_ros.detection import assets
    try:
        path = assets.sample_photo("bus.jpg")
    except assets.DetectorFilesNotFound as exc:
        pytest.skip(f"bus.jpg unavailable: {exc}")
    return cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)


def test_nanodet_loads_as_a_backbone(nanodet_backbone):
    b = nanodet_backbone
    assert b.name == "nanodet" and b.detector is not None and b.input_size == 416
    assert b.channel_order == "bgr" and b.spec.injection_split == 5
    assert b.weights_hash == b.detector.weights_hash
    bare = build_architecture("nanodet").state_dict()
    assert {k: v.shape for k, v in bare.items()} == {k: v.shape for k, v in b.model.state_dict().items()}
    with pytest.raises(ValueError, match="unknown backbone 'nanodet_x'.*nanodet"):
        load_backbone("nanodet_x")


def test_training_inputs_match_the_deployed_normalisation(nanodet_backbone, bus_rgb):
    """A letterboxed canvas through FrameDataset (what the trainer feeds) equals the detector's own
    normalize (what the nodes feed): BGR order, NanoDet's mean/std."""
    b = nanodet_backbone
    canvas, _ = b.detector.letterbox(bus_rgb)
    ds = FrameDataset([Frame(canvas, "bus", 0)], b.data_config["mean"], b.data_config["std"], 416,
                      augment=False, crop_pct=1.0, channel_order=b.channel_order)
    deployed = b.detector.normalize(canvas, "rgb")[0]
    assert torch.allclose(ds[0]["image"], deployed, atol=1e-4)
    rgb = FrameDataset([Frame(canvas, "bus", 0)], b.data_config["mean"][::-1], b.data_config["std"][::-1],
                       416, augment=False, crop_pct=1.0)
    assert torch.allclose(rgb[0]["image"].flip(0), deployed, atol=1e-4)
    with pytest.raises(ValueError, match="channel_order"):
        FrameDataset([Frame(canvas, "bus", 0)], (0, 0, 0), (1, 1, 1), channel_order="yuv")


def test_detection_saliency_lies_on_the_detected_objects(nanodet_backbone, bus_rgb):
    b = nanodet_backbone
    split = SplittableModel(b.model)
    x, meta = b.detector.preprocess(bus_rgb)
    score = detection_evidence(b.detector.config.num_classes)
    [cam] = grad_cam(split.head(SPLIT), split.tail(SPLIT), x, score)
    assert cam.shape == (52, 52) and torch.isclose(cam.mean(), torch.tensor(1.0), atol=1e-4)
    # cells covered by the detector's own boxes (in model-input pixels, stride 8)
    inside = torch.zeros(52, 52, dtype=torch.bool)
    for d in b.detector.postprocess(b.detector.forward(x), meta, score_threshold=0.35):
        x1, y1, x2, y2 = (np.array(d.box) * meta.scale + [meta.pad_left, meta.pad_top] * 2) / 8
        inside[int(y1):int(np.ceil(y2)), int(x1):int(np.ceil(x2))] = True
    assert 0.05 < inside.float().mean() < 0.9
    assert cam[inside].mean() > 1.5 * cam[~inside].mean(), (cam[inside].mean(), cam[~inside].mean())
    with pytest.raises(ValueError, match="detector output"):
        score(torch.zeros(2, 1000))


def test_architecture_only_head_encoder_has_the_trained_layout(nanodet_backbone):
    cfg = BottleneckConfig(backbone="nanodet", injection_split=SPLIT, target_channels=64, target_stride=8,
                           input_size=416, encoder="head", encoder_channels=96)
    teacher_head = SplittableModel(nanodet_backbone.model).head(SPLIT)
    import copy
    from_teacher = FrankenSplitBottleneck(cfg, head=copy.deepcopy(teacher_head)).state_dict()
    bare = FrankenSplitBottleneck(cfg).state_dict()
    assert {k: v.shape for k, v in bare.items()} == {k: v.shape for k, v in from_teacher.items()}
    assert cfg.latent_shape == (48, 52, 52)
    # transform_stride 2: a 26x26 latent, and g_s still reconstructs the 64x52x52 features
    x = torch.zeros(1, 3, 416, 416)
    for stride, side in ((1, 52), (2, 26)):
        model = FrankenSplitBottleneck(replace(cfg, transform_stride=stride), head=copy.deepcopy(teacher_head))
        assert tuple(model.g_a(x).shape[1:]) == replace(cfg, transform_stride=stride).latent_shape == (48, side, side)
        assert model(x)[0].shape == teacher_head(x).shape == (1, 64, 52, 52)
    with pytest.raises(ValueError, match="transform_stride"):
        FrankenSplitBottleneck(replace(cfg, encoder="image", transform_stride=2))


@pytest.fixture(scope="module")
def tiny_detector_run(nanodet_backbone, tmp_path_factory):
    """8 steps, batch 2, 6 photos, saliency of the detector's confidence; 2 held-out photos."""
    out = tmp_path_factory.mktemp("tiny_nanodet")
    cfg = TrainConfig(backbone="nanodet", injection_split=SPLIT, target_channels=64, target_stride=8,
                      encoder_channels=96, train_sources=PHOTOS[:6], heldout_sources=PHOTOS[18:],
                      betas=[2e-4], steps=8, batch_size=2, train_patch=64, lr_schedule="constant",
                      log_every=1, checkpoint_every=8, eval_every=0, workers=0, seed=0,
                      out_dir=str(out), cache_dir=str(out / "cache"))
    [result] = train_sweep(cfg, progress=False, command="pytest tiny nanodet run", backbone=nanodet_backbone)
    return cfg, result


def test_tiny_detector_training_writes_a_deployable_checkpoint(tiny_detector_run, nanodet_backbone, bus_rgb):
    cfg, result = tiny_detector_run
    assert [row["step"] for row in result.log] == list(range(1, 9))
    assert all(np.isfinite(row["loss"]) and "saliency_mse" in row for row in result.log)
    _, info = load_bottleneck(result.checkpoint)
    meta = info["metadata"]
    assert meta["backbone"] == "nanodet" and meta["saliency"] is True and meta["encoder"] == "head"
    held = meta["heldout"]
    assert held["frames"] == 2 and held["bytes_per_image"] > 0
    assert 0.0 <= held["fidelity_map50"] <= 1.0 and "top1_agreement" not in held
    # the checkpoint deploys: bottleneck payload onboard -> edge -> tail -> boxes in frame pixels
    dep = Deployment.load("nanodet", weights=str(Path(nanodet_backbone.weights_source).parent),
                          bottleneck=result.checkpoint)
    assert dep.bottleneck_hash == info["hash"]
    enc, dec = OnboardEncoder(dep), EdgeDecoder(dep)
    assert "bottleneck" in enc.available_modes()
    frame = enc.prepare(bus_rgb)
    payload = enc.encode(frame, "bottleneck")
    decoded = dec.decode(payload)
    output = dec.run_tails([decoded])[0]
    assert output.shape[-1] == 124
    detections = dep.results(output, frame.width, frame.height, score_threshold=0.05)
    h, w = bus_rgb.shape[:2]
    assert all(0 <= d.box[0] <= d.box[2] <= w and 0 <= d.box[1] <= d.box[3] <= h for d in detections)
