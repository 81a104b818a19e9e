"""The node graph as separate OS processes over real DDS: encoder and decoder (installed
executables, as `ros2 run` starts them), frames in from the test, results out with the camera
frame's header, in every mode."""
import time

import cv2
import pytest
import torch
from vision_msgs.msg import Classification

from fsplit_ros.bottleneck import BottleneckConfig, FrankenSplitBottleneck, save_bottleneck
from fsplit_ros.datasets.offline import labelled_imagenet_photos
from fsplit_ros.modes import candidate_name
from fsplit_ros.msg import LinkState
from ros_harness import bgr_image_msg, command_mode, encoder_decoder_graph


@pytest.fixture(scope="module")
def bottleneck_file(tmp_path_factory):
    """An untrained (random) lite0 bottleneck with valid tables: enough to exercise the wire path."""
    torch.manual_seed(0)
    model = FrankenSplitBottleneck(BottleneckConfig("efficientnet_lite0", 6, 40, 8))
    model.update_tables()
    path = tmp_path_factory.mktemp("bn") / "lite0_untrained.pt"
    save_bottleneck(model, path, {"note": "untrained, test only"})
    return str(path)


def _local_top1(backbone: str):
    from fsplit_ros.runtime import Deployment, OnboardEncoder
    encoder = OnboardEncoder(Deployment.load(backbone, bottleneck=None))

    def top1(path):
        rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
        return int(encoder.predict_local(encoder.prepare(rgb)).argmax())
    return top1


@pytest.fixture(scope="module")
def local_top1():
    return _local_top1("efficientnet_lite0")


@pytest.fixture(scope="module")
def graph(tmp_path_factory, bottleneck_file):
    common = {"backbone": "efficientnet_lite0", "bottleneck_checkpoint": bottleneck_file, "num_threads": 1}
    with encoder_decoder_graph(tmp_path_factory.mktemp("logs"), common, ("classification", Classification)) as g:
        yield g


def _photo_msg(path, sec):
    return bgr_image_msg(cv2.imread(str(path)), sec, 500)


def _results_in_mode(graph, mode: str, base: int, photos) -> dict:
    """Publish the photos (stamped base, base+1, ...) with `mode` commanded until each has a result;
    returns {stamp sec: Classification}."""
    probe, image_pub, state_pub, encoder, decoder = graph
    assert probe.wait_for_subscribers(image_pub, timeout=60), f"encoder not up:\n{encoder.log()}"
    command_mode(state_pub, mode)
    # Command the mode the way the link monitor does, until the encoder obeys.
    seen = {}
    deadline = time.monotonic() + 90
    i = 0
    while len(seen) < len(photos) and time.monotonic() < deadline:
        state_pub.publish(LinkState(mode=mode, reason="test"))
        path, label = photos[i % len(photos)]
        image_pub.publish(_photo_msg(path, base + i % len(photos)))
        i += 1
        time.sleep(0.3)
        for msg in probe.messages("classification"):
            if base <= msg.header.stamp.sec < base + len(photos):
                seen[msg.header.stamp.sec] = msg
    assert len(seen) == len(photos), (f"{mode}: results for {sorted(seen)}\nencoder:\n{encoder.log()}"
                                      f"\ndecoder:\n{decoder.log()}")
    return seen


@pytest.mark.parametrize("mode", ["split", "bottleneck", "image", "local"])
def test_frames_in_results_out_with_camera_header(graph, local_top1, mode):
    probe, image_pub, state_pub, encoder, decoder = graph
    photos = labelled_imagenet_photos()[:3]
    base = 1000 * (["split", "bottleneck", "image", "local"].index(mode) + 1)
    seen = _results_in_mode(graph, mode, base, photos)
    for sec, msg in seen.items():
        assert msg.header.frame_id == "camera_optical" and msg.header.stamp.nanosec == 500
        assert len(msg.results) == 5 and msg.results[0].score >= msg.results[1].score
    sent = [m for m in probe.messages("compressed_feature") if base <= m.header.stamp.sec < base + 3]
    if mode == "local":
        assert not sent, "local mode must not send payloads"
    else:
        assert sent and all(m.mode == mode for m in sent)
        assert all(m.model_name == "efficientnet_lite0" and len(m.data) > 0 for m in sent)
        fb = [f for f in probe.messages("frame_feedback") if base <= f.header.stamp.sec < base + 3]
        assert fb and all(f.ok for f in fb), [f.error for f in fb]
        assert {f.bytes for f in fb} <= {len(m.data) for m in sent}
        # the edge names what it decoded, so the link monitor can compare its edge_time with the profile
        assert {(f.mode, f.split_index) for f in fb} <= {(m.mode, m.split_index) for m in sent}
    # every computed frame's onboard time, named as the link monitor's profile names the candidate
    timings = [t for t in probe.messages("onboard_timing") if base <= t.header.stamp.sec < base + 3]
    assert timings and all(0.0 < t.compute_time < 30.0 for t in timings)
    names = {candidate_name(mode, m.split_index) for m in sent} if sent else {"local"}
    assert {t.candidate for t in timings} == names, ({t.candidate for t in timings}, names)
    if mode in ("split", "image", "local"):   # the unchanged model: same answer as running it here
        for sec, msg in seen.items():
            assert msg.results[0].class_id == str(local_top1(photos[sec - base][0]))


def test_demo_refuses_a_folder_holding_an_earlier_run(tmp_path, capsys):
    """The recorder appends to events.jsonl: an earlier run's events were once read as the new
    run's (its live table showed 0 fps throughout, from stale timestamps)."""
    from fsplit_ros import demo
    (tmp_path / "events.jsonl").write_text('{"t": 0, "topic": "classification"}\n')
    assert demo.main(["--out", str(tmp_path), "--duration", "1", "--link", "loopback"]) == 2
    assert "holds an earlier run (events.jsonl)" in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()                  # nothing was started


@pytest.fixture(scope="module")
def lite2_graph(tmp_path_factory):
    """EfficientNet-Lite2 (260x260 input), added as one BackboneSpec; no bottleneck ships for it, so
    the default checkpoint setting loads none."""
    common = {"backbone": "efficientnet_lite2", "num_threads": 1}
    with encoder_decoder_graph(tmp_path_factory.mktemp("lite2"), common, ("classification", Classification)) as g:
        yield g


@pytest.mark.parametrize("mode", ["split", "local"])
def test_a_backbone_added_by_one_spec_runs_end_to_end(lite2_graph, mode):
    """Lite2 over DDS: split payloads name the model and carry its 260-px geometry's tensor; the
    edge's answers equal the unchanged model run here."""
    probe = lite2_graph[0]
    photos = labelled_imagenet_photos()[3:6]
    base = 7000 + 100 * ["split", "local"].index(mode)
    seen = _results_in_mode(lite2_graph, mode, base, photos)
    top1 = _local_top1("efficientnet_lite2")
    for sec, msg in seen.items():
        assert msg.header.frame_id == "camera_optical"
        assert msg.results[0].class_id == str(top1(photos[sec - base][0]))
    sent = [m for m in probe.messages("compressed_feature") if base <= m.header.stamp.sec < base + 3]
    if mode == "local":
        assert not sent
    else:
        from fsplit_ros.runtime import Deployment
        shapes = {p.index: list(p.shape) for p in Deployment.load("efficientnet_lite2", bottleneck=None).split_points}
        assert sent and all(m.model_name == "efficientnet_lite2" and m.mode == "split" for m in sent)
        assert all(list(m.shape) == shapes[m.split_index] for m in sent), [(m.split_index, list(m.shape)) for m in sent]
