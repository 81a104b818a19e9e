"""One encoder, several edge models (issue 19) over real DDS: one encoder process sends one
bottleneck payload per frame; one decoder process with models [efficientnet_lite0,
efficientnet_lite2] answers each frame on both result topics with the camera header; a decoder
fitted to another encoder is refused at start-up with its reason; the recorder logs both topics.

The decoders here are untrained (the plumbing is under test, not their accuracy: that is
bench/shared_encoder.py's); each is built for the shipped Lite0 bottleneck's exact hash."""
import time

import pytest
from vision_msgs.msg import Classification

from fsplit_ros.datasets.offline import labelled_imagenet_photos
from ros_harness import NodeProcess, command_mode, encoder_decoder_graph, photo_msg

LITE2 = "efficientnet_lite2"


def _decoder(encoder_hash: str, folder):
    from fsplit_ros.bottleneck.shared import SharedDecoder, SharedDecoderConfig, save_shared_decoder
    from fsplit_ros.runtime.shared_models import default_decoder_path
    config = SharedDecoderConfig(encoder_hash=encoder_hash, encoder_backbone="efficientnet_lite0",
                                 latent_channels=192, latent_side=7, backbone=LITE2, injection_split=17,
                                 target_channels=208, target_side=9, width=16)
    folder.mkdir(parents=True, exist_ok=True)
    save_shared_decoder(SharedDecoder(config), default_decoder_path(LITE2, "efficientnet_lite0", folder))
    return folder


@pytest.fixture(scope="module")
def lite0_bottleneck_hash():
    from fsplit_ros.runtime import Deployment
    return Deployment.load("efficientnet_lite0").bottleneck_hash


@pytest.fixture(scope="module")
def recorder_events(tmp_path_factory):
    """The demo's recorder (process_graph passes it the further models) beside the graph."""
    log_dir = tmp_path_factory.mktemp("recorder")
    events = log_dir / "events.jsonl"
    recorder = NodeProcess.ros_executable("recorder_node", log_dir, params={
        "events_path": str(events), "record_images": False, "models": [LITE2]})
    yield events, recorder
    recorder.stop()


@pytest.fixture(scope="module")
def two_model_graph(tmp_path_factory, lite0_bottleneck_hash, recorder_events):
    folder = _decoder(lite0_bottleneck_hash, tmp_path_factory.mktemp("decoders"))
    common = {"backbone": "efficientnet_lite0", "num_threads": 1}
    with encoder_decoder_graph(tmp_path_factory.mktemp("shared"), common, ("classification", Classification),
                               decoder_params={"models": ["efficientnet_lite0", LITE2],
                                               "decoder_dir": str(folder)}) as g:
        g[0].subscribe(Classification, f"{LITE2}/classification")
        yield g


def _answers(graph, mode: str, base: int, photos, timeout: float = 90.0) -> tuple[dict, dict]:
    probe, image_pub, state_pub, encoder, decoder = graph
    assert probe.wait_for_subscribers(image_pub, timeout=60), f"encoder not up:\n{encoder.log()}"
    command_mode(state_pub, mode)
    from fsplit_ros.msg import LinkState
    want = set(range(base, base + len(photos)))
    deadline, i = time.monotonic() + timeout, 0
    while time.monotonic() < deadline:
        state_pub.publish(LinkState(mode=mode, reason="test"))
        image_pub.publish(photo_msg(photos[i % len(photos)][0], base + i % len(photos)))
        i += 1
        time.sleep(0.3)
        own = {m.header.stamp.sec: m for m in probe.messages("classification") if m.header.stamp.sec in want}
        other = {m.header.stamp.sec: m for m in probe.messages(f"{LITE2}/classification")
                 if m.header.stamp.sec in want}
        if set(own) == want and (mode != "bottleneck" or set(other) == want):
            break
    return own, other


def test_one_bottleneck_payload_answers_both_models_with_the_camera_header(two_model_graph):
    probe, *_ , decoder = two_model_graph
    photos = labelled_imagenet_photos()[:3]
    own, other = _answers(two_model_graph, "bottleneck", 8100, photos)
    assert set(own) == set(other) == {8100, 8101, 8102}, decoder.log()
    for sec in own:
        assert own[sec].header == other[sec].header and other[sec].header.frame_id == "camera_optical"
        assert len(other[sec].results) == 5 and other[sec].results[0].score > 0
    sent = [m for m in probe.messages("compressed_feature") if 8100 <= m.header.stamp.sec <= 8102]
    assert sent and all(m.mode == "bottleneck" and m.model_name == "efficientnet_lite0" for m in sent)
    # one payload per frame serves both: the robot sent no more payloads than frames it encoded
    assert len(sent) == len({(m.header.stamp.sec, m.header.stamp.nanosec, m.seq) for m in sent})
    assert "answers bottleneck payloads too" in decoder.log()
    assert "may differ from the unmodified model's (no held-out fidelity recorded" in decoder.log()


def test_the_recorder_logs_every_models_results(two_model_graph, recorder_events):
    """What the demo's report counts: the recorder, given the further models, logs their results
    next to the backbone's, for the same camera frames."""
    import json
    events_path, recorder = recorder_events
    photos = labelled_imagenet_photos()[:2]
    want = {8300, 8301}
    deadline, seen = time.monotonic() + 90, {}
    while time.monotonic() < deadline:
        _answers(two_model_graph, "bottleneck", 8300, photos, timeout=5)   # frames go on until both are logged
        lines = events_path.read_text().splitlines() if events_path.exists() else []
        seen = {}
        for e in map(json.loads, lines):
            if int(e.get("stamp", 0)) in want:
                seen.setdefault(e["topic"], set()).add(int(e["stamp"]))
        if seen.get("classification") == seen.get(f"{LITE2}/classification") == want:
            break
    assert seen.get("classification") == seen.get(f"{LITE2}/classification") == want, (seen, recorder.log())


def test_split_payloads_are_the_backbones_alone(two_model_graph):
    probe = two_model_graph[0]
    own, _ = _answers(two_model_graph, "split", 8200, labelled_imagenet_photos()[:2])
    assert set(own) == {8200, 8201}
    time.sleep(1.0)
    assert not [m for m in probe.messages(f"{LITE2}/classification") if 8200 <= m.header.stamp.sec <= 8201]


def test_a_decoder_fitted_to_another_encoder_is_refused_at_start_up(tmp_path):
    folder = _decoder("0" * 64, tmp_path / "decoders")
    node = NodeProcess.ros_executable("decoder_node", tmp_path, params={
        "backbone": "efficientnet_lite0", "models": ["efficientnet_lite0", LITE2], "decoder_dir": str(folder),
        "num_threads": 1})
    try:
        node.proc.wait(timeout=120)
    finally:
        node.stop()
    log = node.log_path.read_text()
    assert node.proc.returncode == 2, log
    assert f"cannot serve model '{LITE2}'" in log and "fit a decoder to this encoder" in log, log
    assert "Traceback" not in log


def test_models_must_include_the_backbone(tmp_path):
    node = NodeProcess.ros_executable("decoder_node", tmp_path, params={
        "backbone": "efficientnet_lite0", "models": [LITE2], "num_threads": 1})
    try:
        node.proc.wait(timeout=120)
    finally:
        node.stop()
    log = node.log_path.read_text()
    assert node.proc.returncode == 2 and "must include backbone 'efficientnet_lite0'" in log, log
