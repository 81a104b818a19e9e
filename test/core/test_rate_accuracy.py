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
