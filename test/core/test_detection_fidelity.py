"""Fidelity mAP (detections of a lossy configuration scored against the unmodified detector's):
the scoring itself on hand-made detections, then the whole evaluation on real frames."""
import math

import numpy as np
import pytest

from fsplit_ros.detection.detector import Detection
from fsplit_ros.evaluation.detection_fidelity import fidelity_map


def _det(x1, y1, x2, y2, score=0.9, cls=0):
    return Detection((float(x1), float(y1), float(x2), float(y2)), score, cls, f"c{cls}")


REFERENCE = [[_det(10, 10, 110, 210), _det(300, 50, 400, 150, cls=2)], [_det(50, 60, 250, 260)], []]


def test_reference_against_itself_scores_one():
    assert fidelity_map(REFERENCE, REFERENCE) == (1.0, 1.0)


def test_low_score_extras_ranked_below_every_match_cost_nothing():
    extras = [frame + [_det(500, 500, 540, 540, score=0.1)] for frame in REFERENCE]
    assert fidelity_map(REFERENCE, extras) == (1.0, 1.0)


def test_a_shift_keeps_map50_but_lowers_the_strict_thresholds():
    # 100x200 box moved 15 px right: IoU = 85*200 / (115*200) = 0.74 -> a match at 0.5..0.70 only
    shifted = [[_det(x1 + 15, y1, x2 + 15, y2, d.score, d.class_id) for d in frame for x1, y1, x2, y2 in [d.box]]
               for frame in REFERENCE]
    map50, map50_95 = fidelity_map(REFERENCE, shifted)
    assert map50 == pytest.approx(1.0)
    assert 0.2 < map50_95 < 0.8


def test_missing_wrong_class_and_empty_predictions_lose_recall():
    wrong_class = [[_det(*d.box, score=d.score, cls=d.class_id + 1) for d in frame] for frame in REFERENCE]
    assert fidelity_map(REFERENCE, wrong_class) == (0.0, 0.0)
    assert fidelity_map(REFERENCE, [[], [], []]) == (0.0, 0.0)
    half = [REFERENCE[0][:1], REFERENCE[1], []]   # 2 of the 3 reference objects found
    map50, _ = fidelity_map(REFERENCE, half)
    assert 0.4 < map50 < 1.0


def test_no_reference_detection_is_nan_not_a_score():
    assert all(math.isnan(v) for v in fidelity_map([[], []], [[_det(0, 0, 10, 10)], []]))
    with pytest.raises(ValueError):
        fidelity_map(REFERENCE, REFERENCE[:2])   # one list per frame on both sides


@pytest.mark.slow
def test_evaluation_on_real_frames_orders_configurations_by_fidelity():
    from test_detector import _files_or_skip
    _files_or_skip()
    from fsplit_ros.datasets.offline import opencv_doc_file
    from fsplit_ros.evaluation.detection_fidelity import evaluate_detection
    import cv2
    cap = cv2.VideoCapture(str(opencv_doc_file("vtest.avi")))
    frames = []
    for _ in range(2):
        ok, bgr = cap.read()
        assert ok
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    rows, info = evaluate_detection(frames, qualities=(10, 95), split_codecs=("fp16+zlib",))
    assert info["reference_detections"] >= 3 and "person" in info["reference_classes"]
    by = {(r.method, r.setting): r for r in rows}
    assert by[("reference", "unmodified detector (local)")].map50 == 1.0
    fp16 = [r for r in rows if r.method == "split"]
    assert {r.setting.split()[0] for r in fp16} == {"2", "5"}
    assert all(r.map50 >= 0.95 for r in fp16)                        # fp16 features: practically lossless
    q10, q95 = by[("image-native", "jpeg q10")], by[("image-native", "jpeg q95")]
    assert q10.bytes_mean < q95.bytes_mean and q10.map50_95 < q95.map50_95
    assert all(r.onboard_ms > 0 and r.edge_ms > 0 for r in rows if r.method != "reference")


def _random_frames(rng, n_frames=40, classes=4):
    """Reference boxes and noisy, partly wrong predictions with random scores."""
    reference, predicted = [], []
    for _ in range(n_frames):
        truth = []
        for _ in range(rng.integers(0, 5)):
            x, y = rng.uniform(0, 300, 2)
            w, h = rng.uniform(10, 120, 2)
            truth.append(Detection((x, y, x + w, y + h), 0.9, int(rng.integers(classes)), "c"))
        pred = []
        for d in truth:
            if rng.random() < 0.8:
                x1, y1, x2, y2 = np.array(d.box) + rng.normal(0, 4, 4)
                box = (min(x1, x2), min(y1, y2), max(x1, x2) + 1, max(y1, y2) + 1)   # a valid box
                cls = d.class_id if rng.random() < 0.9 else int(rng.integers(classes))
                pred.append(Detection(box, float(rng.uniform(0.05, 1)), cls, "c"))
        for _ in range(rng.integers(0, 3)):
            x, y = rng.uniform(0, 300, 2)
            pred.append(Detection((x, y, x + 40, y + 40), float(rng.uniform(0.05, 1)), int(rng.integers(classes)), "c"))
        reference.append(truth)
        predicted.append(pred)
    return reference, predicted


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_per_frame_matching_reproduces_cocoeval_map50(seed):
    """The bootstrap's fast mAP@0.5 (frames matched once, then any resample scored) is COCOeval's."""
    from fsplit_ros.evaluation.detection_fidelity import frame_matches, map_from_matches
    reference, predicted = _random_frames(np.random.default_rng(seed))
    matches = [frame_matches(t, p) for t, p in zip(reference, predicted)]
    assert map_from_matches(matches) == pytest.approx(fidelity_map(reference, predicted)[0], abs=1e-9)
    # a resample with repeated frames is scored as if those frames were distinct images
    pick = [0, 0, 3, 5, 5, 5, 7]
    assert map_from_matches(matches, pick) == pytest.approx(
        fidelity_map([reference[i] for i in pick], [predicted[i] for i in pick])[0], abs=1e-9)


def test_map50_interval_brackets_the_estimate_and_narrows_with_more_frames():
    from fsplit_ros.evaluation.detection_fidelity import map50_interval
    rng = np.random.default_rng(3)
    few_ref, few_pred = _random_frames(rng, n_frames=20)
    many_ref, many_pred = _random_frames(rng, n_frames=200)
    lo, hi = map50_interval(few_ref, few_pred, reps=300)
    estimate = fidelity_map(few_ref, few_pred)[0]
    assert lo <= estimate <= hi and hi - lo > 0.02
    lo2, hi2 = map50_interval(many_ref, many_pred, reps=300)
    assert hi2 - lo2 < hi - lo
    assert map50_interval(few_ref, few_ref, reps=50) == (1.0, 1.0)      # the reference against itself
