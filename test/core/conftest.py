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
