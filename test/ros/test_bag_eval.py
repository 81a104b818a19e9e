"""Bag evaluation of a real run: decoder, encoder and recorder as separate processes over real DDS
in a robot namespace; the test publishes camera frames, commands split mode the way the link
monitor does (after a warm-up round trip, before the recorder starts), watches the payloads and
results itself, stops the recorder with SIGINT (Ctrl-C) so
the bag is closed, evaluates the bag and checks the report against what it observed."""
import os
import signal
import time
from collections import Counter

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import Image
from vision_msgs.msg import Classification

from fsplit_ros.datasets.offline import labelled_imagenet_photos
from fsplit_ros.evaluation.bag_report import LocalModelReference, evaluate_bag, format_table
from fsplit_ros.msg import CompressedFeature, FrameFeedback, LinkState
from fsplit_ros.process_graph import ProcessGraph
from ros_harness import NodeProcess, RosProbe

pytestmark = [pytest.mark.ros, pytest.mark.slow]

NS = "/r1"
N_FRAMES = 6
BACKBONE = "efficientnet_lite0"


def _stamp_ns(stamp):
    return stamp.sec * 1_000_000_000 + stamp.nanosec


def _image_msg(bgr, stamp_ns):
    msg = Image(height=bgr.shape[0], width=bgr.shape[1], encoding="bgr8", step=bgr.shape[1] * 3,
                data=bgr.tobytes())
    msg.header.frame_id = "camera_optical"
    msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, 1_000_000_000)
    return msg


def _wait(cond, timeout, what, graph, detail=lambda: ""):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if graph.dead():
            break
        time.sleep(0.05)
    logs = "\n".join(f"--- {tag}:\n{graph.log(tag)[-3000:]}" for tag in ("encoder", "decoder", "recorder"))
    pytest.fail(f"timed out waiting for {what}; {detail()} dead: {graph.dead()}\n{logs}")


@pytest.fixture
def graph(tmp_path):
    graph = ProcessGraph(tmp_path / "logs")
    yield graph
    graph.close()


def test_report_of_a_recorded_run_matches_what_was_observed(tmp_path, graph):
    # 320x320 (the photos are 512x512): smaller best-effort camera messages are lost less often.
    photos = [cv2.resize(cv2.imread(str(p)), (320, 320), interpolation=cv2.INTER_AREA)
              for p, _ in labelled_imagenet_photos()[:N_FRAMES]]
    common = {"backbone": BACKBONE, "bottleneck_checkpoint": "", "num_threads": 1}
    camera = {"image": "camera/image_raw"}
    graph.start("decoder", "decoder_node", "edge", params=common, namespace=NS)
    graph.start("encoder", "encoder_node", "robot", params=common, remaps=camera, namespace=NS)
    # The full model here too, loaded while the nodes load theirs: the expected agreement, and the
    # evaluator's local model.
    from fsplit_ros.runtime import Deployment, EdgeDecoder, OnboardEncoder
    dep = Deployment.load(BACKBONE, bottleneck=None)
    encoder, decoder = OnboardEncoder(dep), EdgeDecoder(dep)
    probe = RosProbe("fsplit_bag_eval_probe")
    try:
        for kind, topic in [(CompressedFeature, "compressed_feature"), (Classification, "classification"),
                            (FrameFeedback, "frame_feedback")]:
            probe.subscribe(kind, f"{NS}/{topic}")
        image_pub = probe.publisher(Image, f"{NS}/camera/image_raw")
        state_pub = probe.publisher(LinkState, f"{NS}/link_state")
        node = probe.node
        _wait(lambda: (image_pub.get_subscription_count() >= 1 and state_pub.get_subscription_count() >= 1
                       and node.count_subscribers(f"{NS}/compressed_feature") >= 2
                       and node.count_publishers(f"{NS}/classification") >= 2
                       and node.count_publishers(f"{NS}/frame_feedback") >= 1),
              90, "the encoder and decoder to come up", graph)

        def answered(stamp, timeout):
            """A result and the edge's feedback for the frame stamped `stamp` arrived."""
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if (any(_stamp_ns(m.header.stamp) == stamp for m in probe.messages(f"{NS}/classification"))
                        and any(_stamp_ns(f.header.stamp) == stamp for f in probe.messages(f"{NS}/frame_feedback"))):
                    return True
                time.sleep(0.05)
            return False

        # Warm-up, before the recorder exists: until one frame went encoder -> decoder -> probe in split
        # mode. DDS matches endpoints some time after discovery; a payload published before the
        # decoder had matched the encoder was once lost (no result, no feedback).
        deadline, warm_up = time.monotonic() + 60, []
        while True:
            state_pub.publish(LinkState(mode="split", reason="warm-up"))
            time.sleep(0.2)
            stamp = time.time_ns()
            image_pub.publish(_image_msg(photos[0], stamp))
            warm_up.append(stamp)
            if answered(stamp, 3.0):
                break
            assert time.monotonic() < deadline and not graph.dead(), \
                f"no split round trip in 60 s\n{graph.log('encoder')[-2000:]}\n{graph.log('decoder')[-2000:]}"
        graph.start("recorder", "recorder_node", "robot", params={"bag_path": str(tmp_path / "bag")},
                    remaps=camera, namespace=NS)
        # The recorder has matched every publisher (it says so in its log): a bag once missed 5 of 6
        # results whose publishers the recorder matched only 2.6 s after the graph was discovered.
        wanted = {"classification": 2, "compressed_feature": 1, "frame_feedback": 1, "link_state": 1,
                  "camera/image_raw": 1}
        _wait(lambda: all(f"{NS}/{topic}: {n} publisher(s) matched" in graph.log("recorder")
                          for topic, n in wanted.items()), 60, "the recorder to match its publishers", graph)
        time.sleep(0.5)

        # One frame at a time, each after a mode command. Camera topics are best-effort: a frame the
        # encoder never got is published again under a new stamp (the recorder may have it or not).
        states_sent = 0
        published, stamps, frames = [], [], []
        for k, bgr in enumerate(photos):
            for attempt in range(4):
                state_pub.publish(LinkState(mode="split", reason="test"))
                states_sent += 1
                time.sleep(0.2)
                stamp = time.time_ns()
                image_pub.publish(_image_msg(bgr, stamp))
                published.append(stamp)
                deadline = time.monotonic() + 8
                while time.monotonic() < deadline and not any(
                        _stamp_ns(m.header.stamp) == stamp for m in probe.messages(f"{NS}/classification")):
                    time.sleep(0.05)
                if any(_stamp_ns(m.header.stamp) == stamp for m in probe.messages(f"{NS}/classification")):
                    stamps.append(stamp)
                    frames.append(bgr)
                    break
            else:
                pytest.fail(f"frame {k} got no result in 4 tries\n{graph.log('encoder')}\n{graph.log('decoder')}")
        payloads = [m for m in probe.messages(f"{NS}/compressed_feature") if _stamp_ns(m.header.stamp) in published]
        def unanswered():
            with_feedback = {_stamp_ns(f.header.stamp) for f in probe.messages(f"{NS}/frame_feedback")}
            return sorted({_stamp_ns(p.header.stamp) for p in payloads} - with_feedback)
        _wait(lambda: not unanswered(), 10, "feedback", graph,
              lambda: f"payloads {[_stamp_ns(p.header.stamp) for p in payloads]} without feedback "
                      f"{unanswered()}, results {sorted(_stamp_ns(m.header.stamp) for m in probe.messages(f'{NS}/classification'))}")
        time.sleep(1.0)   # the recorder receives what the probe did
        assert graph.stop("recorder") == 0, graph.log("recorder")
        for tag in ("encoder", "decoder"):   # Ctrl-C now; graph.close() reaps them at the end
            os.killpg(graph.procs[tag].pid, signal.SIGINT)
    finally:
        probe.close()

    # What the test observed. Every result is for a frame it published; the recorder's own camera
    # frames (best-effort) are read back from the bag, to know which frames the report can count.
    clock_offset = time.time() - time.monotonic()
    received_at = {_stamp_ns(m.header.stamp): (t + clock_offset) * 1e9
                   for t, m in probe.received[f"{NS}/classification"]}
    all_results = {_stamp_ns(m.header.stamp): m for m in probe.messages(f"{NS}/classification")}
    assert set(all_results) <= set(published) | set(warm_up)
    results = {stamp: m for stamp, m in all_results.items() if stamp in published}   # not the warm-up's
    assert set(stamps) <= set(results)
    feedback = [f for f in probe.messages(f"{NS}/frame_feedback") if _stamp_ns(f.header.stamp) in published]
    sent = {_stamp_ns(p.header.stamp): p for p in payloads}
    assert sent, "the encoder never sent a payload: split mode was not followed"
    assert {p.mode for p in payloads} == {"split"}
    recorded = _recorded_frame_stamps(tmp_path / "bag")
    assert recorded <= set(published) and len(recorded) >= 1

    # What the received classes should agree to, computed here: the full model on the same frames,
    # and the split path (encoder head + uint8 codec + edge tail) reproducing each received class.
    agree_expected = 0
    for stamp, bgr in zip(stamps, frames):
        frame = encoder.prepare(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        local = str(int(encoder.predict_local(frame).argmax()))
        received = results[stamp].results[0].class_id
        agree_expected += stamp in recorded and received == local
        if stamp in sent:
            payload = sent[stamp]
            _, data = encoder.encode_frame(frame, "split", payload.split_index)
            assert len(data) == len(payload.data)
            split_class = str(int(decoder.run_tails([decoder.decode(data)])[0].argmax()))
            assert split_class == received, "the split path here disagrees with the edge's result"

    report = evaluate_bag(tmp_path / "bag", tmp_path / "report", backbone=BACKBONE,
                          reference=LocalModelReference(BACKBONE, encoder=encoder))   # the model loaded above
    print(format_table(report))
    assert report["storage"] == "mcap" and list(report["robots"]) == [NS]
    r = report["robots"][NS]
    assert r["topics"] == {role: f"{NS}/{role}" for role in
                           ("classification", "compressed_feature", "frame_feedback", "link_state")} | {
        "image": f"{NS}/camera/image_raw"}

    d = r["delivery"]
    with_result = recorded & set(results)
    assert d["camera_frames"] == len(recorded) and d["results"] == len(results)
    assert d["frames_with_result"] == len(with_result)
    assert d["frames_without_result"] == len(recorded - set(results))
    # A recorded frame without a result is one the encoder never got (retried under a new stamp).
    assert d["lost"] == {"not_sent": len(recorded - set(results)), "no_feedback": 0, "rejected": 0,
                         "result_lost": 0}
    assert d["results_without_frame"] == len(set(results) - recorded)
    assert d["delivery_ratio"] == len(with_result) / len(recorded)

    pay = r["payloads"]
    sizes = [len(p.data) for p in payloads]
    assert pay["count"] == len(payloads) and pay["bytes_total"] == sum(sizes)
    split = pay["by_mode"]["split"]
    assert (split["frames"], split["bytes_min"], split["bytes_max"]) == (len(sizes), min(sizes), max(sizes))
    assert split["bytes_mean"] == pytest.approx(np.mean(sizes), rel=1e-12)
    assert split["split_indices"] == {str(k): v for k, v in sorted(Counter(p.split_index for p in payloads).items())}
    seqs = [p.seq for p in payloads]
    assert pay["seq_gaps"] == sum(b - a - 1 for a, b in zip(seqs, seqs[1:])) and pay["seq_restarts"] == 0
    assert pay["models"] == [BACKBONE]

    fb = r["feedback"]
    assert (fb["count"], fb["ok"], fb["rejected"]) == (len(feedback), sum(f.ok for f in feedback),
                                                       sum(not f.ok for f in feedback))
    assert fb["payloads_without_feedback"] == len(set(sent) - {_stamp_ns(f.header.stamp) for f in feedback})

    per = {x["stamp_ns"]: x for x in r["series"]["results"]}
    assert set(per) == set(results)
    for stamp, x in per.items():
        assert x["mode"] == ("split" if stamp in sent else "local")
        assert x["result"] == results[stamp].results[0].class_id
        # The recorder and the probe got the same result message on the same clock.
        observed_ms = (received_at[stamp] - stamp) / 1e6
        assert 0 < x["latency_ms"] and abs(x["latency_ms"] - observed_ms) < 500, (x, observed_ms)
    assert r["latency_ms"]["all"]["count"] == len(results)

    assert len(r["series"]["link_state"]["mode"]) == states_sent
    assert [(s["mode"], s["reason"], s["states"]) for s in r["mode_timeline"]] == [("split", "test", states_sent)]

    a = r["agreement"]
    assert (a["evaluated"], a["agree"]) == (len(with_result), agree_expected)
    assert a["rate"] == agree_expected / len(with_result)
    assert r["clock"]["consistent"] and r["warnings"] == []
    for name in ("bitrate", "latency_cdf", "mode_timeline"):
        assert (tmp_path / "report" / f"{name}.png").stat().st_size > 5000
    assert (tmp_path / "report" / "report.json").is_file()


def _recorded_frame_stamps(bag) -> set[int]:
    from rosbags.rosbag2 import Reader

    from fsplit_ros.evaluation.bag_types import fsplit_typestore
    store = fsplit_typestore()
    with Reader(bag) as reader:
        conns = [c for c in reader.connections if c.msgtype == "sensor_msgs/msg/Image"]
        return {_stamp_ns(store.deserialize_cdr(raw, c.msgtype).header.stamp)
                for c, _, raw in reader.messages(connections=conns)}


@pytest.mark.parametrize("node, params, says", [
    ("recorder_node", {"bag_path": "EXISTING"}, "exists already: rosbag2 never overwrites a bag"),
    ("video_source_node", {"source": "/nonexistent/video.mp4"}, "cannot open video source"),
])
def test_a_node_that_cannot_start_says_why_in_one_line_and_exits_2(tmp_path, node, params, says):
    """A configuration mistake is not a crash: no traceback (once the recorder's cleanup itself
    failed on the half-built node and buried the reason under an AttributeError)."""
    (tmp_path / "bag").mkdir()
    params = {k: str(tmp_path / "bag") if v == "EXISTING" else v for k, v in params.items()}
    proc = NodeProcess.ros_executable(node, tmp_path, params=params)
    try:
        proc.proc.wait(60)
    finally:
        code = proc.stop()
    log = proc.log_path.read_text()
    assert code == 2, log
    assert says in log and "Traceback" not in log, log
    assert sum("FATAL" in line for line in log.splitlines()) == 1, log
