"""The bottleneck checkpoints that ship in fsplit_ros/weights (trained by tools/train_defaults.sh):
they load as the nodes' default, belong to the exact backbone weights deployed with them, were
never trained on the held-out files, are small, and through the real payload path keep most of
the model's own predictions on the labelled photos at a fraction of the JPEG q95 bytes."""
from pathlib import Path

import numpy as np
import pytest

from fsplit_ros.datasets.offline import labelled_imagenet_photos
from fsplit_ros.evaluation.rate_accuracy import evaluate_configuration
from fsplit_ros.runtime import Deployment, EdgeDecoder, OnboardEncoder
from fsplit_ros.runtime.deployment import default_bottleneck_path

# Floors well below the measured held-out values (BENCHMARKS.md section 1, fsplit_ros/weights/README.md)
# on these 20 photos alone: a regression (a wrong checkpoint, a broken encoder) falls far below them.
MIN_AGREEMENT = 0.7
MAX_BYTES_VS_JPEG95 = 0.7


@pytest.fixture(scope="module", params=["efficientnet_lite0", "mobilenetv2"])
def shipped(request):
    path = default_bottleneck_path(request.param)
    assert path.is_file(), f"{path} is missing: train it with bash tools/train_defaults.sh (README)"
    return request.param, path, Deployment.load(request.param)   # "default" attaches the shipped file


def test_shipped_checkpoint_is_the_default_and_fits_its_backbone(shipped):
    backbone, path, dep = shipped
    assert dep.bottleneck is not None and dep.bottleneck.config.backbone == backbone
    assert path.stat().st_size < 5 * 2 ** 20
    meta = dep.bottleneck_metadata
    assert meta["backbone_weights_hash"] == dep.backbone.weights_hash   # trained on these weights
    assert meta["steps"] > 0 and meta["command"].startswith(("python -m fsplit_ros.cli.train", "fsplit-train"))
    photo_names = {p.name for p, _ in labelled_imagenet_photos()}
    trained = {s.split(" (")[0] for s in meta["train_sources"]}   # a warm start's included
    assert not photo_names & trained                   # the photos the next test uses: never seen
    # the corpus repeats file names across folders (2560x1600.jpg): a held-out name that is also a
    # training name must be another file, by the content digests both sides recorded
    shared = {s.split(" (")[0] for s in meta["heldout_sources"]} & trained
    heldout_digests, train_digests = meta.get("heldout_file_digests", {}), meta.get("train_file_digests", {})
    for name in shared:
        assert name in heldout_digests and name in train_digests, name
        assert not set(heldout_digests[name]) & set(train_digests[name]), name
    assert meta["heldout"]["frames"] > 0


def test_shipped_checkpoint_keeps_the_models_predictions_at_a_fraction_of_the_jpeg_bytes(shipped, photos):
    backbone, _, dep = shipped
    enc, dec = OnboardEncoder(dep), EdgeDecoder(dep)
    prepared = [enc.prepare(rgb) for rgb, _ in photos]
    labels = np.array([label for _, label in photos])
    reference = np.array([int(enc.predict_local(p).argmax()) for p in prepared])
    bottleneck = evaluate_configuration(enc, dec, [], reference, prepared, labels, "bottleneck")
    jpeg = evaluate_configuration(OnboardEncoder(dep, image_codec="jpeg", image_quality=95), dec, [],
                                  reference, prepared, labels, "image")
    assert bottleneck["agreement"] >= MIN_AGREEMENT, (bottleneck, jpeg)
    assert bottleneck["bytes_mean"] <= MAX_BYTES_VS_JPEG95 * jpeg["bytes_mean"], (bottleneck, jpeg)


# The detector's shipped bottleneck (NanoDet-g, fsplit_ros/weights/nanodet_bottleneck.pt), on the 22
# photos it never saw: measured 4.3 KB at fidelity mAP@0.5 0.86 against JPEG q95's 75.7 KB at 0.99
# (0.057x the bytes; config/train_nanodet_kd.yaml). The floors leave room for platform noise, not for a broken encoder.
MIN_DETECTION_FIDELITY_MAP50 = 0.6
MAX_DETECTION_BYTES_VS_JPEG95 = 0.15


@pytest.fixture(scope="module")
def shipped_detector():
    from test_detector import _files_or_skip
    files = _files_or_skip()
    path = default_bottleneck_path("nanodet")
    assert path.is_file(), f"{path} is missing: train it with SWEEPS=nanodet bash tools/train_defaults.sh"
    return path, Deployment.load("nanodet", weights=str(files.directory))


def test_shipped_detector_checkpoint_is_the_default_and_fits_the_detector(shipped_detector):
    path, dep = shipped_detector
    assert dep.task.name == "detection" and dep.bottleneck is not None
    assert dep.bottleneck.config.backbone == "nanodet" and path.stat().st_size < 5 * 2 ** 20
    meta = dep.bottleneck_metadata
    assert meta["backbone_weights_hash"] == dep.backbone.weights_hash
    assert meta["heldout"]["fidelity_map50"] > 0 and meta["heldout"]["frames"] >= 1000
    photo_names = {p.name for p, _ in labelled_imagenet_photos()}
    assert photo_names <= set(meta["heldout_sources"]) and not photo_names & set(meta["train_sources"])


def test_shipped_detector_checkpoint_keeps_the_detections_at_a_fraction_of_the_jpeg_bytes(shipped_detector, photos):
    from fsplit_ros.detection import assets
    from fsplit_ros.evaluation.detection_fidelity import (REFERENCE_THRESHOLD, evaluate_configuration)
    import cv2
    _, dep = shipped_detector
    frames = [rgb for rgb, _ in photos]
    for name in ("bus.jpg", "zidane.jpg"):   # never in any training corpus
        try:
            frames.append(cv2.cvtColor(cv2.imread(str(assets.sample_photo(name))), cv2.COLOR_BGR2RGB))
        except assets.DetectorFilesNotFound:
            pass
    enc, dec = OnboardEncoder(dep), EdgeDecoder(dep)
    reference = [dep.results(enc.predict_local(enc.prepare(f)), f.shape[1], f.shape[0],
                             score_threshold=REFERENCE_THRESHOLD) for f in frames]
    assert sum(map(len, reference)) >= 20
    bottleneck = evaluate_configuration(dep, enc, dec, frames, reference, "bottleneck")
    jpeg = evaluate_configuration(dep, OnboardEncoder(dep, image_codec="jpeg", image_quality=95), dec,
                                  frames, reference, "image")
    assert jpeg["map50"] > 0.9, jpeg                     # the scoring itself works
    assert bottleneck["map50"] >= MIN_DETECTION_FIDELITY_MAP50, (bottleneck, jpeg)
    assert bottleneck["bytes_mean"] <= MAX_DETECTION_BYTES_VS_JPEG95 * jpeg["bytes_mean"], (bottleneck, jpeg)
