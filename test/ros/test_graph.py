"""The node graph as separate OS processes over real DDS: encoder and decoder (installed
executables, as `ros2 run` starts them), frames in from the test, results out with the camera
frame's header, in every mode."""

import pytest
import torch
from vision_msgs.msg import Classification

from fsplit_ros.bottleneck import BottleneckConfig, FrankenSplitBottleneck, save_bottleneck
from fsplit_ros.datasets.offline import labelled_imagenet_photos
from fsplit_ros.modes import candidate_name
from ros_harness import encoder_decoder_graph, local_top1_of, results_in_mode


@pytest.fixture(scope="module")
def bottleneck_file(tmp_path_factory):
    """An untrained (random) lite0 bottleneck with valid tables: enough to exercise the wire path."""
    torch.manual_seed(0)
    model = FrankenSplitBottleneck(BottleneckConfig("efficientnet_lite0", 6, 40, 8))
    model.update_tables()
    path = tmp_path_factory.mktemp("bn") / "lite0_untrained.pt"
    save_bottleneck(model, path, {"note": "untrained, test only"})
    return str(path)


@pytest.fixture(scope="module")
def local_top1():
    return local_top1_of("efficientnet_lite0")


@pytest.fixture(scope="module")
def graph(tmp_path_factory, bottleneck_file):
    common = {"backbone": "efficientnet_lite0", "bottleneck_checkpoint": bottleneck_file, "num_threads": 1}
    with encoder_decoder_graph(tmp_path_factory.mktemp("logs"), common, ("classification", Classification)) as g:
        yield g


@pytest.mark.parametrize("mode", ["split", "bottleneck", "image", "local"])
def test_frames_in_results_out_with_camera_header(graph, local_top1, mode):
    probe, image_pub, state_pub, encoder, decoder = graph
    photos = labelled_imagenet_photos()[:3]
    base = 1000 * (["split", "bottleneck", "image", "local"].index(mode) + 1)
    seen = results_in_mode(graph, mode, base, photos)
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

