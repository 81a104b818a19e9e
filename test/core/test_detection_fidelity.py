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
