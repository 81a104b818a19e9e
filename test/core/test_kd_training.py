"""Knowledge distillation through the frozen tail, the cheap encoder and stage 2: a tiny KD run
lowers the KL on its frames and its checkpoint decodes bit-exactly; the multi-stage loss matches
the ends of the backbone's stages; stage 2 changes g_s only, so every frame's bytes stay."""
import pytest
import torch

from fsplit_ros.bottleneck import BottleneckConfig, FrankenSplitBottleneck, load_bottleneck
from fsplit_ros.datasets.offline import labelled_imagenet_photos
from fsplit_ros.models import load_backbone, preprocess_rgb
from fsplit_ros.splitting import SplittableModel
from fsplit_ros.training.config import TrainConfig
from fsplit_ros.training.trainer import BottleneckTrainer, prepare_data, train_sweep

PHOTOS = [str(p) for p, _ in labelled_imagenet_photos()]
TRAIN, HELDOUT = PHOTOS[:16], PHOTOS[16:]
KD = dict(backbone="efficientnet_lite0", train_sources=TRAIN[:8], heldout_sources=HELDOUT, saliency=False,
          gammas=(1.0, 0.0), head_split=5, transform="light", transform_stride=1, latent_channels=16,
          encoder_channels=32, decoder_channels=48, distill_weight=0.5, kd_weight=1.0, crop_scale=(0.8, 1.0),
          feature_weight=1.0, betas=[0.01], batch_size=4, lr=1e-3, lr_schedule="constant",
          log_every=1, checkpoint_every=1000, eval_every=0, workers=0, seed=0, train_patch=None)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("efficientnet_lite0")


@pytest.fixture(scope="module")
def kd_run(backbone, tmp_path_factory):
    out = tmp_path_factory.mktemp("kd_run")
    cfg = TrainConfig(**KD, steps=60, out_dir=str(out))
    [result] = train_sweep(cfg, progress=False, command="pytest kd run", backbone=backbone)
    return cfg, result


def _inputs(paths):
    import cv2
    return torch.cat([preprocess_rgb(cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB), 224, 0.875,
                                     (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) for p in paths])


@torch.no_grad()
def _kl(trainer, model, x):
    """Mean KL(model || tail(h~)) in nats on the deployed (centre-crop, hard-rounded) path."""
    model = model.to("cpu").eval()
    teacher = trainer.tail(trainer.teacher(x)).log_softmax(1)
    strings, shape = model.compress(x) if model.has_tables() else (None, None)
    h_tilde = model.decompress(strings, shape) if strings else model(x)[0]
    student = trainer.tail(h_tilde).log_softmax(1)
    return float((teacher.exp() * (teacher - student)).sum(1).mean())


def test_kd_run_lowers_the_kl_on_its_frames(kd_run, backbone):
    cfg, result = kd_run
    trainer = BottleneckTrainer(cfg, 0.01, backbone, prepare_data(cfg, backbone, 6, progress=False),
                                progress=False)
    x = _inputs(TRAIN[:8])
    before = _kl(trainer, trainer._new_model(), x)
    after = _kl(trainer, result.model, x)
    assert after < 0.75 * before, (before, after)   # measured: 6.9 -> 3.5
    kd = [row["kd"] for row in result.log]
    assert sum(kd[-5:]) < 0.8 * sum(kd[:5]), kd
    assert all("feature_rel_mse" in row and "top1_agreement" in row for row in result.log)
    meta = result.metadata
    assert meta["objective"]["kd_weight"] == 1.0 and meta["objective"]["feature_stages"]
    assert meta["head_split"] == 5 and meta["transform"] == "light"


def test_feature_stages_are_the_ends_of_the_backbone_stages(kd_run, backbone):
    cfg, _ = kd_run
    trainer = BottleneckTrainer(cfg, 0.01, backbone, prepare_data(cfg, backbone, 6, progress=False),
                                progress=False)
    names = SplittableModel(backbone.model).unit_names()
    stage_names = [names[i - 1] for i in trainer.stages]   # split index i: the output of unit i
    # Lite0 after blocks.2.1: the last block of stages 3, 4, 5 and 6, then conv_head
    assert stage_names == ["blocks.3.2", "blocks.4.2", "blocks.5.3", "blocks.6.0", "conv_head"], stage_names
    x = torch.randn(2, 40, 28, 28)
    out, feats = trainer.tail_outputs(x)
    assert torch.allclose(out, trainer.tail(x), atol=1e-5) and len(feats) == len(trainer.stages)


def test_cheap_encoder_copies_a_shallower_head_and_the_checkpoint_decodes_bit_exactly(kd_run, backbone):
    cfg, result = kd_run
    loaded, info = load_bottleneck(result.checkpoint)
    assert info["config"]["head_split"] == 5 and info["config"]["head_channels"] == 40
    assert info["config"]["head_stride"] == 8 and loaded.config.latent_shape == (16, 28, 28)
    assert len(loaded.g_a.head) == 5                      # stem .. blocks.2.0
    x = _inputs(HELDOUT)
    a, shape_a = result.model.to("cpu").compress(x)
    b, shape_b = loaded.compress(x)
    assert a == b and shape_a == shape_b and len(set(a)) == len(a)
    assert torch.equal(result.model.decompress(a, shape_a), loaded.decompress(b, shape_b))


def test_stage_two_changes_the_decoder_only_so_the_bytes_stay(kd_run, backbone, tmp_path):
    cfg, result = kd_run
    stage2 = cfg.replace(init_from=str(result.checkpoint), freeze_encoder=True, steps=15,
                         out_dir=str(tmp_path), betas=[0.01])
    [second] = train_sweep(stage2, progress=False, command="pytest stage 2", backbone=backbone)
    first, _ = load_bottleneck(result.checkpoint)
    tuned, info = load_bottleneck(second.checkpoint)
    before, after = first.state_dict(), tuned.state_dict()
    fixed = [k for k in before if k.startswith(("g_a.", "entropy_bottleneck."))]
    assert fixed and all(torch.equal(before[k], after[k]) for k in fixed)
    assert any(not torch.equal(before[k], after[k]) for k in before if k.startswith("g_s."))
    x = _inputs(TRAIN[:8] + HELDOUT)
    assert first.compress(x) == tuned.compress(x)          # the very same bitstreams
    assert info["metadata"]["objective"]["freeze_encoder"] is True
    assert info["metadata"]["init_from"]["hash"] == load_bottleneck(result.checkpoint)[1]["hash"]


def test_a_warm_start_never_evaluates_on_what_its_checkpoint_trained_on(kd_run, backbone, tmp_path):
    """init_from's training files count as this run's: held out, they are refused; otherwise they
    are recorded, so fsplit-eval refuses them too."""
    cfg, result = kd_run
    from fsplit_ros.datasets.frames import FrameSourceError
    leaky = cfg.replace(init_from=str(result.checkpoint), train_sources=TRAIN[8:16],
                        heldout_sources=TRAIN[:2] + HELDOUT, out_dir=str(tmp_path))
    with pytest.raises(FrameSourceError, match="init_from: .* was trained on .*imagenet"):
        prepare_data(leaky, backbone, 6, progress=False)
    warm = leaky.replace(heldout_sources=HELDOUT, steps=2)
    [second] = train_sweep(warm, progress=False, command="pytest warm start", backbone=backbone)
    trained = {s.split(" (")[0] for s in second.metadata["train_sources"]}
    assert {p.rsplit("/", 1)[-1] for p in TRAIN[:16]} <= trained     # its own 8 and the first run's 8
    assert set(second.metadata["train_file_digests"]) == trained      # by content too
    with pytest.raises(FrameSourceError, match="not a held-out family"):
        prepare_data(cfg.replace(heldout_sources=["family:C"]), backbone, 6, progress=False)


def test_stage_two_needs_a_checkpoint_and_kd_options_are_checked():
    with pytest.raises(ValueError, match="init_from"):
        TrainConfig(freeze_encoder=True)
    with pytest.raises(ValueError, match="saliency"):
        TrainConfig(saliency=True, overlay_p=0.5)
    with pytest.raises(ValueError, match=">= 0"):
        TrainConfig(kd_weight=-1)
    with pytest.raises(ValueError, match="head_split"):
        FrankenSplitBottleneck(BottleneckConfig(backbone="efficientnet_lite0", injection_split=6,
                                                target_channels=40, target_stride=8, encoder="image",
                                                head_split=3))
