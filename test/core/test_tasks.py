"""The task registry (fsplit_ros/tasks.py) without ROS: results, what reports read back, agreement."""
from types import SimpleNamespace as NS

import pytest
import torch

from fsplit_ros.evaluation.intervals import wilson_interval
from fsplit_ros.tasks import TASKS, task_named


def test_every_task_names_its_topic_type_and_metric_once():
    assert set(TASKS) == {"classification", "detection"}
    assert {t.result_topic for t in TASKS.values()} == {"classification", "detections"}
    assert {t.result_type for t in TASKS.values()} == {"vision_msgs/msg/Classification",
                                                       "vision_msgs/msg/Detection2DArray"}
    with pytest.raises(ValueError, match="unknown task 'segmentation'"):
        task_named("segmentation")


def test_classification_top_k_and_what_a_report_reads_back():
    task = TASKS["classification"]
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    top = task.top_k(logits, 3)
    assert [i for i, _ in top] == [1, 3, 2] and top[0][1] == pytest.approx(torch.softmax(logits, 1)[0, 1].item())
    assert len(task.top_k(logits, 10)) == 4
    assert task.summary(logits) == "1"
    msg = NS(results=[NS(class_id="7", score=0.2), NS(class_id="1", score=0.7)])   # not sorted by score
    assert task.from_msg(msg) == "1" and task.from_msg(NS(results=[])) == ""
    a = task.agreement([("1", "1"), ("2", "2"), ("3", "4")])
    assert (a["evaluated"], a["agree"], a["rate"]) == (3, 2, 2 / 3)
    assert (a["low"], a["high"]) == pytest.approx(wilson_interval(2, 3))


def test_detection_read_back_and_fidelity_map():
    from fsplit_ros.detection.detector import Detection
    task = TASKS["detection"]
    person = Detection((10.0, 20.0, 50.0, 100.0), 0.9, 0, "person")

    def message(dets):
        return NS(detections=[NS(results=[NS(hypothesis=NS(class_id=d.class_name, score=d.score))],
                                 bbox=NS(center=NS(position=NS(x=(d.box[0] + d.box[2]) / 2, y=(d.box[1] + d.box[3]) / 2)),
                                         size_x=d.box[2] - d.box[0], size_y=d.box[3] - d.box[1])) for d in dets])
    [back] = task.from_msg(message([person]))
    assert back.box == pytest.approx(person.box) and (back.class_id, back.class_name) == (0, "person")
    assert task.summary_json((person,)) == [[10.0, 20.0, 50.0, 100.0, 0.9, "person"]]
    same = task.agreement([((person,), (person,))] * 3)
    assert same["rate"] == pytest.approx(1.0) and same["reference_detections"] == 3
    missed = task.agreement([((person,), ())] * 2 + [((person,), (person,))])
    assert missed["rate"] < 0.5 and missed["low"] <= missed["rate"] <= missed["high"]
