"""The FrankenSplit bottleneck: architecture budget and shapes, the checkpoint (tables saved and
never recomputed, content hash, tamper detection), bit-exact rANS round trips in-process and in a
fresh process, and how a Deployment attaches a checkpoint."""
import copy
import dataclasses
import os
import subprocess
import sys

import pytest
import torch
from compressai.entropy_models import EntropyBottleneck

from fsplit_ros.bottleneck import (BottleneckCheckpointError, BottleneckConfig,
                                   FrankenSplitBottleneck, load_bottleneck, save_bottleneck)
from fsplit_ros.bottleneck.checkpoint import FORMAT, bottleneck_hash
from fsplit_ros.codecs import EntropyCodec
from fsplit_ros.payload import (PayloadHeader, ShapeMismatch, pack_payload, unpack_payload)
from fsplit_ros.runtime import OnboardEncoder

TABLES = ("_quantized_cdf", "_offset", "_cdf_length")
CONFIG = BottleneckConfig(backbone="efficientnet_lite0", injection_split=6, target_channels=40,
                          target_stride=8)


def _tables(model):
    return {t: getattr(model.entropy_bottleneck, t).clone() for t in TABLES}


def _same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def photo_tensor(lite0, photos):
    """A real photo as the normalised Lite0 input (1,3,224,224)."""
    return OnboardEncoder(lite0).prepare(photos[3][0]).tensor


@pytest.fixture
def detached(lite0):
    """A Deployment sharing lite0's (read-only) backbone, so attaching does not touch lite0."""
    return dataclasses.replace(lite0, bottleneck=None, bottleneck_hash=None, bottleneck_metadata=None)


# --- architecture ---------------------------------------------------------------------------

def test_encoder_budget_and_shapes(lite0, make_bottleneck):
    model = make_bottleneck()
    n = model.encoder_parameter_count()
    assert n == sum(p.numel() for p in model.g_a.parameters())
    assert 0 < n <= 150_000, f"g_a has {n} parameters: too heavy for the robot"
    assert CONFIG.latent_shape == (48, 28, 28)
    torch.manual_seed(0)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        z = model.g_a(x)
        h_tilde, likelihoods = model(x)
    assert tuple(z.shape) == (2, *CONFIG.latent_shape)
    assert tuple(likelihoods.shape) == tuple(z.shape)
    assert ((likelihoods > 0) & (likelihoods <= 1)).all()
    target = lite0.split_point(CONFIG.injection_split).shape
    assert target == (1, 40, 28, 28)
    assert tuple(h_tilde.shape) == (2, *target[1:])
    # the reconstruction feeds the unchanged backbone tail
    with torch.no_grad():
        assert lite0.splittable.tail(CONFIG.injection_split)(h_tilde).shape == (2, 1000)


def test_stride_4_blueprint_upsamples_and_bad_configs_are_refused(make_bottleneck):
    model = make_bottleneck(target_stride=4, target_channels=24)
    with torch.no_grad():
        h, _ = model(torch.zeros(1, 3, 224, 224))
    assert tuple(h.shape) == (1, 24, 56, 56)
    with pytest.raises(ValueError, match="multiple of 8"):
        FrankenSplitBottleneck(dataclasses.replace(CONFIG, input_size=220))
    with pytest.raises(ValueError, match="stride"):
        FrankenSplitBottleneck(dataclasses.replace(CONFIG, target_stride=16))


def test_head_encoder_starts_as_the_backbone_head_and_keeps_its_batchnorm_statistics(lite0, photo_tensor):
    config = dataclasses.replace(CONFIG, encoder="head", encoder_channels=96)
    teacher = lite0.splittable.head(config.injection_split)
    model = FrankenSplitBottleneck(config, head=copy.deepcopy(teacher).requires_grad_(True))
    model.train()
    with torch.no_grad():
        assert torch.equal(model.g_a.head(photo_tensor), teacher(photo_tensor))   # h, exactly
        z = model.g_a(photo_tensor)
        h_tilde, _ = model(photo_tensor)
    batchnorms = [m for m in model.g_a.head.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert batchnorms and not any(m.training for m in batchnorms)   # statistics stay the teacher's
    assert model.g_a.transform.training and model.g_s.training
    assert config.latent_shape == (48, 28, 28) == tuple(z.shape[1:])
    assert tuple(h_tilde.shape) == (1, 40, 28, 28)
    assert model.encoder_parameter_count() <= 150_000
    # the architecture-only build (what a checkpoint is loaded into) has the very same layout
    blank = FrankenSplitBottleneck(config)
    assert {k: v.shape for k, v in blank.state_dict().items()} == \
        {k: v.shape for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="unknown encoder"):
        FrankenSplitBottleneck(dataclasses.replace(CONFIG, encoder="pixels"))
    with pytest.raises(ValueError, match="a head was given"):
        FrankenSplitBottleneck(CONFIG, head=copy.deepcopy(teacher))


# --- checkpoint -----------------------------------------------------------------------------

def test_save_refuses_without_tables(tmp_path):
    model = FrankenSplitBottleneck(CONFIG)
    assert not model.has_tables()
    with pytest.raises(BottleneckCheckpointError, match="update_tables"):
        save_bottleneck(model, tmp_path / "b.pt")
    assert not any(tmp_path.iterdir()), "a refused save left a file behind"
    with pytest.raises(RuntimeError, match="entropy tables"):
        model.compress(torch.zeros(1, 3, 224, 224))


def test_save_load_round_trip_never_recomputes_tables(tmp_path, monkeypatch, make_bottleneck):
    model = make_bottleneck(seed=3)
    # Make the saved tables stale on purpose: recomputing them from the quantiles would now give
    # different tables, so only a loader that restores the saved bytes can match them.
    with torch.no_grad():
        model.entropy_bottleneck.quantiles.mul_(1.7).add_(0.3)
    recomputed = FrankenSplitBottleneck(CONFIG)
    recomputed.load_state_dict({k: v for k, v in model.state_dict().items()
                                if k.rsplit(".", 1)[-1] not in TABLES}, strict=False)
    recomputed.update_tables()
    assert not _same_state(_tables(recomputed), _tables(model)), "test premise: tables would change"

    path = tmp_path / "ckpt" / "b.pt"
    digest = save_bottleneck(model, path, metadata={"epochs": 0, "dataset": "none"})
    assert path.is_file() and not path.with_suffix(".pt.tmp").exists()

    def forbidden(*args, **kwargs):
        raise AssertionError("load_bottleneck recomputed the entropy tables")
    monkeypatch.setattr(EntropyBottleneck, "update", forbidden)
    loaded, info = load_bottleneck(path)

    assert _same_state(loaded.state_dict(), model.state_dict())
    for name, saved in _tables(model).items():
        got = getattr(loaded.entropy_bottleneck, name)
        assert got.dtype == saved.dtype and got.shape == saved.shape
        assert got.numpy().tobytes() == saved.numpy().tobytes(), name
    assert info["hash"] == digest == bottleneck_hash(loaded) == bottleneck_hash(model)
    assert info["metadata"] == {"epochs": 0, "dataset": "none"}
    assert info["config"] == CONFIG.to_dict() and loaded.config == CONFIG
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())


def test_hash_depends_on_weights_tables_and_config(make_bottleneck):
    a, b = make_bottleneck(seed=0), make_bottleneck(seed=0)
    assert bottleneck_hash(a) == bottleneck_hash(b)
    with torch.no_grad():
        b.g_s[0].bias[0] += 1e-6
    assert bottleneck_hash(a) != bottleneck_hash(b)
    c = make_bottleneck(seed=0)
    c.entropy_bottleneck._quantized_cdf[0, 1] += 1
    assert bottleneck_hash(a) != bottleneck_hash(c)
    d = make_bottleneck(seed=0, input_size=232)
    d.load_state_dict(a.state_dict())
    assert bottleneck_hash(a) != bottleneck_hash(d)


def test_checkpoints_from_before_a_config_option_keep_their_hash(lite0_bottleneck_ckpt, tmp_path):
    """A file written before `transform_stride` existed (its config lacks the key) loads with its
    recorded hash, the same hash a current save of that model gets (both ends compare hashes)."""
    path, model, digest = lite0_bottleneck_ckpt
    blob = torch.load(path, weights_only=True)
    assert blob["config"].pop("transform_stride") == 1
    torch.save(blob, tmp_path / "older.pt")
    loaded, info = load_bottleneck(tmp_path / "older.pt")
    assert info["hash"] == digest == bottleneck_hash(model)
    assert info["config"] == model.config.to_dict()          # completed with the default
    # a non-default value of the option is part of the hash
    blob["config"]["transform_stride"] = 2
    torch.save(blob, tmp_path / "claims_stride2.pt")
    with pytest.raises(BottleneckCheckpointError):
        load_bottleneck(tmp_path / "claims_stride2.pt")


@pytest.mark.parametrize("key", ["g_a.0.weight", "g_s.4.bias", "entropy_bottleneck._quantized_cdf",
                                 "entropy_bottleneck.quantiles"])
def test_tampered_checkpoint_is_corrupt(key, lite0_bottleneck_ckpt, tmp_path):
    path, _, digest = lite0_bottleneck_ckpt
    blob = torch.load(path, weights_only=True)
    assert blob["hash"] == digest
    t = blob["state_dict"][key]
    t.view(-1)[0] += 1
    torch.save(blob, tmp_path / "tampered.pt")
    with pytest.raises(BottleneckCheckpointError, match="corrupt"):
        load_bottleneck(tmp_path / "tampered.pt")


def test_tampered_config_is_corrupt(lite0_bottleneck_ckpt, tmp_path):
    path, _, _ = lite0_bottleneck_ckpt
    blob = torch.load(path, weights_only=True)
    blob["config"]["input_size"] = 232           # same weight shapes, different meaning
    torch.save(blob, tmp_path / "tampered.pt")
    with pytest.raises(BottleneckCheckpointError, match="corrupt"):
        load_bottleneck(tmp_path / "tampered.pt")


def test_non_checkpoint_files_are_refused(tmp_path, lite0_bottleneck_ckpt):
    (tmp_path / "random.pt").write_bytes(os.urandom(4096))
    (tmp_path / "text.pt").write_text("hello")
    torch.save(lite0_bottleneck_ckpt[1].state_dict(), tmp_path / "plain_state_dict.pt")
    torch.save({"format": "something-else/1", "state_dict": {}}, tmp_path / "other_format.pt")
    for name in ("random.pt", "text.pt", "plain_state_dict.pt", "other_format.pt", "missing.pt"):
        with pytest.raises(BottleneckCheckpointError):
            load_bottleneck(tmp_path / name)


def _malformed(blob: dict, case: str) -> dict:
    state = dict(blob["state_dict"])
    if case == "no-config":
        return {k: v for k, v in blob.items() if k != "config"}
    if case == "missing-weight":
        state.pop("g_s.0.weight")
    elif case == "missing-table":
        state.pop("entropy_bottleneck._offset")
    elif case == "wrong-shape":
        state["g_a.0.weight"] = torch.zeros(3)
    return {**blob, "state_dict": state}


@pytest.mark.parametrize("case", ["no-config", "missing-weight", "missing-table", "wrong-shape"])
def test_malformed_checkpoint_with_format_tag_is_refused(case, lite0_bottleneck_ckpt, tmp_path):
    blob = torch.load(lite0_bottleneck_ckpt[0], weights_only=True)
    assert blob["format"] == FORMAT
    torch.save(_malformed(blob, case), tmp_path / "bad.pt")
    with pytest.raises(BottleneckCheckpointError):
        load_bottleneck(tmp_path / "bad.pt")


# --- bitstream ------------------------------------------------------------------------------

_CHILD_DECODE = r"""
import sys, torch
from fsplit_ros.bottleneck import load_bottleneck
model, info = load_bottleneck(sys.argv[1])
data = open(sys.argv[2], "rb").read()
shape = tuple(int(v) for v in sys.argv[3].split(","))
torch.save({"h": model.decompress([data], shape), "hash": info["hash"]}, sys.argv[4])
"""


def _run_child(tmp_path, script: str, *args: str, timeout: int = 180):
    (tmp_path / "child.py").write_text(script)
    return subprocess.run([sys.executable, str(tmp_path / "child.py"), *args], capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ), cwd=str(tmp_path))


def test_rans_round_trip_is_bit_exact_in_process_and_in_a_fresh_process(
        lite0_bottleneck_ckpt, photo_tensor, tmp_path):
    path, _, digest = lite0_bottleneck_ckpt
    robot, _ = load_bottleneck(path)            # the robot's copy
    strings, latent = robot.compress(photo_tensor)
    assert latent == CONFIG.latent_shape and len(strings) == 1 and len(strings[0]) > 0
    bitstream = strings[0]

    # lossless on the quantised latent: the decoder sees exactly round(z - median) + median
    with torch.no_grad():
        z = robot.g_a(photo_tensor)
        medians = robot.entropy_bottleneck._get_medians()
        symbols = torch.round(z - medians)
        z_hat = (symbols + medians).contiguous()
    assert symbols.unique().numel() >= 5, "test premise: the latent carries information"
    edge, info = load_bottleneck(path)          # the edge's copy
    assert torch.equal(edge.entropy_bottleneck.decompress([bitstream], latent[-2:]), z_hat)
    h_tilde = edge.decompress([bitstream], latent)
    assert tuple(h_tilde.shape) == (1, 40, 28, 28)
    with torch.no_grad():
        torch.testing.assert_close(h_tilde, edge.g_s(z_hat), rtol=0, atol=1e-6)
    assert torch.equal(edge.decompress([bitstream], latent), h_tilde)
    assert robot.compress(photo_tensor)[0][0] == bitstream, "compression is not deterministic"

    (tmp_path / "stream.bin").write_bytes(bitstream)
    run = _run_child(tmp_path, _CHILD_DECODE, str(path), str(tmp_path / "stream.bin"),
                     ",".join(map(str, latent)), str(tmp_path / "h.pt"))
    assert run.returncode == 0, run.stderr[-3000:]
    child = torch.load(tmp_path / "h.pt", weights_only=True)
    assert child["hash"] == info["hash"] == digest
    assert child["h"].dtype == h_tilde.dtype and torch.equal(child["h"], h_tilde)


def test_entropy_codec_through_a_payload(lite0_bottleneck_ckpt, photos, lite0):
    path, _, _ = lite0_bottleneck_ckpt
    model, _ = load_bottleneck(path)
    codec = EntropyCodec(model)
    enc = OnboardEncoder(lite0)
    tensors = [enc.prepare(rgb).tensor for rgb, _ in photos[:2]]
    bodies = []
    for x in tensors:
        e = codec.encode(x)
        assert e.shape == (1, 48, 28, 28) and e.dtype == "int8"
        header = PayloadHeader(mode="bottleneck", codec=codec.name, dtype=e.dtype, model_hash="ab" * 32,
                               split_index=6, shape=e.shape, image_width=1, image_height=1)
        got, body = unpack_payload(pack_payload(header, e.body), {"bottleneck": "ab" * 32})
        assert torch.equal(codec.decode(body, got), model.decompress([e.body], e.shape))
        bodies.append(e.body)
    assert bodies[0] != bodies[1], "two different photos gave the same bitstream"
    wrong = PayloadHeader(mode="bottleneck", codec=codec.name, dtype="int8", model_hash="ab" * 32,
                          split_index=6, shape=(1, 48, 14, 14), image_width=1, image_height=1)
    with pytest.raises(ShapeMismatch):
        codec.decode(memoryview(bodies[0]), wrong)


_CHILD_GARBAGE = r"""
import sys
from fsplit_ros.bottleneck import load_bottleneck
from fsplit_ros.codecs import EntropyCodec
from fsplit_ros.payload import PayloadError, PayloadHeader
codec = EntropyCodec(load_bottleneck(sys.argv[1])[0])
header = PayloadHeader(mode="bottleneck", codec="rans-factorized", dtype="int8", model_hash="ab" * 32,
                       split_index=6, shape=codec.latent_shape, image_width=1, image_height=1)
for body in (b"", b"\x00" * 7, b"\x00" * 12):
    print("TRY", len(body), flush=True)
    try:
        codec.decode(memoryview(body), header)
        print("DECODED", len(body), flush=True)
    except PayloadError as exc:
        print("REJECTED", len(body), type(exc).__name__, flush=True)
"""


def test_garbage_rans_bodies_are_rejected_without_crashing(lite0_bottleneck_ckpt, tmp_path):
    run = _run_child(tmp_path, _CHILD_GARBAGE, str(lite0_bottleneck_ckpt[0]))
    assert run.returncode == 0, f"decoder process died with {run.returncode}: {run.stdout}"
    for n in (0, 7, 12):
        assert f"REJECTED {n} CorruptPayload" in run.stdout, run.stdout


# --- Deployment.attach_bottleneck -----------------------------------------------------------

def test_attach_accepts_the_matching_checkpoint(detached, lite0_bottleneck_ckpt):
    path, _, digest = lite0_bottleneck_ckpt
    assert "bottleneck" not in detached.model_hashes()
    detached.attach_bottleneck(path)
    assert detached.bottleneck_hash == digest
    assert detached.bottleneck_metadata == {"note": "untrained, for tests"}
    hashes = detached.model_hashes()
    assert set(hashes) == {"split", "image", "bottleneck"}
    assert hashes["bottleneck"] not in (digest, detached.backbone.weights_hash)
    assert OnboardEncoder(detached).available_modes() == ["local", "split", "bottleneck", "image"]


def test_attach_refuses_another_backbones_checkpoint(detached, mbv2, make_bottleneck, tmp_path):
    other = make_bottleneck(backbone="mobilenetv2", injection_split=7, target_channels=32)
    save_bottleneck(other, tmp_path / "mbv2.pt")
    with pytest.raises(ValueError, match="mobilenetv2"):
        detached.attach_bottleneck(tmp_path / "mbv2.pt")
    assert detached.bottleneck is None and "bottleneck" not in detached.model_hashes()
    # positive control: the same file fits its own backbone
    mine = dataclasses.replace(mbv2, bottleneck=None, bottleneck_hash=None, bottleneck_metadata=None)
    mine.attach_bottleneck(tmp_path / "mbv2.pt")
    assert "bottleneck" in mine.model_hashes()


@pytest.mark.parametrize("overrides,match", [
    (dict(target_channels=24), "reconstructs"),          # wrong channel count at split 6
    (dict(target_stride=4), "reconstructs"),             # 56x56 instead of 28x28
    (dict(injection_split=99), "no inner split point"),
])
def test_attach_refuses_a_checkpoint_that_does_not_fit(overrides, match, detached, make_bottleneck,
                                                       tmp_path):
    save_bottleneck(make_bottleneck(**overrides), tmp_path / "b.pt")
    with pytest.raises(ValueError, match=match):
        detached.attach_bottleneck(tmp_path / "b.pt")
    assert detached.bottleneck is None


def test_attach_refuses_a_checkpoint_for_another_input_size(detached, make_bottleneck, tmp_path):
    save_bottleneck(make_bottleneck(input_size=112, target_stride=4), tmp_path / "b112.pt")
    with pytest.raises(ValueError, match="112"):
        detached.attach_bottleneck(tmp_path / "b112.pt")
    assert detached.bottleneck is None, "a bottleneck for 112x112 input was attached to a 224x224 backbone"


def test_bottleneck_mode_hash_follows_the_bottleneck_weights(detached, make_bottleneck, tmp_path):
    a = make_bottleneck(seed=0)
    b = make_bottleneck(seed=0)
    with torch.no_grad():
        b.g_s[4].weight[0, 0, 0, 0] += 1e-3      # edge-side weights only: the bitstream is the same
    save_bottleneck(a, tmp_path / "a.pt")
    save_bottleneck(b, tmp_path / "b.pt")
    detached.attach_bottleneck(tmp_path / "a.pt")
    first = detached.model_hashes()
    detached.attach_bottleneck(tmp_path / "a.pt")
    assert detached.model_hashes() == first, "the mode hash is not a function of the checkpoint"
    detached.attach_bottleneck(tmp_path / "b.pt")
    second = detached.model_hashes()
    assert second["bottleneck"] != first["bottleneck"]
    assert second["split"] == first["split"] == second["image"] == detached.backbone.weights_hash
