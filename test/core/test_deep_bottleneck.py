"""The deep-injection bottleneck (config/train_lite0_deep.yaml): the backbone's own layers, frozen,
up to a stride-32 point, then a linear transform started from the features' principal components
and a residual decoder. At the start it is classical transform coding (bit-exact through the real
entropy coder); training changes only what follows the head."""
import pytest
import torch

from fsplit_ros.bottleneck import BottleneckConfig, FrankenSplitBottleneck, load_bottleneck
from fsplit_ros.bottleneck.network import init_from_pca
from fsplit_ros.datasets.offline import labelled_imagenet_photos
from fsplit_ros.models import load_backbone, preprocess_rgb
from fsplit_ros.runtime import Deployment
from fsplit_ros.splitting import SplittableModel
from fsplit_ros.training.config import TrainConfig
from fsplit_ros.training.trainer import BottleneckTrainer, prepare_data, train_sweep

PHOTOS = [str(p) for p, _ in labelled_imagenet_photos()]
DEEP = dict(backbone="efficientnet_lite0", injection_split=13, target_stride=32, encoder="head",
            freeze_head=True, transform="linear", decoder="residual", latent_channels=192,
            decoder_channels=32, saliency=False, gammas=(1.0, 0.0), distill_weight=0.07, kd_weight=1.0,
            feature_weight=1.0, betas=[0.2], batch_size=4, lr=5e-4, lr_schedule="constant",
            crop_scale=(0.8, 1.0), log_every=1, checkpoint_every=1000, eval_every=0, workers=0,
            seed=0, train_patch=None, train_sources=PHOTOS[:8], heldout_sources=PHOTOS[16:],
            pca_init_views=8)


@pytest.fixture(scope="module")
def backbone():
    return load_backbone("efficientnet_lite0")


def _inputs(paths):
    import cv2
    return torch.cat([preprocess_rgb(cv2.cvtColor(cv2.imread(p), cv2.COLOR_BGR2RGB), 224, 0.875,
                                     (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)) for p in paths])


def _deep_model(backbone, step, latent=192):
    split = SplittableModel(backbone.model)
    config = BottleneckConfig(backbone="efficientnet_lite0", injection_split=13, target_channels=192,
                              target_stride=32, encoder="head", transform="linear", decoder="residual",
                              latent_channels=latent, decoder_channels=32)
    import copy
    model = FrankenSplitBottleneck(config, head=copy.deepcopy(split.head(13))).eval()
    with torch.no_grad():
        feats = split.head(13)(_inputs(PHOTOS[:16]))
    init_from_pca(model, feats, step)
    model.update_tables()
    return model, split


@torch.no_grad()
def test_a_pca_start_is_transform_coding_through_the_real_coder(backbone):
    """Rounding the principal components with step s: the decoded features differ from the head's
    by at most s/2 per component (an orthonormal basis), and the bytes fall as s grows."""
    x = _inputs(PHOTOS[16:])
    sizes = []
    for step in (0.25, 1.0, 4.0):
        model, split = _deep_model(backbone, step)
        strings, shape = model.compress(x)
        assert shape == (192, 7, 7)
        h = split.head(13)(x)
        h_tilde = model.decompress(strings, shape)
        err = (h - h_tilde).permute(0, 2, 3, 1).reshape(-1, 192)
        # per position the error is basis @ (rounding error), |rounding error| <= s/2 per component
        assert float(err.norm(dim=1).max()) <= step / 2 * 192 ** 0.5 + 1e-3
        assert float(err.pow(2).mean()) < step ** 2 / 12 * 1.5
        sizes.append(sum(map(len, strings)) / len(x))
        if step == 0.25:   # near-lossless: the tail decides as the whole model does
            assert torch.equal(split.tail(13)(h_tilde).argmax(1), backbone.model(x).argmax(1))
    assert sizes[0] > sizes[1] > sizes[2], sizes


def test_pca_start_needs_the_linear_design():
    config = BottleneckConfig(backbone="efficientnet_lite0", injection_split=13, target_channels=192,
                              target_stride=32, encoder="head", transform="light", latent_channels=16)
    with pytest.raises(ValueError, match="linear"):
        init_from_pca(FrankenSplitBottleneck(config), torch.zeros(2, 192, 7, 7), 1.0)
    with pytest.raises(ValueError, match="pca_init_step"):
        TrainConfig(pca_init_step=1.0, transform="light")
    with pytest.raises(ValueError, match="freeze_head"):
        TrainConfig(freeze_head=True, encoder="image")
    with pytest.raises(ValueError, match="decoder"):
        TrainConfig(decoder="mlp")
    with pytest.raises(ValueError, match="target strides"):
        FrankenSplitBottleneck(BottleneckConfig(backbone="efficientnet_lite0", injection_split=13,
                                                target_channels=192, target_stride=64, encoder="head"))


def test_a_frozen_head_run_trains_only_what_follows_the_head(backbone, tmp_path):
    """freeze_head: the head is the backbone's own and stays out of the checkpoint (the deployment
    lends it); the transform, g_s and the prior learn; the deployed encoder reproduces the trained
    model's bitstreams; a backbone with other weights is refused."""
    cfg = TrainConfig(**DEEP, steps=8, out_dir=str(tmp_path), pca_init_step=1.0)
    [result] = train_sweep(cfg, progress=False, command="pytest deep run", backbone=backbone)
    loaded, info = load_bottleneck(result.checkpoint)
    assert not [k for k in loaded.state_dict() if k.startswith("g_a.head.")]
    assert loaded.g_a.head is None
    with pytest.raises(RuntimeError, match="attach"):
        loaded.compress(torch.zeros(1, 3, 224, 224))
    assert info["config"]["decoder"] == "residual" and info["config"]["transform"] == "linear"
    assert info["config"]["backbone_head"] is True
    meta = info["metadata"]
    assert meta["objective"]["freeze_head"] is True and meta["pca_init_step"] == 1.0
    assert float(loaded.g_s.branch[-1].weight.abs().max()) > 0      # the branch (zero at the start) learned
    assert result.checkpoint.stat().st_size < 2 * 2 ** 20   # the head alone is 3.7 MB of float32

    dep = Deployment.load("efficientnet_lite0", bottleneck=result.checkpoint)
    assert dep.bottleneck.g_a.head is not None
    x = _inputs(PHOTOS[16:])
    a, shape = result.model.to("cpu").compress(x)
    b, _ = dep.bottleneck.compress(x)
    assert a == b
    assert torch.equal(result.model.decompress(a, shape), dep.bottleneck.decompress(b, shape))

    blob = torch.load(result.checkpoint, weights_only=True)
    blob["metadata"]["backbone_weights_hash"] = "0" * 64
    other = tmp_path / "other_weights.pt"
    torch.save(blob, other)
    with pytest.raises(ValueError, match="backbone weights 000000000000"):
        Deployment.load("efficientnet_lite0", bottleneck=other)


@torch.no_grad()
def test_training_from_the_teachers_features_is_the_forward_pass(backbone):
    """forward_from_head(h) (what a frozen-head run computes from the teacher's h) is forward(x)."""
    model, split = _deep_model(backbone, 1.0)
    x = _inputs(PHOTOS[:2])
    torch.manual_seed(0)
    a, la = model(x)
    torch.manual_seed(0)
    b, lb = model.forward_from_head(split.head(13)(x))
    assert torch.allclose(a, b, atol=1e-5) and torch.allclose(la, lb)


@torch.no_grad()
@pytest.mark.parametrize("stride", [1, 2, 4])
def test_a_pca_start_codes_patches_with_an_orthonormal_basis(stride):
    """transform_stride r: g_a takes r x r patches (a strided linear map), g_s maps back with a
    transposed one; rounding with step s moves each patch by at most s/2 per component."""
    config = BottleneckConfig(backbone="efficientnet_lite0", injection_split=6, target_channels=40,
                              target_stride=8, encoder="head", backbone_head=True, transform="linear",
                              transform_stride=stride, decoder="residual",
                              latent_channels=40 * stride * stride, decoder_channels=16)
    model = FrankenSplitBottleneck(config).eval()
    g = torch.Generator().manual_seed(0)
    mixing = torch.randn(40, 40, generator=g)
    features = torch.einsum("dc,nchw->ndhw", mixing, torch.randn(8, 40, 28, 28, generator=g)) + 3.0
    step = 0.1
    init_from_pca(model, features, step)
    h_tilde, _ = model.forward_from_head(features)     # eval: the latent is rounded
    assert h_tilde.shape == features.shape
    patches = torch.nn.functional.pixel_unshuffle(features - h_tilde, stride)
    per_patch = patches.permute(0, 2, 3, 1).reshape(-1, 40 * stride * stride).norm(dim=1)
    assert float(per_patch.max()) <= step / 2 * (40 * stride * stride) ** 0.5 + 1e-3
    # uniform rounding error of step^2/12 per component at most (less where a component's spread is
    # below the step: it rounds to its mean)
    assert 0 < float((features - h_tilde).pow(2).mean()) <= step ** 2 / 12 * 1.1


def test_encoder_lr_zero_keeps_the_principal_components_while_g_s_learns(backbone, tmp_path):
    cfg = TrainConfig(**DEEP, steps=4, out_dir=str(tmp_path), pca_init_step=1.0, encoder_lr=0.0)
    trainer = BottleneckTrainer(cfg, 0.2, backbone, prepare_data(cfg, backbone, 13, progress=False),
                                progress=False)
    start = trainer._new_model().state_dict()
    [result] = train_sweep(cfg, progress=False, command="pytest encoder_lr 0", backbone=backbone)
    end = load_bottleneck(result.checkpoint)[0].state_dict()
    assert all(torch.equal(start[k].cpu(), end[k]) for k in start if k.startswith("g_a."))
    assert not torch.equal(start["g_s.linear.weight"].cpu(), end["g_s.linear.weight"])
    assert result.metadata["encoder_lr"] == 0.0
    with pytest.raises(ValueError, match="encoder_lr"):
        TrainConfig(encoder_lr=-1)


@torch.no_grad()
def test_the_linear_decoder_is_the_residual_one_without_its_untrained_branch(backbone):
    """decoder "linear" (the shipped Lite0 file): the same decoded features as "residual" at its
    start, whose branch only adds exact zeros, in a fraction of the file."""
    residual, split = _deep_model(backbone, 1.0)
    config = BottleneckConfig(**{**residual.config.to_dict(), "decoder": "linear"})
    import copy
    linear = FrankenSplitBottleneck(config, head=copy.deepcopy(split.head(13))).eval()
    tables = ("_quantized_cdf", "_offset", "_cdf_length")
    state = {k: v for k, v in residual.state_dict().items() if not k.endswith(tables)}
    missing = linear.load_state_dict(state, strict=False)
    assert all(k.endswith(tables) for k in missing.missing_keys)
    assert missing.unexpected_keys and all(k.startswith("g_s.branch.") for k in missing.unexpected_keys)
    linear.update_tables()
    x = _inputs(PHOTOS[16:])
    a, shape = residual.compress(x)
    b, _ = linear.compress(x)
    assert a == b and torch.equal(residual.decompress(a, shape), linear.decompress(b, shape))
    assert linear.g_s.branch is None
    assert sum(p.numel() for p in linear.g_s.parameters()) == 192 * 192 + 192      # the inverse map alone
