"""Bag evaluation (fsplit_ros.evaluation.bag_report), ROS-free: synthetic rosbag2 bags written with
rosbags' Writer (MCAP and sqlite3) and the fsplit typestore, with known stamps, sizes, modes and
losses; every reported number is checked against the scenario."""
import json

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer

from fsplit_ros.cli.eval_bag import main as eval_bag_main
from fsplit_ros.evaluation.bag_report import BagReportError, evaluate_bag, image_owner, topic_namespace
from fsplit_ros.evaluation.intervals import wilson_interval
from fsplit_ros.evaluation.bag_types import fsplit_typestore

MS = 1_000_000
T0 = 1_700_000_000 * 1_000_000_000     # bag/robot clock origin, ns
STORE = fsplit_typestore()
T = STORE.types


def _time(ns):
    return T["builtin_interfaces/msg/Time"](sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def _header(ns, frame_id="camera"):
    return T["std_msgs/msg/Header"](stamp=_time(ns), frame_id=frame_id)


def image(stamp, pixel):
    """A 2x2 mono8 frame whose pixels encode the class the fake local model 'sees'."""
    return T["sensor_msgs/msg/Image"](header=_header(stamp), height=2, width=2, encoding="mono8",
                                      is_bigendian=0, step=2, data=np.full(4, pixel, np.uint8))


def feature(stamp, seq, mode, split, nbytes, model="efficientnet_lite0"):
    return T["fsplit_ros/msg/CompressedFeature"](
        header=_header(stamp), seq=seq, mode=mode, model_name=model, model_hash="ab" * 32, split_index=split,
        shape=np.array([1, 40, 28, 28], np.uint32), dtype="uint8", codec="c", quality=0, image_width=2,
        image_height=2, data=np.arange(nbytes, dtype=np.uint8), encode_time=0.005, publish_stamp=_time(stamp))


def result(stamp, class_id):
    hyp = T["vision_msgs/msg/ObjectHypothesis"]
    # Deliberately not sorted by score: the top-1 is the highest score, not the first entry.
    return T["vision_msgs/msg/Classification"](header=_header(stamp), results=[
        hyp(class_id="7", score=0.2), hyp(class_id=class_id, score=0.7), hyp(class_id="8", score=0.1)])


def feedback(stamp, seq, nbytes, ok, error="", error_kind=0):
    return T["fsplit_ros/msg/FrameFeedback"](
        header=_header(stamp), seq=seq, source="/robot1", bytes=nbytes, sent_stamp=_time(stamp),
        received_stamp=_time(stamp), finished_stamp=_time(stamp), edge_time=0.004, batch_size=2, mode="split",
        split_index=5, ok=ok, error_kind=error_kind, error=error)


def link_state(t, mode, split, rate, reason):
    return T["fsplit_ros/msg/LinkState"](
        header=_header(t, ""), rate_bps=rate, rtt=0.01, since_last_reply=0.1, mode=mode, split_index=split,
        reason=reason, candidate_modes=["local"], predicted_latency=np.array([0.1]),
        sustainable=np.array([True]), fidelity=np.array([1.0]))


def fr(i):
    """Camera stamp of frame i: every 100 ms."""
    return T0 + i * 100 * MS


# Robot 1 (/robot1): 12 camera frames. Bag receive times: frame +2 ms, payload +10, feedback +30,
# result +latency. Frames 0-2 local (2 dropped onboard), 3-6 split@5 (4 right, 5 rejected by the edge,
# 6 never acknowledged), 7-9 image (8 rejected, 9 decoded but its result lost), 10-11 local; plus a
# result for a frame the recorder missed. The fake local model answers pixel value = i + 10; the
# result of frame 4 disagrees.
SPLIT = {3: (1, 1000), 4: (2, 1200), 5: (4, 1400), 6: (5, 1000)}          # frame: (seq, bytes); seq 3 unseen
IMAGE = {7: (6, 20000), 8: (7, 22000), 9: (8, 21000)}
# (ok, error kind number, the edge's words): the report counts the typed kind, not the words
FEEDBACK = {3: (True, 0, ""), 4: (True, 0, ""), 5: (False, 8, "model_mismatch: model hash mismatch"),
            7: (True, 0, ""), 8: (False, 2, "corrupt: the words disagree with the kind"), 9: (True, 0, "")}
LATENCY_MS = {0: 50, 1: 50, 3: 80, 4: 120, 7: 60, 10: 40, 11: 30}
UNRECORDED = T0 + 1500 * MS                                               # result at +25 ms
STATES = [(0, "local", 0, 1e6, "start"), (250, "local", 0, 3e6, "keep local"),
          (300, "split", 5, 20e6, "link up"), (650, "image", 0, 50e6, "fast link"),
          (950, "local", 0, 0.0, "link down"), (1200, "local", 0, 0.0, "keep local")]


def write_scenario(path, storage):
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    msgs = []   # (topic, type, bag time, msg)
    for i in range(12):
        msgs.append(("/robot1/camera/image_raw", "sensor_msgs/msg/Image", fr(i) + 2 * MS, image(fr(i), i + 10)))
    for i in range(3):   # a second camera under robot1 whose stamps match nothing
        msgs.append(("/robot1/depth/image_raw", "sensor_msgs/msg/Image", fr(i) + 9 * MS, image(fr(i) + 7 * MS, 0)))
    for table, mode, split in ((SPLIT, "split", 5), (IMAGE, "image", 0)):
        for i, (seq, nbytes) in table.items():
            msgs.append(("/robot1/compressed_feature", "fsplit_ros/msg/CompressedFeature", fr(i) + 10 * MS,
                         feature(fr(i), seq, mode, split, nbytes)))
    for i, (ok, kind, error) in FEEDBACK.items():
        seq, nbytes = {**SPLIT, **IMAGE}[i]
        msgs.append(("/robot1/frame_feedback", "fsplit_ros/msg/FrameFeedback", fr(i) + 30 * MS,
                     feedback(fr(i), seq, nbytes, ok, error, kind)))
    for i, lat in LATENCY_MS.items():
        msgs.append(("/robot1/classification", "vision_msgs/msg/Classification", fr(i) + lat * MS,
                     result(fr(i), "99" if i == 4 else str(i + 10))))
    msgs.append(("/robot1/classification", "vision_msgs/msg/Classification", UNRECORDED + 25 * MS,
                 result(UNRECORDED, "5")))
    for t, mode, split, rate, reason in STATES:
        msgs.append(("/robot1/link_state", "fsplit_ros/msg/LinkState", T0 + t * MS,
                     link_state(T0 + t * MS, mode, split, rate, reason)))
    # Robot 2 (/robot2): bottleneck only, results on a remapped topic name, no camera, no feedback.
    for k in range(2):
        stamp = T0 + (200 + 300 * k) * MS
        msgs.append(("/robot2/compressed_feature", "fsplit_ros/msg/CompressedFeature", stamp + 5 * MS,
                     feature(stamp, k + 1, "bottleneck", 6, 300 + 100 * k)))
        msgs.append(("/robot2/results", "vision_msgs/msg/Classification", stamp + 70 * MS, result(stamp, "3")))
    # Not evaluated: an unrelated topic, and a camera outside every robot namespace.
    msgs.append(("/chatter", "std_msgs/msg/String", T0 + 5 * MS, T["std_msgs/msg/String"](data="hi")))
    msgs.append(("/robot3/camera/image_raw", "sensor_msgs/msg/Image", T0 + 7 * MS, image(T0, 1)))

    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conns = {}
        for topic, msgtype, t, msg in sorted(msgs, key=lambda m: m[2]):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=STORE)
            writer.write(conns[topic], t, STORE.serialize_cdr(msg, msgtype))
    return path


def fake_local_model(msg):
    return str(int(msg.data[0]))


@pytest.fixture(scope="module", params=["mcap", "sqlite3"])
def report(request, tmp_path_factory):
    bag = write_scenario(tmp_path_factory.mktemp(request.param) / "bag", request.param)
    return evaluate_bag(bag, bin_s=0.5, reference=fake_local_model)


def test_topics_found_by_type_and_grouped_by_namespace(report):
    assert report["storage"] in ("mcap", "sqlite3")
    assert sorted(report["robots"]) == ["/robot1", "/robot2"]
    assert report["robots"]["/robot1"]["topics"] == {
        "classification": "/robot1/classification", "compressed_feature": "/robot1/compressed_feature",
        "frame_feedback": "/robot1/frame_feedback", "image": "/robot1/camera/image_raw",
        "link_state": "/robot1/link_state"}
    assert report["robots"]["/robot2"]["topics"] == {"classification": "/robot2/results",
                                                     "compressed_feature": "/robot2/compressed_feature"}
    assert report["other_topics"] == {"/chatter": "std_msgs/msg/String",
                                      "/robot1/depth/image_raw": "sensor_msgs/msg/Image",
                                      "/robot3/camera/image_raw": "sensor_msgs/msg/Image"}
    assert any("/robot1/depth/image_raw" in n for n in report["robots"]["/robot1"]["notes"])


def test_bytes_per_frame_and_bitrate_by_mode(report):
    r = report["robots"]["/robot1"]
    pay = r["payloads"]
    assert pay["count"] == 7 and pay["bytes_total"] == 4600 + 63000
    assert pay["seq_gaps"] == 1 and pay["seq_restarts"] == 0
    assert pay["models"] == ["efficientnet_lite0"]
    split, img = pay["by_mode"]["split"], pay["by_mode"]["image"]
    assert (split["frames"], split["bytes_mean"], split["bytes_median"], split["bytes_min"], split["bytes_max"],
            split["bytes_total"], split["split_indices"]) == (4, 1150.0, 1100.0, 1000, 1400, 4600, {"5": 4})
    assert (img["frames"], img["bytes_mean"], img["bytes_median"], img["bytes_min"], img["bytes_max"],
            img["bytes_total"], img["split_indices"]) == (3, 21000.0, 21000.0, 20000, 22000, 63000, {"0": 3})
    assert list(pay["by_mode_and_split"]) == ["split@5", "image@0"]
    # Bag span of robot1: the first LinkState (T0) to the last result (1.525 s).
    assert r["duration_s"] == 1.525
    assert pay["mean_bitrate_bps"] == pytest.approx(67600 * 8 / 1.525, rel=1e-12)
    # 0.5 s bins: split payloads at 0.31, 0.41 | 0.51, 0.61 s; image at 0.71, 0.81, 0.91 s.
    br = r["series"]["bitrate"]
    assert br["t_s"] == [0.0, 0.5, 1.0, 1.5]
    assert br["bps_by_mode"] == {"split": [2200 * 16, 2400 * 16, 0, 0], "image": [0, 63000 * 16, 0, 0]}
    assert split["bitrate_bps_while_active"] == 4600 * 8 / 1.0
    assert img["bitrate_bps_while_active"] == 63000 * 8 / 0.5


def test_latency_by_the_mode_each_frame_was_sent_in(report):
    r = report["robots"]["/robot1"]
    per = {x["stamp_ns"]: x for x in r["series"]["results"]}
    assert len(per) == 8
    for i, lat in LATENCY_MS.items():
        want_mode = "split" if i in SPLIT else "image" if i in IMAGE else "local"
        assert (per[fr(i)]["mode"], per[fr(i)]["latency_ms"]) == (want_mode, float(lat))
    assert (per[UNRECORDED]["mode"], per[UNRECORDED]["latency_ms"]) == ("local", 25.0)
    lat = r["latency_ms"]["by_mode"]
    assert list(lat) == ["local", "split", "image"]
    assert (lat["local"]["count"], lat["local"]["min"], lat["local"]["p50"], lat["local"]["max"],
            lat["local"]["mean"]) == (5, 25.0, 40.0, 50.0, 39.0)
    assert (lat["split"]["count"], lat["split"]["p50"], lat["split"]["max"]) == (2, 100.0, 120.0)
    assert (lat["image"]["count"], lat["image"]["p50"]) == (1, 60.0)
    assert lat["split"]["p90"] == pytest.approx(116.0) and lat["local"]["p95"] == pytest.approx(50.0)
    assert r["latency_ms"]["all"]["count"] == 8 and r["latency_ms"]["all"]["p50"] == 50.0
    # top-1 = highest score, not the first hypothesis
    assert per[fr(0)]["result"] == "10"


def test_frames_results_and_where_drops_happened(report):
    d = report["robots"]["/robot1"]["delivery"]
    assert d["camera_frames"] == 12 and d["camera_fps"] == pytest.approx(10.0)
    assert d["results"] == 8 and d["duplicate_results"] == 0
    assert d["delivered_fps"] == pytest.approx(7 / 1.475)          # results at 0.05 ... 1.525 s
    assert d["frames_with_result"] == 7 and d["frames_without_result"] == 5
    assert d["delivery_ratio"] == 7 / 12
    assert d["lost"] == {"not_sent": 1, "no_feedback": 1, "rejected": 2, "result_lost": 1}
    assert d["results_without_frame"] == 1
    assert d["payloads_without_result"] == 4                         # frames 5, 6, 8, 9
    fb = report["robots"]["/robot1"]["feedback"]
    assert (fb["count"], fb["ok"], fb["rejected"]) == (6, 4, 2)
    assert fb["rejected_by_kind"] == {"model_mismatch": 1, "truncated": 1}
    # The edge saw seqs 1 2 4 6 7 8: seq 3 (never recorded either) and seq 5 (frame 6) missing.
    assert fb["payloads_without_feedback"] == 1 and fb["seq_gaps"] == 2 and fb["seq_restarts"] == 0
    assert fb["edge_time_ms_mean"] == pytest.approx(4.0) and fb["batch_size_mean"] == 2.0


def test_mode_timeline_with_measured_rate(report):
    r = report["robots"]["/robot1"]
    assert [(s["start_s"], s["end_s"], s["mode"], s["split_index"], s["reason"], s["states"], s["rate_bps_mean"])
            for s in r["mode_timeline"]] == [
        (0.0, 0.3, "local", 0, "start", 2, 2e6), (0.3, 0.65, "split", 5, "link up", 1, 20e6),
        (0.65, 0.95, "image", 0, "fast link", 1, 50e6), (0.95, 1.2, "local", 0, "link down", 2, 0.0)]
    assert r["mode_switches"] == 3
    assert r["time_in_mode_s"] == pytest.approx({"local": 0.55, "split": 0.35, "image": 0.3})
    assert r["series"]["link_state"]["rate_bps"] == [s[3] for s in STATES]


def test_agreement_with_the_local_model_by_mode(report):
    a = report["robots"]["/robot1"]["agreement"]
    assert (a["evaluated"], a["agree"], a["rate"], a["metric"]) == (7, 6, 6 / 7, "top-1 agreement")
    assert (a["low"], a["high"]) == pytest.approx(wilson_interval(6, 7)) and a["low"] < 6 / 7 < a["high"]
    assert {m: (x["evaluated"], x["agree"], x["rate"]) for m, x in a["by_mode"].items()} == {
        "local": (4, 4, 1.0), "split": (2, 1, 0.5), "image": (1, 1, 1.0)}
    assert a["by_mode"]["split"]["low"] == pytest.approx(wilson_interval(1, 2)[0])
    assert a["results_without_frame"] == 1 and a["unconvertible_frames"] == 0
    assert report["robots"]["/robot2"]["agreement"] == {"skipped": "camera frames not recorded"}


def test_clock_check(report):
    c = report["robots"]["/robot1"]["clock"]
    assert c["consistent"] and c["camera_to_recorder_ms"]["p50"] == 2.0
    assert report["robots"]["/robot1"]["warnings"] == []


def test_second_robot(report):
    r = report["robots"]["/robot2"]
    assert r["payloads"]["by_mode"]["bottleneck"]["bytes_mean"] == 350.0
    assert r["payloads"]["by_mode"]["bottleneck"]["split_indices"] == {"6": 2}
    assert r["latency_ms"]["by_mode"]["bottleneck"]["p50"] == 70.0
    assert r["delivery"]["camera_frames"] is None and r["delivery"]["results"] == 2
    assert r["mode_timeline"] == [] and r["feedback"]["count"] == 0
    assert r["feedback"]["payloads_without_feedback"] is None    # no FrameFeedback topic: unknown, not 2
    assert any("camera frames were not recorded" in n for n in r["notes"])
    assert any("no FrameFeedback recorded" in n for n in r["notes"])


def test_cli_writes_json_plots_and_table(tmp_path, capsys):
    bag = write_scenario(tmp_path / "bag", "mcap")
    out = tmp_path / "out"
    assert eval_bag_main([str(bag), "--out", str(out), "--no-agreement", "--bin-s", "0.5"]) == 0
    table = capsys.readouterr().out
    saved = json.loads((out / "report.json").read_text())
    assert saved["robots"]["/robot1"]["payloads"]["by_mode"]["split"]["bytes_mean"] == 1150.0
    assert saved["robots"]["/robot1"]["agreement"] == {"skipped": "disabled (--no-agreement)"}
    for name in ("robot1_bitrate", "robot1_latency_cdf", "robot1_mode_timeline", "robot2_bitrate"):
        png = out / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    assert "robot /robot1" in table and "robot /robot2" in table
    assert "delivered 7/12 = 0.583" in table
    assert "(not_sent 1, no_feedback 1, rejected 2, result_lost 1)" in table
    assert "split@5" in table and "1150" in table and "1000..1400" in table
    assert "link up" in table and "fast link" in table


def test_bag_without_fsplit_topics_says_what_it_has(tmp_path, capsys):
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/chatter", "std_msgs/msg/String", typestore=STORE)
        writer.write(conn, T0, STORE.serialize_cdr(T["std_msgs/msg/String"](data="x"), "std_msgs/msg/String"))
    with pytest.raises(BagReportError, match=r"no fsplit topics.*/chatter \(std_msgs/msg/String\)"):
        evaluate_bag(tmp_path / "bag", agreement=False)
    assert eval_bag_main([str(tmp_path / "bag"), "--out", str(tmp_path / "o")]) == 2
    assert "no fsplit topics" in capsys.readouterr().err


def test_not_a_bag(tmp_path):
    with pytest.raises(BagReportError, match="no metadata.yaml"):
        evaluate_bag(tmp_path, agreement=False)
    with pytest.raises(BagReportError, match="does not exist"):
        evaluate_bag(tmp_path / "missing", agreement=False)


def test_clock_mismatch_is_flagged(tmp_path):
    """A bag recorded on a machine whose clock is 5 s ahead of the camera's."""
    offset = 5000 * MS
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=STORE)
        res = writer.add_connection("/classification", "vision_msgs/msg/Classification", typestore=STORE)
        for i in range(3):
            writer.write(cam, fr(i) + offset, STORE.serialize_cdr(image(fr(i), 1), "sensor_msgs/msg/Image"))
            writer.write(res, fr(i) + offset + 40 * MS,
                         STORE.serialize_cdr(result(fr(i), "1"), "vision_msgs/msg/Classification"))
    r = evaluate_bag(tmp_path / "bag", reference=fake_local_model)["robots"]["/"]
    assert r["topics"]["image"] == "/camera/image_raw"          # root namespace owns /camera/...
    assert not r["clock"]["consistent"] and r["clock"]["camera_to_recorder_ms"]["p50"] == 5000.0
    assert any("differ" in w for w in r["warnings"])
    assert r["latency_ms"]["all"]["p50"] == 5040.0
    assert r["agreement"]["rate"] == 1.0 and r["latency_ms"]["by_mode"].keys() == {"local"}
    assert r["delivery"]["lost"] == {"not_sent": 0, "sent_without_result": 0}   # no FrameFeedback topic


OLD_FEATURE = """std_msgs/Header header
uint64 seq
string mode
int32 split_index
uint8[] data
"""


def _old_store(definition):
    from rosbags.typesys import Stores, get_types_from_msg, get_typestore
    store = get_typestore(Stores.ROS2_KILTED)
    store.register(get_types_from_msg(definition, "fsplit_ros/msg/CompressedFeature"))
    return store


def test_bag_with_an_older_message_definition_is_read_with_its_own(tmp_path):
    """A bag recorded before CompressedFeature gained fields: its embedded definition (and hash)
    differ from this package's, so it is decoded with the bag's; the missing timings are None."""
    old = _old_store(OLD_FEATURE)
    Old = old.types["fsplit_ros/msg/CompressedFeature"]
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        conn = writer.add_connection("/compressed_feature", "fsplit_ros/msg/CompressedFeature", typestore=old)
        for k, n in enumerate((500, 700)):
            msg = Old(header=_header(fr(k)), seq=k + 1, mode="split", split_index=3, data=np.zeros(n, np.uint8))
            writer.write(conn, fr(k) + 10 * MS, old.serialize_cdr(msg, "fsplit_ros/msg/CompressedFeature"))
    r = evaluate_bag(tmp_path / "bag", agreement=False)["robots"]["/"]
    split = r["payloads"]["by_mode"]["split"]
    assert (split["frames"], split["bytes_mean"], split["split_indices"]) == (2, 600.0, {"3": 2})
    assert r["payloads"]["encode_time_ms_mean"] is None and r["payloads"]["models"] == []
    assert any("differs from this package's" in n for n in r["notes"])


def test_bag_whose_definition_lacks_a_needed_field(tmp_path):
    old = _old_store(OLD_FEATURE.replace("uint64 seq\n", ""))
    Old = old.types["fsplit_ros/msg/CompressedFeature"]
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.SQLITE3) as writer:
        conn = writer.add_connection("/compressed_feature", "fsplit_ros/msg/CompressedFeature", typestore=old)
        msg = Old(header=_header(fr(0)), mode="split", split_index=3, data=np.zeros(5, np.uint8))
        writer.write(conn, fr(0), old.serialize_cdr(msg, "fsplit_ros/msg/CompressedFeature"))
    with pytest.raises(BagReportError, match=r"/compressed_feature .*lacks a field.*seq"):
        evaluate_bag(tmp_path / "bag", agreement=False)


def test_namespace_helpers():
    assert topic_namespace("/robot1/compressed_feature") == "/robot1"
    assert topic_namespace("/compressed_feature") == "/"
    assert topic_namespace("/a/b/link_state") == "/a/b"
    assert image_owner("/robot1/camera/image_raw", ["/", "/robot1", "/robot10"]) == "/robot1"
    assert image_owner("/robot10/camera/image_raw", ["/robot1"]) is None
    assert image_owner("/camera/image_raw", ["/", "/robot1"]) == "/"


def test_unknown_backbone_for_the_agreement_is_a_clear_error(tmp_path, capsys):
    bag = write_scenario(tmp_path / "bag", "mcap")
    assert eval_bag_main([str(bag), "--out", str(tmp_path / "o"), "--backbone", "nosuchnet"]) == 2
    err = capsys.readouterr().err
    assert "cannot load the local model 'nosuchnet'" in err and "--no-agreement" in err


def test_unconvertible_frames_are_counted_not_fatal(tmp_path):
    from fsplit_ros.imaging import ImageEncodingError

    def picky(msg):
        if int(msg.data[0]) == 13:      # frame 3
            raise ImageEncodingError("unsupported image encoding 'weird'")
        return fake_local_model(msg)
    a = evaluate_bag(write_scenario(tmp_path / "bag", "mcap"), reference=picky)["robots"]["/robot1"]["agreement"]
    assert (a["evaluated"], a["agree"], a["unconvertible_frames"]) == (6, 5, 1)   # frame 4 still disagrees


def test_without_the_msg_files_the_bags_own_definitions_are_used(tmp_path, monkeypatch):
    """A pip-installed core has no .msg files to build the typestore from: the definitions the
    recorder embedded in the bag are enough."""
    import fsplit_ros.evaluation.bag_types as bag_types
    bag = write_scenario(tmp_path / "bag", "sqlite3")
    monkeypatch.setattr(bag_types, "_msg_dirs", lambda package: [])
    with pytest.raises(FileNotFoundError):
        bag_types.fsplit_typestore()
    r = evaluate_bag(bag, bin_s=0.5, reference=fake_local_model)["robots"]["/robot1"]
    assert r["payloads"]["by_mode"]["split"]["bytes_mean"] == 1150.0
    assert r["latency_ms"]["by_mode"]["split"]["max"] == 120.0
    assert (r["agreement"]["evaluated"], r["agreement"]["agree"]) == (7, 6)
    assert any("fsplit typestore unavailable" in n for n in r["notes"])


def test_rejections_in_bags_recorded_before_the_typed_kind_are_read_from_the_words():
    from fsplit_ros.evaluation.bag_report import rejection_kind
    assert rejection_kind(0, "model_mismatch: payload for other weights") == "model_mismatch"   # old bag
    assert rejection_kind(10, "corrupt: words") == "refused"
    assert rejection_kind(99, "refused: words") == "other"


def detections_msg(stamp, boxes):
    """A Detection2DArray with (x1, y1, x2, y2, score, class name) boxes."""
    pose = T["geometry_msgs/msg/PoseWithCovariance"](pose=T["geometry_msgs/msg/Pose"](
        position=T["geometry_msgs/msg/Point"](x=0.0, y=0.0, z=0.0),
        orientation=T["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=0.0, w=1.0)), covariance=np.zeros(36))
    out = []
    for x1, y1, x2, y2, score, name in boxes:
        center = T["vision_msgs/msg/Pose2D"](position=T["vision_msgs/msg/Point2D"](x=(x1 + x2) / 2, y=(y1 + y2) / 2),
                                             theta=0.0)
        hyp = T["vision_msgs/msg/ObjectHypothesisWithPose"](
            hypothesis=T["vision_msgs/msg/ObjectHypothesis"](class_id=name, score=score), pose=pose)
        out.append(T["vision_msgs/msg/Detection2D"](
            header=_header(stamp), results=[hyp], id="",
            bbox=T["vision_msgs/msg/BoundingBox2D"](center=center, size_x=x2 - x1, size_y=y2 - y1)))
    return T["vision_msgs/msg/Detection2DArray"](header=_header(stamp), detections=out)


def test_a_detector_run_gets_the_same_report_scored_by_fidelity_map(tmp_path):
    """Detections (NanoDet's Detection2DArray, on a remapped topic) get latency, delivery and an
    agreement in the detection task's metric: fidelity mAP@0.5 against the local detector."""
    from fsplit_ros.detection.detector import Detection
    from fsplit_ros.tasks import TASKS
    person, car = (10.0, 10.0, 50.0, 90.0, 0.9, "person"), (60.0, 20.0, 120.0, 60.0, 0.8, "car")
    received = {0: [person, car], 1: [person, car], 2: [person], 3: [person, car]}   # frame 2 misses the car
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        cam = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=STORE)
        pay = writer.add_connection("/compressed_feature", "fsplit_ros/msg/CompressedFeature", typestore=STORE)
        res = writer.add_connection("/nanodet_out", "vision_msgs/msg/Detection2DArray", typestore=STORE)
        # the demo's recorder subscribes to every task's result topic: an empty one is no second stream
        writer.add_connection("/classification", "vision_msgs/msg/Classification", typestore=STORE)
        for i, boxes in received.items():
            writer.write(cam, fr(i) + 2 * MS, STORE.serialize_cdr(image(fr(i), i), "sensor_msgs/msg/Image"))
            if i >= 2:
                writer.write(pay, fr(i) + 10 * MS, STORE.serialize_cdr(
                    feature(fr(i), i, "split", 5, 900, model="nanodet"), "fsplit_ros/msg/CompressedFeature"))
            writer.write(res, fr(i) + (60 + 10 * i) * MS,
                         STORE.serialize_cdr(detections_msg(fr(i), boxes), "vision_msgs/msg/Detection2DArray"))

    def local_detector(msg):   # the unmodified detector sees both objects in every frame
        return tuple(Detection(b[:4], b[4], {"person": 0, "car": 2}[b[5]], b[5]) for b in (person, car))
    local_detector.task = TASKS["detection"]

    r = evaluate_bag(tmp_path / "bag", reference=local_detector)["robots"]["/"]
    assert r["task"] == "detection" and r["topics"]["detections"] == "/nanodet_out"
    assert not any("publishes both" in n for n in r["notes"]), r["notes"]
    assert r["latency_ms"]["by_mode"]["local"]["count"] == 2 and r["latency_ms"]["by_mode"]["split"]["max"] == 90.0
    assert r["delivery"]["delivery_ratio"] == 1.0
    assert r["series"]["results"][2]["result"] == [[10.0, 10.0, 50.0, 90.0, 0.9, "person"]]
    a = r["agreement"]
    assert a["metric"] == "fidelity mAP@0.5" and a["evaluated"] == 4 and a["reference_detections"] == 8
    assert a["by_mode"]["local"]["rate"] == pytest.approx(1.0)
    # split: frame 2's car is missed (car AP: 1 of 2 found at precision 1 -> 0.5; person 1.0)
    assert a["by_mode"]["split"]["rate"] == pytest.approx(0.75, abs=0.01)
    assert a["rate"] == pytest.approx((1.0 + (3 / 4 * 1.0 + 0)) / 2, abs=0.02) and a["low"] <= a["rate"] <= a["high"]

    # A classifier as the reference for detections: the agreement says so instead of comparing
    def classifier(msg):
        return "1"
    classifier.task = TASKS["classification"]
    a = evaluate_bag(tmp_path / "bag", reference=classifier)["robots"]["/"]["agreement"]
    assert "skipped" in a and "pass the robot's --backbone" in a["skipped"]


def test_a_further_edge_models_results_belong_to_the_robot_they_answer(tmp_path):
    """The decoder's `models` publish <robot>/<model>/<result topic>: counted with that robot (the
    same frames as its own model's results, their latency), not read as a robot of their own; a
    namespace that merely looks like a model name is a robot when nothing else is under its parent."""
    with Writer(tmp_path / "bag", version=9, storage_plugin=StoragePlugin.MCAP) as writer:
        feat = writer.add_connection("/robot1/compressed_feature", "fsplit_ros/msg/CompressedFeature", typestore=STORE)
        own = writer.add_connection("/robot1/classification", "vision_msgs/msg/Classification", typestore=STORE)
        lite2 = writer.add_connection("/robot1/efficientnet_lite2/classification", "vision_msgs/msg/Classification",
                                      typestore=STORE)
        alone = writer.add_connection("/efficientnet_lite2/classification", "vision_msgs/msg/Classification",
                                      typestore=STORE)
        for i in range(4):
            writer.write(feat, fr(i) + 5 * MS, STORE.serialize_cdr(feature(fr(i), i + 1, "bottleneck", 13, 400),
                                                                   "fsplit_ros/msg/CompressedFeature"))
            writer.write(own, fr(i) + 60 * MS, STORE.serialize_cdr(result(fr(i), "3"), "vision_msgs/msg/Classification"))
            if i < 3:   # the last frame's further result is lost
                writer.write(lite2, fr(i) + 70 * MS,
                             STORE.serialize_cdr(result(fr(i), "4"), "vision_msgs/msg/Classification"))
        writer.write(alone, fr(9) + 10 * MS, STORE.serialize_cdr(result(fr(9), "4"), "vision_msgs/msg/Classification"))
    rep = evaluate_bag(tmp_path / "bag")
    assert set(rep["robots"]) == {"/robot1", "/efficientnet_lite2"}
    r = rep["robots"]["/robot1"]
    assert r["delivery"]["results"] == 4 and r["topics"]["classification"] == "/robot1/classification"
    fm = r["further_models"]["efficientnet_lite2"]
    assert fm["topic"] == "/robot1/efficientnet_lite2/classification"
    assert fm["results"] == fm["same_frames_as_robot_model"] == 3 and fm["latency_ms"]["p50"] == 70.0
    assert rep["robots"]["/efficientnet_lite2"]["further_models"] == {}
    assert "/robot1/efficientnet_lite2/classification" not in rep["other_topics"]
