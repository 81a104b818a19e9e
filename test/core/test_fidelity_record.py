"""Fidelity records: every image and split configuration fsplit-eval measured carries its held-out
agreement into the profile, so the link monitor's default floor keeps lossy pixels out of a
classifier's choices; unknown weights or codecs stay unknown, never borrowed."""
import json

import pytest

from fsplit_ros.cli.evaluate import main as eval_cli
from fsplit_ros.policy import DEFAULT_MIN_FIDELITY, CostModel, LinkProfile, ModeSelector, preferred_modes
from fsplit_ros.profiling.fidelity import (attach_fidelity, config_key, key_of_result_row, load_record,
                                           record_from_results)


def test_result_rows_of_both_tables_name_the_configuration_the_encoder_sends():
    assert key_of_result_row({"method": "jpeg", "setting": "q95"}) == "image jpeg:95 model"
    assert key_of_result_row({"method": "png", "setting": "level 6"}) == "image png model"
    assert key_of_result_row({"method": "split", "setting": "13 blocks.5.0 uint8-channel+zlib"}) == \
        "split@13 uint8-channel+zlib"
    assert key_of_result_row({"method": "image-native", "setting": "webp q30"}) == "image webp:30 native"
    assert key_of_result_row({"method": "bottleneck", "setting": "beta=1"}) is None
    # the profile's own description of its codecs gives the same keys
    assert config_key("image", image_codec="jpeg:95") == "image jpeg:95 model"
    assert config_key("image", image_codec="png:1") == "image png model"      # lossless at any level
    assert config_key("local") is None and config_key("bottleneck") is None
    assert config_key("image") is None and config_key("split", 13) is None   # codec not stated


def _profile(weights="w1", image_codec="jpeg:95", bottleneck_fidelity=0.97):
    return LinkProfile.from_dict({"backbone": "efficientnet_lite0", "model_hashes": {"split": weights, "image": weights},
            "tensor_codec": "uint8-channel+zlib", "image_codec": image_codec, "image_resolution": "model",
            "candidates": {
                "local": {"mode": "local", "split_index": None},
                "image": {"mode": "image", "split_index": 0},
                "split@13": {"mode": "split", "split_index": 13},
                "split@7": {"mode": "split", "split_index": 7},
                "bottleneck": {"mode": "bottleneck", "split_index": 13, "fidelity": bottleneck_fidelity}}})


RECORD = {"format": "fsplit-fidelity/1", "weights_hash": "w1", "metric": "top1_agreement",
          "measured_on": "held-out family A, 1061 frames", "entries": {
              "image jpeg:95 model": {"fidelity": 0.855}, "image png model": {"fidelity": 1.0},
              "split@13 uint8-channel+zlib": {"fidelity": 0.998}}}


def test_attach_fills_recorded_configurations_and_reports_the_unknown_ones():
    profile = _profile()
    assert attach_fidelity(profile, RECORD) == ["split@7"]      # measured with another codec set
    c = profile.candidates
    assert c["image"].fidelity == 0.855 and "family A" in c["image"].fidelity_source
    assert c["split@13"].fidelity == 0.998
    assert c["bottleneck"].fidelity == 0.97                     # its checkpoint's record wins
    assert c["local"].fidelity is None
    assert attach_fidelity(profile, RECORD) == ["split@7"]      # idempotent
    png = _profile(image_codec="png:1")
    attach_fidelity(png, RECORD)
    assert png.candidates["image"].fidelity == 1.0
    # other weights: nothing is borrowed from the default model's record
    other = _profile(weights="w2")
    assert attach_fidelity(other, RECORD) == ["image", "split@13", "split@7"]
    assert attach_fidelity(_profile(), None) == ["image", "split@13", "split@7"]
    bare = LinkProfile.from_dict({"backbone": "x", "candidates": {"image": {"mode": "image", "split_index": 0}}})
    assert attach_fidelity(bare, RECORD) == ["image"]


def test_the_default_floor_keeps_jpeg_pixels_out_until_it_is_lowered():
    """At 50 Mbit/s image mode is the fastest candidate; with its recorded 85.5 % agreement the
    default floor makes the selector and preferred_modes pass it over for the fastest faithful one."""
    profile = _profile()
    for name, c in profile.candidates.items():
        c.bytes = {"local": 0, "image": 17000, "split@13": 10800, "split@7": 15800, "bottleneck": 4800}[name]
        c.onboard_ms = {"local": 26.0, "image": 1.0, "split@13": 11.0, "split@7": 6.5, "bottleneck": 13.0}[name]
        c.offboard_ms = {1: 0.0 if name == "local" else 20.0}
    attach_fidelity(profile, RECORD)
    predictions = CostModel(profile, camera_rate=10.0, onboard_scale=4.0).predict(50e6, 0.002)
    assert preferred_modes(predictions, 0.15) == {"image"}
    assert "image" not in preferred_modes(predictions, 0.15, DEFAULT_MIN_FIDELITY)
    strict = ModeSelector(["local", "split", "bottleneck", "image"], min_fidelity=DEFAULT_MIN_FIDELITY)
    d = strict.update(predictions, 0.0, now=10.0)
    assert d.candidate != "image" and d.candidate.split("@")[0] in preferred_modes(
        predictions, 0.15, DEFAULT_MIN_FIDELITY)
    lax = ModeSelector(["local", "split", "bottleneck", "image"], min_fidelity=0.8)
    assert lax.update(predictions, 0.0, now=10.0).candidate == "image"


def test_shipped_records_belong_to_the_default_weights_and_put_jpeg_below_the_floor(lite0):
    """The Lite0 record (fsplit-eval --family A): lossy pixels below the default floor, lossless
    PNG and every uint8 split tensor above it, for exactly the weights the nodes load by default."""
    record = load_record("efficientnet_lite0")
    assert record["weights_hash"] == lite0.backbone.weights_hash
    entries = record["entries"]
    assert entries["image jpeg:95 model"]["fidelity"] < DEFAULT_MIN_FIDELITY
    assert entries["image png model"]["fidelity"] == 1.0
    splits = {k: e for k, e in entries.items() if k.startswith("split@")}
    assert {f"split@{i} uint8-channel+zlib" for i in lite0.compressive_split_indices()} <= set(splits)
    assert all(e["fidelity"] >= DEFAULT_MIN_FIDELITY for e in splits.values())
    for e in entries.values():
        assert e["lo"] <= e["fidelity"] <= e["hi"]
    assert load_record("nanodet")["metric"] == "fidelity_map50"
    assert load_record("no_such_model") is None


def test_fsplit_eval_record_writes_what_attach_reads(tmp_path, lite0):
    out = tmp_path / "eval"
    record_path = tmp_path / "record.json"
    assert eval_cli(["--out", str(out), "--max-frames", "4", "--qualities", "95", "--split-codecs",
                     "uint8-channel+zlib", "--record", str(record_path)]) == 0
    record = json.loads(record_path.read_text())
    summary = json.loads((out / "rate_accuracy.json").read_text())
    assert record == {**record_from_results(summary, lite0.backbone.weights_hash)}
    assert record["weights_hash"] == lite0.backbone.weights_hash
    assert record["entries"]["image png model"]["fidelity"] == 1.0
    assert set(record["entries"]) >= {"image jpeg:95 model", "image webp:95 model"} | {
        f"split@{i} uint8-channel+zlib" for i in lite0.compressive_split_indices()}
    profile = _profile(weights=lite0.backbone.weights_hash)
    profile.candidates.pop("split@7")
    assert attach_fidelity(profile, record) == []
    jpeg = next(r for r in summary["rows"] if r["method"] == "jpeg" and r["setting"] == "q95")
    assert profile.candidates["image"].fidelity == pytest.approx(jpeg["agreement"])


def test_demo_report_puts_each_candidates_fidelity_next_to_its_bytes_and_latency():
    """Results are attributed by camera stamp to the payload that carried them (local when none
    did); fidelity comes from what the link monitor published in link_state."""
    from fsplit_ros.demo import candidate_table, per_candidate
    # as the monitor publishes it: every candidate, local 1, unknown None
    events = [{"topic": "link_state", "t": 0.0,
               "fidelity": {"local": 1.0, "split@13": 0.998, "image": 0.855, "bottleneck": None}},
              {"topic": "compressed_feature", "t": 1.0, "stamp": 1.0, "mode": "split", "split": 13, "bytes": 10000},
              {"topic": "classification", "t": 1.05, "stamp": 1.0},
              {"topic": "compressed_feature", "t": 2.0, "stamp": 2.0, "mode": "image", "split": 0, "bytes": 17000},
              {"topic": "classification", "t": 2.03, "stamp": 2.0},
              {"topic": "compressed_feature", "t": 3.0, "stamp": 3.0, "mode": "bottleneck", "split": 13, "bytes": 4800},
              {"topic": "classification", "t": 3.04, "stamp": 3.0},
              {"topic": "classification", "t": 4.1, "stamp": 4.0}]
    rows = per_candidate(events)
    assert rows["split@13"] == {"results": 1, "bytes_per_frame": 10000.0, "latency_ms_p50": pytest.approx(50.0),
                                "fidelity": 0.998}
    assert rows["image"]["fidelity"] == 0.855 and rows["image"]["bytes_per_frame"] == 17000
    assert rows["bottleneck"]["fidelity"] is None
    assert rows["local"] == {"results": 1, "bytes_per_frame": 0.0, "latency_ms_p50": pytest.approx(100.0),
                             "fidelity": 1.0}
    table = candidate_table(rows)
    assert "85.5 %" in table and "unknown" in table and "split@13" in table
