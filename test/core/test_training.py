"""FrankenSplit training: Grad-CAM saliency, a tiny real training run that lowers the loss and
writes a checkpoint that decodes bit-exactly after loading, resumable runs, and the configs."""
import json
from pathlib import Path

import pytest
import torch

from fsplit_ros.bottleneck import load_bottleneck
from fsplit_ros.cli.train import main as train_cli
from fsplit_ros.datasets.offline import labelled_imagenet_photos
from fsplit_ros.models import load_backbone, preprocess_rgb
from fsplit_ros.splitting import SplittableModel
from fsplit_ros.training.config import TrainConfig, load_config
from fsplit_ros.training.saliency import cached_saliency, grad_cam
from fsplit_ros.training.trainer import (BottleneckTrainer, StepBatches, TrainingStateError,
                                         prepare_data, resolve_bottleneck_config, split_parameters,
                                         train_sweep)

REPO = Path(__file__).resolve().parents[2]
PHOTOS = [str(p) for p, _ in labelled_imagenet_photos()]
TRAIN, HELDOUT = PHOTOS[:16], PHOTOS[16:]


@pytest.fixture(scope="module")
def backbone():
    """A private Lite0 (the trainer copies it anyway; this keeps the session fixture untouched)."""
    return load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def tiny_run(backbone, tmp_path_factory):
    """40 steps, batch 4, 16 real photos, saliency on; 4 held-out photos."""
    out = tmp_path_factory.mktemp("tiny_run")
    cfg = TrainConfig(backbone="efficientnet_lite0", train_sources=TRAIN, heldout_sources=HELDOUT,
                      betas=[64.0], steps=40, batch_size=4, lr=1e-3, lr_schedule="constant",
                      log_every=1, checkpoint_every=20, eval_every=0, workers=0, seed=0,
                      out_dir=str(out), cache_dir=str(out / "cache"))
    [result] = train_sweep(cfg, progress=False, command="pytest tiny run", backbone=backbone)
    return cfg, result


def _mean(values):
    return sum(values) / len(values)


def _prep(rgb):
    """A photo as the Lite0 model input (1,3,224,224), as deployed."""
    return preprocess_rgb(rgb, 224, 0.875, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


def test_grad_cam_maps(backbone, photos):
    split = SplittableModel(backbone.model)
    head, tail = split.head(6), split.tail(6)
    x = torch.cat([_prep(rgb) for rgb, _ in photos[:3]])
    maps = grad_cam(head, tail, x)
    assert maps.shape == (3, 28, 28)
    assert (maps >= 0).all()
    assert torch.allclose(maps.mean(dim=(1, 2)), torch.ones(3), atol=1e-4)   # mean-normalised
    for i in range(3):
        for j in range(i + 1, 3):
            assert not torch.allclose(maps[i], maps[j], atol=1e-3)
    # not uniform: Grad-CAM singles out positions
    assert (maps.amax(dim=(1, 2)) > 2).all()
    # the caller's backbone keeps its gradients off
    assert not any(p.requires_grad for p in backbone.model.parameters())


def test_saliency_is_cached_per_corpus_and_backbone(backbone, tmp_path):
    cfg = TrainConfig(train_sources=TRAIN[:3], heldout_sources=HELDOUT, saliency=True, cache_dir=str(tmp_path))
    data = prepare_data(cfg, backbone, 6, progress=False)
    assert len(data.saliency) == 3
    assert all(m.ndim == 2 and m.shape[0] == 28 for m in data.saliency)   # short side 224 -> 28
    maps, path, hit = cached_saliency(data.train_frames, backbone, 6, tmp_path)
    assert hit and path.is_file() and all(torch.equal(a, b) for a, b in zip(maps, data.saliency))
    _, other, hit = cached_saliency(data.train_frames[:2], backbone, 6, tmp_path)
    assert not hit and other != path


def test_tiny_training_lowers_the_loss(tiny_run, backbone):
    cfg, result = tiny_run
    steps = [row["step"] for row in result.log]
    assert steps == list(range(1, 41))
    losses = [row["loss"] for row in result.log]
    assert _mean(losses[-5:]) < 0.98 * _mean(losses[:5]), losses
    bpp = [row["bpp"] for row in result.log]
    assert _mean(bpp[-5:]) < _mean(bpp[:5]) - 0.1, bpp       # the prior learns the latents
    assert all("saliency_mse" in row for row in result.log)  # saliency-guided distortion in use
    # held-out: the trained bottleneck reconstructs the features better than the initial one
    plain = cfg.replace(saliency=False)
    trainer = BottleneckTrainer(plain, 64.0, backbone, prepare_data(plain, backbone, 6, progress=False),
                                progress=False)
    untrained = trainer.evaluate(trainer._new_model())
    trained = result.metadata["heldout"]
    assert trained["mse"] < untrained["mse"], (trained, untrained)
    assert trained["bytes_per_image"] > 0 and trained["frames"] == 4


def test_checkpoint_loads_with_metadata_and_decodes_bit_exactly(tiny_run, photos):
    cfg, result = tiny_run
    assert result.checkpoint.name == "efficientnet_lite0_bottleneck_beta64.pt"
    loaded, info = load_bottleneck(result.checkpoint)
    assert len(info["hash"]) == 64
    meta = info["metadata"]
    assert meta["backbone"] == "efficientnet_lite0" and meta["beta"] == 64.0
    assert meta["gammas"] == [0.5, 0.5] and meta["saliency"] is True
    assert meta["steps"] == 40 and meta["seconds"] > 0 and meta["seed"] == 0
    assert meta["frames"] == {"train": 16, "heldout": 4}
    assert [Path(p).name for p in TRAIN] == meta["train_sources"]
    assert [Path(p).name for p in HELDOUT] == meta["heldout_sources"]
    assert meta["torch"] == torch.__version__ and meta["command"] == "pytest tiny run"
    assert meta["encoder"] == "head" and meta["prior_lr"] == cfg.prior_lr
    assert info["config"]["injection_split"] == 6 and info["config"]["target_channels"] == 40
    assert info["config"]["encoder"] == "head"
    summary = json.loads((result.checkpoint.parent / "summary.json").read_text())
    assert summary[0]["beta"] == 64.0 and summary[0]["heldout_bytes_per_image"] > 0

    # the in-memory trained model and the loaded one produce identical bitstreams and features
    trained = result.model
    x = torch.cat([_prep(rgb) for rgb, _ in photos[:2]])
    strings_mem, shape_mem = trained.compress(x)
    strings_disk, shape_disk = loaded.compress(x)
    assert strings_mem == strings_disk and shape_mem == shape_disk
    assert len(set(strings_mem)) == 2                         # different images, different streams
    assert torch.equal(trained.decompress(strings_mem, shape_mem), loaded.decompress(strings_disk, shape_disk))


def test_head_encoder_starts_from_the_teacher_and_the_prior_has_its_own_learning_rate(backbone, photos):
    cfg = TrainConfig(train_sources=TRAIN[:2], heldout_sources=HELDOUT[:1], saliency=False)
    trainer = BottleneckTrainer(cfg, 2.0, backbone, prepare_data(cfg, backbone, 6, progress=False),
                                progress=False)
    model = trainer._new_model()
    x = torch.cat([_prep(rgb) for rgb, _ in photos[:2]]).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        assert torch.allclose(model.g_a.head(x), trainer.teacher(x), atol=1e-5)
    assert all(p.requires_grad for p in model.g_a.parameters())           # the copy is trained ...
    assert not any(p.requires_grad for p in trainer.teacher.parameters())  # ... the teacher is not
    networks, prior, aux = split_parameters(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert [names[id(p)] for p in aux] == ["entropy_bottleneck.quantiles"]
    assert prior and all(names[id(p)].startswith("entropy_bottleneck.") for p in prior)
    assert all(names[id(p)].startswith(("g_a.", "g_s.")) for p in networks)
    assert len(networks) + len(prior) + len(aux) == len(names)


def test_resume_continues_the_step_counter_and_matches_an_uninterrupted_run(tmp_path):
    common = [str(REPO / "config" / "train_lite0.yaml"), "--betas", "64", "--batch-size", "2",
              "--no-saliency", "--workers", "0", "--lr-schedule", "constant", "--train", *TRAIN[:6], "--heldout", *HELDOUT[:2],
              "--quiet"]
    resumed, straight = tmp_path / "resumed", tmp_path / "straight"
    assert train_cli([*common, "--steps", "10", "--out", str(resumed)]) == 0
    state = torch.load(resumed / "beta64" / "state.pt", weights_only=False)
    assert state["step"] == 10
    with pytest.raises(TrainingStateError, match="--resume"):   # never overwrite a run silently
        train_sweep(load_config(common[0], steps=20, out_dir=str(resumed), betas=[64.0], batch_size=2,
                                saliency=False, workers=0, lr_schedule="constant", train_sources=TRAIN[:6],
                                heldout_sources=HELDOUT[:2]), progress=False)
    assert train_cli([*common, "--steps", "20", "--out", str(resumed)]) == 2
    assert train_cli([*common, "--steps", "20", "--out", str(resumed), "--resume"]) == 0
    state = torch.load(resumed / "beta64" / "state.pt", weights_only=False)
    assert state["step"] == 20 and [row["step"] for row in state["log"]] == [10, 20]
    ckpt = resumed / "efficientnet_lite0_bottleneck_beta64.pt"
    _, info = load_bottleneck(ckpt)
    assert info["metadata"]["steps"] == 20 and info["metadata"]["gammas"] == [1.0, 0.0]
    assert "--resume" in info["metadata"]["command"]

    # identical to training 20 steps in one go: data order, augmentation and noise all resume
    assert train_cli([*common, "--steps", "20", "--out", str(straight)]) == 0
    other = torch.load(straight / "beta64" / "state.pt", weights_only=False)
    assert state["model"].keys() == other["model"].keys()
    assert all(torch.equal(state["model"][k], other["model"][k]) for k in state["model"])


def test_step_batches_resume_at_any_step():
    full = list(StepBatches(10, 4, seed=3, start=0, stop=8))
    assert list(StepBatches(10, 4, seed=3, start=5, stop=8)) == full[5:]
    # every epoch is a permutation of all frames
    stream = [i for batch in full for i, _ in batch]
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    seeds = [s for batch in full for _, s in batch]
    assert len(set(seeds)) == len(seeds)


@pytest.mark.parametrize("name, split, channels", [("train_lite0.yaml", 6, 40),
                                                    ("train_mobilenetv2.yaml", 7, 32)])
def test_shipped_configs_match_their_backbones(name, split, channels, lite0, mbv2):
    cfg = load_config(REPO / "config" / name)
    deployment = lite0 if cfg.backbone == "efficientnet_lite0" else mbv2
    assert cfg.injection_split == split == deployment.backbone.spec.injection_split
    assert deployment.split_point(split).shape == (1, channels, 28, 28)
    bcfg = resolve_bottleneck_config(cfg, deployment.backbone)
    assert (bcfg.target_channels, bcfg.target_stride, bcfg.injection_split) == (channels, 8, split)
    assert len(cfg.betas) >= 3 and cfg.betas == sorted(cfg.betas) and cfg.gammas == (0.5, 0.5)
    assert isinstance(cfg.lr, float) and cfg.batch_size == 16


def test_config_errors_say_what_to_fix(tmp_path, lite0):
    bad = tmp_path / "bad.yaml"
    bad.write_text("backbone: efficientnet_lite0\nbetaz: [1]\n")
    with pytest.raises(ValueError, match="unknown key"):
        load_config(bad)
    with pytest.raises(ValueError, match="g1 \\+ g2 = 1"):
        TrainConfig(gammas=(0.7, 0.7))
    with pytest.raises(ValueError, match="target_channels=24"):
        resolve_bottleneck_config(TrainConfig(target_channels=24), lite0.backbone)
    assert train_cli([str(tmp_path / "missing.yaml")]) == 2
    good = tmp_path / "good.yaml"
    good.write_text("backbone: efficientnet_lite0\n")
    assert train_cli([str(good), "--set", "betaz=[1]"]) == 2          # unknown key, said, no crash
    assert train_cli([str(good), "--set", "encoder_lr"]) == 2         # not KEY=VALUE
    assert load_config(good, encoder_lr=0.5, pca_init_step=None).encoder_lr == 0.5
    from fsplit_ros.cli.train import build_parser, config_from_args, parse_settings
    assert parse_settings(["encoder_lr=0", "crop_scale=[0.1, 1.0]", "weights=null"]) == {
        "encoder_lr": 0, "crop_scale": [0.1, 1.0], "weights": None}
    # unset flags keep --set values (stage 2 from the command line); a given flag wins
    args = build_parser().parse_args([str(good), "--set", "init_from=a.pt", "--set", "freeze_encoder=true"])
    cfg = config_from_args(args)
    assert cfg.init_from == "a.pt" and cfg.freeze_encoder
    args = build_parser().parse_args([str(good), "--set", "init_from=a.pt", "--init-from", "b.pt"])
    assert config_from_args(args).init_from == "b.pt"


def test_warm_start_begins_from_the_checkpoint_and_refuses_another_architecture(tiny_run, backbone):
    cfg, result = tiny_run
    warm = cfg.replace(init_from=str(result.checkpoint), saliency=False)
    trainer = BottleneckTrainer(warm, 4.0, backbone, prepare_data(warm, backbone, 6, progress=False),
                                progress=False)
    start = trainer._new_model()
    trained = result.model.state_dict()
    assert all(torch.equal(v, trained[k]) for k, v in start.state_dict().items() if k.startswith("g_"))
    assert all(p.requires_grad for p in start.parameters())
    assert trainer._init_from_record()["hash"] == load_bottleneck(result.checkpoint)[1]["hash"]
    other = warm.replace(latent_channels=32)
    with pytest.raises(TrainingStateError, match="same architecture"):
        BottleneckTrainer(other, 4.0, backbone, trainer.data, progress=False)._new_model()


def test_training_patches_lie_on_the_feature_lattice_and_repeat_per_step(backbone):
    data = prepare_data(TrainConfig(train_sources=TRAIN[:2], heldout_sources=HELDOUT[:1], saliency=False),
                        backbone, 6, progress=False)
    trainer = BottleneckTrainer(TrainConfig(train_patch=112, saliency=False), 16.0, backbone, data,
                                progress=False)
    boxes = [trainer.patch_box(step) for step in range(50)]
    assert boxes == [trainer.patch_box(step) for step in range(50)]       # resumable
    assert len(set(boxes)) > 10
    for top, left, size in boxes:
        assert size == 112 and top % 8 == 0 and left % 8 == 0 and 0 <= top <= 112 and 0 <= left <= 112
    batch = {"image": torch.randn(2, 3, 224, 224)}
    assert set(trainer.losses(trainer._new_model(), batch, step=3)) >= {"loss", "mse", "bpp"}
    full = BottleneckTrainer(TrainConfig(train_patch=None, saliency=False), 16.0, backbone, data,
                             progress=False)
    assert full.patch_box(3) is None
    with pytest.raises(ValueError, match="train_patch"):
        TrainConfig(train_patch=100)
