"""Dynamic Split Computing's natural bottlenecks: every split point reproduces the full model,
and the compressive bottlenecks are the prefix minima of c_l."""
import pytest
import torch

from fsplit_ros.splitting import compressive_bottlenecks


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenetv2"])
def test_tail_of_head_equals_model_at_every_split_point(name, lite0, mbv2):
    dep = {"efficientnet_lite0": lite0, "mobilenetv2": mbv2}[name]
    torch.manual_seed(1)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        full = dep.backbone.model(x)
        for point in dep.split_points:
            h = dep.splittable.head(point.index)(x)
            assert tuple(h.shape[1:]) == point.shape[1:], point
            assert torch.equal(dep.splittable.tail(point.index)(h), full), f"split {point.name}"


def test_compressive_bottlenecks_are_prefix_minima():
    assert compressive_bottlenecks([1.5, 0.9, 0.95, 0.5, 0.5, 0.7, 0.1]) == \
        [False, True, False, True, False, False, True]


# Computed from the architectures at 224x224 with 8-bit transmission (|x| = 3*224*224 bytes):
# the shape of each compressive bottleneck, which fixes where `split` mode can send.
EXPECTED = {
    "efficientnet_lite0": [("blocks.1.0", (1, 24, 56, 56)), ("blocks.2.0", (1, 40, 28, 28)),
                           ("blocks.3.0", (1, 80, 14, 14)), ("blocks.5.0", (1, 192, 7, 7)),
                           ("global_pool", (1, 1280))],
    "mobilenetv2": [("blocks.1.0", (1, 24, 56, 56)), ("blocks.2.0", (1, 32, 28, 28)),
                    ("blocks.3.0", (1, 64, 14, 14)), ("blocks.5.0", (1, 160, 7, 7)),
                    ("global_pool", (1, 1280))],
}


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenetv2"])
def test_compressive_bottleneck_list(name, lite0, mbv2):
    dep = {"efficientnet_lite0": lite0, "mobilenetv2": mbv2}[name]
    got = [(p.name, p.shape) for p in dep.split_points if p.compressive]
    assert got == EXPECTED[name]
    ratios = [p.compression for p in dep.split_points]
    for p in dep.split_points:
        if p.compressive:
            assert p.compression < 1 and all(p.compression < r for r in ratios[:p.index - 1] if r < 1)
