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
