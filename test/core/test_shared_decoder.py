"""Decoders for a shared encoder (fsplit_ros/bottleneck/shared.py), without data or training."""
import pytest
import torch

from fsplit_ros.bottleneck.shared import (SharedDecoder, SharedDecoderConfig, SharedDecoderMismatch,
                                          load_shared_decoder, save_shared_decoder)

CONFIG = SharedDecoderConfig(encoder_hash="e" * 64, encoder_backbone="efficientnet_lite0", latent_channels=12,
                             latent_side=7, backbone="efficientnet_lite2", injection_split=17, target_channels=10,
                             target_side=9, width=16)


def test_least_squares_start_recovers_a_linear_relation_and_starts_as_it():
    torch.manual_seed(0)
    decoder = SharedDecoder(CONFIG)
    latents = torch.randn(64, 12, 7, 7)
    w, b = torch.randn(10, 12), torch.randn(10)
    resampled = torch.nn.functional.interpolate(latents, size=(9, 9), mode="bilinear", align_corners=False)
    targets = torch.einsum("tc,nchw->nthw", w, resampled) + b[None, :, None, None]
    residual = decoder.fit_linear(latents, targets, ridge=1e-9)
    assert residual < 1e-8
    with torch.no_grad():
        out = decoder(latents)          # the GDN branch starts at zero: the decoder is the fit
    assert out.shape == (64, 10, 9, 9) and torch.allclose(out, targets, atol=1e-3)


def test_checkpoint_round_trip_and_refusals(tmp_path):
    decoder = SharedDecoder(CONFIG)
    path = tmp_path / "d.pt"
    digest = save_shared_decoder(decoder, path, {"steps": 3})
    loaded, info = load_shared_decoder(path, encoder_hash="e" * 64)
    assert info["hash"] == digest and info["metadata"] == {"steps": 3}
    z = torch.randn(2, 12, 7, 7)
    assert torch.equal(loaded(z), decoder.eval()(z))
    with pytest.raises(SharedDecoderMismatch, match="fit a decoder to this encoder"):
        load_shared_decoder(path, encoder_hash="f" * 64)
    blob = torch.load(path, weights_only=True)
    blob["state_dict"]["linear.bias"] += 1
    torch.save(blob, path)
    with pytest.raises(SharedDecoderMismatch, match="corrupt"):
        load_shared_decoder(path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(SharedDecoderMismatch, match="not a readable decoder checkpoint"):
        load_shared_decoder(path)


def test_edge_runs_every_model_on_one_bottleneck_payload_and_profiles_count_them(tmp_path, monkeypatch):
    """Through the real payload path: one bottleneck payload decoded once; the deployment's model
    and a further model (an untrained decoder fitted to this exact bottleneck) both answer it, a
    split payload only the first; the profile's bottleneck edge time runs both, and a decoder of
    another encoder is refused when loaded."""
    import numpy as np
    from fsplit_ros.profiling import profile_deployment
    from fsplit_ros.runtime import Deployment, EdgeDecoder, OnboardEncoder
    from fsplit_ros.runtime.shared_models import SharedModel, default_decoder_path
    dep = Deployment.load("efficientnet_lite0")          # the shipped bottleneck: the shared encoder
    config = SharedDecoderConfig(encoder_hash=dep.bottleneck_hash, encoder_backbone=dep.name, latent_channels=192,
                                 latent_side=7, backbone="efficientnet_lite2", injection_split=17,
                                 target_channels=208, target_side=9, width=8)
    save_shared_decoder(SharedDecoder(config), default_decoder_path("efficientnet_lite2", dep.name, tmp_path))
    lite2 = SharedModel.load("efficientnet_lite2", dep, tmp_path)
    rgb = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
    enc, dec = OnboardEncoder(dep), EdgeDecoder(dep, shared_models=[lite2])
    frame = enc.prepare(rgb)
    frames = [dec.decode(enc.encode(frame, "bottleneck")), dec.decode(enc.encode(frame, "split", 13))]
    assert [o.shape for o in dec.run_tails(frames)] == [(1, 1000), (1, 1000)]
    shared = dec.run_shared_models(frames)["efficientnet_lite2"]
    assert shared[0].shape == (1, 1000) and shared[1] is None
    with torch.no_grad():                                # decoder + tail on the rounded latent the coder sends
        want = lite2.tail(lite2.decoder(dep.bottleneck.rounded(dep.bottleneck.g_a(frame.tensor))))
    assert torch.allclose(shared[0], want, atol=1e-4)

    calls = []
    original = SharedModel.outputs
    monkeypatch.setattr(SharedModel, "outputs", lambda self, latents: calls.append(len(latents)) or
                        original(self, latents))
    profile = profile_deployment(dep, [rgb, rgb], batch_sizes=(1, 2), repeats=1, shared_models=[lite2])
    assert profile.edge_models == ["efficientnet_lite2"] and sorted(set(calls)) == [1, 2]

    save_shared_decoder(SharedDecoder(SharedDecoderConfig(**{**config.to_dict(), "encoder_hash": "0" * 64})),
                        default_decoder_path("efficientnet_lite2", dep.name, tmp_path / "other"))
    with pytest.raises(SharedDecoderMismatch, match="fit a decoder to this encoder"):
        SharedModel.load("efficientnet_lite2", dep, tmp_path / "other")
    with pytest.raises(SharedDecoderMismatch, match="no decoder of mobilenetv2"):
        SharedModel.load("mobilenetv2", dep, tmp_path)


def test_view_pairs_are_a_function_of_the_seed_and_differ_from_the_frames():
    """The augmented training pairs: both networks see one view per key, rebuilt exactly from the
    seed (a resumed run trains on the same pairs), new views under another seed, and not the
    deployed centre crops."""
    import numpy as np
    from fsplit_ros.datasets.frames import Augmentation, Frame
    from fsplit_ros.runtime import Deployment
    from fsplit_ros.training.shared_decoder import compute_pairs, compute_view_pairs, deep_injection
    rng = np.random.default_rng(0)
    frames = [Frame(np.repeat(np.repeat(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8), 10, 0), 10, 1),
                    f"synthetic{k}", 0) for k in range(2)]
    enc = Deployment.load("efficientnet_lite0")
    tgt = Deployment.load("efficientnet_lite2", bottleneck=None)
    injection = deep_injection(tgt)
    aug = Augmentation(crop_scale=(0.2, 0.5))
    a = compute_view_pairs(enc, tgt, injection, frames, 2, aug, seed=0, batch=3)
    b = compute_view_pairs(enc, tgt, injection, frames, 2, aug, seed=0, batch=4)
    c = compute_view_pairs(enc, tgt, injection, frames, 2, aug, seed=1)
    centre = compute_pairs(enc, tgt, injection, frames)
    assert a.latents.shape == (4, 192, 7, 7) and a.features.shape == (4, 208, 9, 9) and a.logits.shape == (4, 1000)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.features, b.features)
    assert not torch.equal(a.latents, c.latents)
    assert not torch.equal(a.latents[:2], centre.latents) and not torch.equal(a.features[:2], centre.features)


def test_models_the_shared_encoder_cannot_serve_are_refused_with_what_to_do():
    """A detector (its letterboxed whole frame is not in a classifier's crop latent) and a typo are
    refused before any decoder file is looked for, saying why."""
    from fsplit_ros.runtime import Deployment
    from fsplit_ros.runtime.shared_models import load_shared_models
    dep = Deployment.load("efficientnet_lite0")
    with pytest.raises(SharedDecoderMismatch, match="cannot serve model 'nanodet': nanodet does detection.*"
                                                    "backbone:=nanodet"):
        load_shared_models(["efficientnet_lite0", "nanodet"], dep)
    with pytest.raises(SharedDecoderMismatch, match="unknown model 'efficientnet_lite9': use one of"):
        load_shared_models(["efficientnet_lite9"], dep)


def test_a_shared_model_reports_the_fidelity_its_decoder_was_measured_at(tmp_path):
    """The decoder node logs it (and warns below the default floor): a mode that loses accuracy
    says how much."""
    from fsplit_ros.runtime import Deployment
    from fsplit_ros.runtime.shared_models import SharedModel, default_decoder_path
    dep = Deployment.load("efficientnet_lite0")
    config = SharedDecoderConfig(encoder_hash=dep.bottleneck_hash, encoder_backbone=dep.name, latent_channels=192,
                                 latent_side=7, backbone="efficientnet_lite2", injection_split=17,
                                 target_channels=208, target_side=9, width=8)
    path = default_decoder_path("efficientnet_lite2", dep.name, tmp_path)
    save_shared_decoder(SharedDecoder(config), path, {"heldout": {
        "step": 600, "A": {"top1_agreement": 0.402, "low": 0.36, "high": 0.44}, "B": {"top1_agreement": 0.446}}})
    model = SharedModel.load("efficientnet_lite2", dep, tmp_path)
    assert model.heldout == {"A": 0.402, "B": 0.446}
    assert model.fidelity_note() == "held-out top-1 agreement with the unmodified model 40.2 % (A), 44.6 % (B)"
    save_shared_decoder(SharedDecoder(config), path)
    assert SharedModel.load("efficientnet_lite2", dep, tmp_path).fidelity_note() == \
        "no held-out fidelity recorded with its decoder"
