import cv2
import pytest

from fsplit_ros.datasets.offline import labelled_imagenet_photos
from fsplit_ros.runtime import Deployment


@pytest.fixture(scope="session")
def lite0():
    return Deployment.load("efficientnet_lite0", bottleneck=None)


@pytest.fixture(scope="session")
def mbv2():
    return Deployment.load("mobilenetv2", bottleneck=None)


@pytest.fixture(scope="session")
def photos():
    """The 20 labelled ImageNet photos as (rgb uint8, label)."""
    return [(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB), label)
            for p, label in labelled_imagenet_photos()]


LITE0_BOTTLENECK = dict(backbone="efficientnet_lite0", injection_split=6, target_channels=40,
                        target_stride=8)


def _make_bottleneck(seed: int = 0, latent_gain: float = 20.0, **overrides):
    """An untrained FrankenSplit bottleneck (seeded weights) with its entropy tables computed.

    At initialisation g_a's latents of real photos lie within +-0.5, so every symbol would round
    to the median and all photos would share one bitstream; `latent_gain` scales g_a's last
    convolution so the latents span several quantisation bins (some beyond the tables, exercising
    the rANS bypass path), as a trained encoder's do."""
    import torch

    from fsplit_ros.bottleneck import BottleneckConfig, FrankenSplitBottleneck
    torch.manual_seed(seed)
    model = FrankenSplitBottleneck(BottleneckConfig(**{**LITE0_BOTTLENECK, **overrides})).eval()
    with torch.no_grad():
        model.g_a[-1].weight.mul_(latent_gain)
        model.g_a[-1].bias.mul_(latent_gain)
    model.update_tables()
    return model


@pytest.fixture(scope="session")
def lite0_bottleneck_ckpt(tmp_path_factory):
    """(path, model, hash) of an untrained Lite0 bottleneck checkpoint with tables."""
    from fsplit_ros.bottleneck import save_bottleneck
    model = _make_bottleneck(seed=0)
    path = tmp_path_factory.mktemp("bottleneck") / "lite0_bottleneck.pt"
    digest = save_bottleneck(model, path, metadata={"note": "untrained, for tests"})
    return path, model, digest


@pytest.fixture(scope="session")
def make_bottleneck():
    """Factory: make_bottleneck(seed=0, latent_gain=20, **config_overrides) -> untrained bottleneck
    with tables."""
    return _make_bottleneck
