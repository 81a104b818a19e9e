"""Both ends of the link without ROS: OnboardEncoder -> payload bytes -> EdgeDecoder -> batched
tails, in every mode, on real photos; plus the rejections the edge must make (foreign weights,
split index/shape that do not fit the model)."""
import copy
import dataclasses

import numpy as np
import pytest
import torch

from fsplit_ros.bottleneck import load_bottleneck, save_bottleneck
from fsplit_ros.hashing import state_dict_hash
from fsplit_ros.payload import (ModelMismatch, ShapeMismatch, pack_payload, unpack_payload)
from fsplit_ros.runtime import Deployment, EdgeDecoder, OnboardEncoder
from fsplit_ros.splitting import SplittableModel


@pytest.fixture(scope="module")
def dep_bn(lite0_bottleneck_ckpt):
    """A fresh Lite0 deployment with the (untrained) test bottleneck attached; the session
    fixture `lite0` stays without one."""
    dep = Deployment.load("efficientnet_lite0", bottleneck=None)
    dep.attach_bottleneck(lite0_bottleneck_ckpt[0])
    return dep


@pytest.fixture(scope="module")
def frames(lite0, photos):
    enc = OnboardEncoder(lite0)
    return [enc.prepare(rgb) for rgb, _ in photos]


@pytest.fixture(scope="module")
def local_logits(lite0, frames):
    enc = OnboardEncoder(lite0)
    return [enc.predict_local(f) for f in frames]


def _repack(payload: bytes, **changes) -> bytes:
    header, body = unpack_payload(payload)
    return pack_payload(dataclasses.replace(header, **changes), bytes(body))


def test_fresh_deployment_does_not_touch_the_session_fixture(dep_bn, lite0):
    assert lite0.bottleneck is None and "bottleneck" not in lite0.model_hashes()
    assert dep_bn.bottleneck is not None and dep_bn.backbone.model is not lite0.backbone.model
    assert dep_bn.backbone.weights_hash == lite0.backbone.weights_hash


def test_every_mode_end_to_end(dep_bn, photos, frames, local_logits):
    enc = OnboardEncoder(dep_bn, image_codec="jpeg", image_quality=95)
    dec = EdgeDecoder(dep_bn)
    assert enc.available_modes() == ["local", "split", "bottleneck", "image"]
    hashes = dep_bn.model_hashes()
    rgb, frame = photos[0][0], frames[0]
    cases = [("split", i) for i in dep_bn.compressive_split_indices()] + [("image", None),
                                                                          ("bottleneck", None)]
    for mode, index in cases:
        header, payload = enc.encode_frame(frame, mode, index)
        assert enc.encode(frame, mode, index) == payload, f"{mode} encoding is not deterministic"
        decoded = dec.decode(payload)
        h = decoded.header
        assert h == header
        assert (h.mode, h.model_hash) == (mode, hashes[mode])
        assert (h.image_width, h.image_height) == (rgb.shape[1], rgb.shape[0])
        if mode == "split":
            assert h.codec == "uint8-channel+zlib" and h.split_index == index == decoded.tail_from
            assert tuple(decoded.features.shape) == dep_bn.split_point(index).shape
        elif mode == "image":
            assert (h.codec, h.quality, h.split_index, decoded.tail_from) == ("jpeg", 95, 0, 0)
            assert tuple(decoded.features.shape) == (1, 3, 224, 224)
        else:
            inj = dep_bn.bottleneck.config.injection_split
            assert h.codec == "rans-factorized" and h.split_index == inj == decoded.tail_from
            assert tuple(decoded.features.shape) == dep_bn.split_point(inj).shape
            strings, latent = dep_bn.bottleneck.compress(frame.tensor)
            assert torch.equal(decoded.features, dep_bn.bottleneck.decompress(strings, latent))
        (logits,) = dec.run_tails([decoded])
        assert logits.shape == (1, 1000) and torch.isfinite(logits).all(), (mode, index)
        if mode != "bottleneck":       # the untrained bottleneck classifies nothing
            assert int(logits.argmax()) == int(local_logits[0].argmax()), (mode, index)


def test_fp16_split_top1_equals_the_local_model(lite0, frames, local_logits):
    enc = OnboardEncoder(lite0, tensor_codec="fp16")
    dec = EdgeDecoder(lite0)
    for index in lite0.compressive_split_indices():
        decoded = [dec.decode(enc.encode(f, "split", index)) for f in frames]
        assert all(d.header.codec == "fp16" for d in decoded)
        got = dec.run_tails(decoded)
        for k, (logits, local) in enumerate(zip(got, local_logits)):
            assert int(logits.argmax()) == int(local.argmax()), f"photo {k} at split {index}"
            # and the logits themselves barely move (fp16 keeps ~3 significant digits)
            assert float((logits - local).abs().max()) < 0.05 * float(local.abs().max())


def test_lossless_image_mode_reproduces_the_local_logits(lite0, frames, local_logits):
    enc = OnboardEncoder(lite0, image_codec="png", image_quality=3)
    dec = EdgeDecoder(lite0)
    decoded = [dec.decode(enc.encode(f, "image")) for f in frames[:4]]
    assert all(np.array_equal(d.features.numpy(), f.tensor.numpy()) for d, f in zip(decoded, frames))
    for logits, local in zip(dec.run_tails(decoded), local_logits):
        torch.testing.assert_close(logits, local, rtol=1e-4, atol=1e-4)


def test_jpeg95_image_mode_keeps_the_local_decisions(lite0, frames, local_logits):
    enc, dec = OnboardEncoder(lite0, image_codec="jpeg", image_quality=95), EdgeDecoder(lite0)
    got = dec.run_tails([dec.decode(enc.encode(f, "image")) for f in frames])
    for k, (logits, local) in enumerate(zip(got, local_logits)):
        p_local, p_jpeg = torch.softmax(local[0], 0), torch.softmax(logits[0], 0)
        top2 = p_local.topk(2)
        # JPEG q95 may only swap near-ties: the local top-1 stays in the top 2, and wherever the
        # local model is clearly decided (margin > 0.1) the top-1 is unchanged
        assert int(top2.indices[0]) in p_jpeg.topk(2).indices.tolist(), f"photo {k}"
        if float(top2.values[0] - top2.values[1]) > 0.1:
            assert int(p_jpeg.argmax()) == int(top2.indices[0]), f"photo {k}"


def test_non_compressive_inner_split_points_decode_too(lite0, frames, local_logits):
    enc, dec = OnboardEncoder(lite0, tensor_codec="fp16"), EdgeDecoder(lite0)
    compressive = set(lite0.compressive_split_indices())
    index = next(p.index for p in lite0.split_points if p.index not in compressive and p.index > 3)
    decoded = dec.decode(enc.encode(frames[1], "split", index))
    assert decoded.tail_from == index
    (logits,) = dec.run_tails([decoded])
    assert int(logits.argmax()) == int(local_logits[1].argmax())


def test_run_tails_batches_frames_from_different_split_points(dep_bn, frames):
    enc = OnboardEncoder(dep_bn, image_codec="png", image_quality=1)
    dec = EdgeDecoder(dep_bn)
    a, b = dep_bn.compressive_split_indices()[1:3]
    plan = [("split", a), ("image", None), ("split", b), ("split", a), ("bottleneck", None),
            ("image", None), ("split", a), ("bottleneck", None)]
    decoded = [dec.decode(enc.encode(frames[k], mode, index)) for k, (mode, index) in enumerate(plan)]
    alone = [dec.run_tails([d])[0] for d in decoded]

    calls = []
    real_tail = dec.tail

    def spying_tail(index):
        module = real_tail(index)
        return lambda batch: (calls.append((index, batch.shape[0])), module(batch))[1]
    dec.tail = spying_tail
    together = dec.run_tails(decoded)

    inj = dep_bn.bottleneck.config.injection_split
    assert sorted(calls) == sorted([(a, 3), (0, 2), (b, 1), (inj, 2)]), calls
    assert len(together) == len(decoded)
    for k, (t, s) in enumerate(zip(together, alone)):
        assert t.shape == (1, 1000)
        torch.testing.assert_close(t, s, rtol=0, atol=1e-4, msg=f"frame {k} {plan[k]}")
    # different photos really give different outputs (nothing was mixed up or broadcast)
    assert not torch.allclose(together[0], together[3], atol=1e-3)


def _perturbed_deployment(dep: Deployment) -> Deployment:
    """The same architecture with one weight changed, hashed as load_backbone would."""
    model = copy.deepcopy(dep.backbone.model)
    with torch.no_grad():
        model.conv_stem.weight[0, 0, 0, 0] += 1e-3
    backbone = dataclasses.replace(
        dep.backbone, model=model,
        weights_hash=state_dict_hash(model.state_dict(), dep.backbone.spec.timm_name))
    return Deployment(backbone=backbone, splittable=SplittableModel(model),
                      split_points=dep.split_points)


@pytest.mark.parametrize("mode", ["split", "image"])
def test_payload_from_other_weights_is_a_model_mismatch(mode, lite0, frames):
    other = _perturbed_deployment(lite0)
    assert other.backbone.weights_hash != lite0.backbone.weights_hash
    payload = OnboardEncoder(other).encode(frames[0], mode)
    with pytest.raises(ModelMismatch, match="deploy the same weights"):
        EdgeDecoder(lite0).decode(payload)
    # the same frame from the matching encoder decodes, and so does the foreign one at its twin
    EdgeDecoder(lite0).decode(OnboardEncoder(lite0).encode(frames[0], mode))
    EdgeDecoder(other).decode(payload)


def test_decoder_with_another_hash_refuses_split_payloads(lite0, frames):
    payload = OnboardEncoder(lite0).encode(frames[0], "split")
    dec = EdgeDecoder(lite0)
    dec.decode(payload)
    dec.hashes["split"] = "ab" * 32
    with pytest.raises(ModelMismatch):
        dec.decode(payload)


def test_bottleneck_payloads_need_the_same_bottleneck(dep_bn, lite0, frames, lite0_bottleneck_ckpt,
                                                     tmp_path):
    payload = OnboardEncoder(dep_bn).encode(frames[0], "bottleneck")
    with pytest.raises(ModelMismatch, match="no model loaded for mode 'bottleneck'"):
        EdgeDecoder(lite0).decode(payload)
    # an edge whose g_s differs (same g_a and tables: the bitstream would still parse)
    model, _ = load_bottleneck(lite0_bottleneck_ckpt[0])
    with torch.no_grad():
        model.g_s[0].bias[0] += 1e-3
    save_bottleneck(model, tmp_path / "other_gs.pt")
    other = dataclasses.replace(lite0, bottleneck=None, bottleneck_hash=None,
                                bottleneck_metadata=None)
    other.attach_bottleneck(tmp_path / "other_gs.pt")
    with pytest.raises(ModelMismatch):
        EdgeDecoder(other).decode(payload)
    # positive control: the unmodified checkpoint on another deployment decodes it
    same = dataclasses.replace(lite0, bottleneck=None, bottleneck_hash=None, bottleneck_metadata=None)
    same.attach_bottleneck(lite0_bottleneck_ckpt[0])
    EdgeDecoder(same).decode(payload)


def test_split_payload_whose_index_or_shape_does_not_fit_is_a_shape_mismatch(lite0, frames):
    enc, dec = OnboardEncoder(lite0, tensor_codec="fp16"), EdgeDecoder(lite0)
    a, b = lite0.compressive_split_indices()[1:3]
    payload = enc.encode(frames[0], "split", a)
    header, _ = unpack_payload(payload)
    n_units = lite0.splittable.num_units
    assert lite0.split_point(a).shape != lite0.split_point(b).shape
    c, hw = header.shape[1], header.shape[2] * header.shape[3]
    bad = [dict(split_index=b),                        # another split point's index
           dict(split_index=0), dict(split_index=-1), dict(split_index=n_units),
           dict(split_index=999),
           dict(shape=(1, c, hw, 1)),                  # right size, wrong shape
           dict(shape=(2, c // 2, *header.shape[2:])),
           dict(shape=(1, c, *header.shape[2:], 1))]
    for change in bad:
        with pytest.raises(ShapeMismatch):
            dec.decode(_repack(payload, **change))
    dec.decode(payload)                                # the untouched payload is fine


def test_bottleneck_and_image_payloads_that_do_not_fit_are_shape_mismatches(dep_bn, frames):
    enc, dec = OnboardEncoder(dep_bn), EdgeDecoder(dep_bn)
    bn = enc.encode(frames[0], "bottleneck")
    with pytest.raises(ShapeMismatch, match="injection point"):
        dec.decode(_repack(bn, split_index=dep_bn.bottleneck.config.injection_split + 1))
    with pytest.raises(ShapeMismatch):
        dec.decode(_repack(bn, shape=(1, 48, 14, 14)))
    small = OnboardEncoder(dep_bn, image_codec="png").image_codec.encode(frames[0].crop[::2, ::2].copy())
    header, _ = unpack_payload(enc.encode(frames[0], "image"))
    forged = pack_payload(dataclasses.replace(header, codec="png", shape=small.shape), small.body)
    with pytest.raises(ShapeMismatch, match="neither the model input"):
        dec.decode(forged)


def test_encoder_refuses_what_it_cannot_send(lite0, frames):
    enc = OnboardEncoder(lite0)
    assert enc.available_modes() == ["local", "split", "image"]
    assert enc.split_index == lite0.compressive_split_indices()[0]
    with pytest.raises(ValueError, match="bottleneck"):
        enc.encode(frames[0], "bottleneck")
    with pytest.raises(ValueError, match="sends no payload"):
        enc.encode(frames[0], "local")
    with pytest.raises(ValueError, match="no inner split point"):
        OnboardEncoder(lite0, split_index=lite0.splittable.num_units)
