"""Real weights: the offline checkpoints mapped onto timm reproduce the original implementations'
logits, and classify real labelled ImageNet photos as well as they do."""
import pytest
import torch
import torchvision

from fsplit_ros.models import load_backbone
from fsplit_ros.models import weights as offline
from fsplit_ros.runtime import OnboardEncoder


def _inputs(size: int = 224):
    torch.manual_seed(0)
    return torch.randn(4, 3, size, size)


@pytest.fixture(scope="module")
def lite2():
    from fsplit_ros.runtime import Deployment
    return Deployment.load("efficientnet_lite2", bottleneck=None)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "efficientnet_lite2"])
def test_efficientnet_lite_mapping_matches_original_implementation(name, lite0, lite2):
    from efficientnet_lite_pytorch import EfficientNet
    dep = {"efficientnet_lite0": lite0, "efficientnet_lite2": lite2}[name]
    weights = {"efficientnet_lite0": offline.efficientnet_lite0_file,
               "efficientnet_lite2": offline.efficientnet_lite2_file}[name]()
    original = EfficientNet.from_pretrained(name.replace("_", "-"), weights_path=str(weights)).eval()
    x = _inputs(dep.input_size)
    with torch.no_grad():
        ref, ours = original(x), dep.backbone.model(x)
    assert ours.shape == (4, 1000)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert torch.equal(ours.argmax(1), ref.argmax(1))


def test_mobilenetv2_mapping_matches_torchvision(mbv2):
    original = torchvision.models.mobilenet_v2()
    original.load_state_dict(offline.load_file(offline.mobilenet_v2_file()))
    original.eval()
    x = _inputs()
    with torch.no_grad():
        ref, ours = original(x), mbv2.backbone.model(x)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def _top1_correct(dep, photos):
    enc = OnboardEncoder(dep)
    return sum(int(enc.predict_local(enc.prepare(rgb)).argmax()) == label for rgb, label in photos)


@pytest.mark.parametrize("name,minimum", [("efficientnet_lite0", 16), ("mobilenetv2", 16),
                                          ("efficientnet_lite2", 16)])
def test_labelled_imagenet_photos_top1(name, minimum, lite0, mbv2, lite2, photos):
    dep = {"efficientnet_lite0": lite0, "mobilenetv2": mbv2, "efficientnet_lite2": lite2}[name]
    correct = _top1_correct(dep, photos)
    print(f"{name}: {correct}/20 top-1 on foolbox's ImageNet photos")
    assert correct >= minimum, f"{name} got only {correct}/20 right: the weight mapping is broken"


def test_weights_hash_identifies_exact_weights(lite0):
    again = load_backbone("efficientnet_lite0")
    assert again.weights_hash == lite0.backbone.weights_hash
    sd = again.model.state_dict()
    sd["classifier.bias"][0] += 1e-3
    again.model.load_state_dict(sd)
    from fsplit_ros.hashing import state_dict_hash
    assert state_dict_hash(again.model.state_dict(), "tf_efficientnet_lite0") != lite0.backbone.weights_hash


def test_unknown_backbone_and_missing_weights_say_what_to_do(tmp_path):
    with pytest.raises(ValueError, match="unknown backbone"):
        load_backbone("not_a_model")
    with pytest.raises(offline.WeightsNotFound, match="weights=/path"):
        load_backbone("resnet18")
    with pytest.raises(offline.WeightsNotFound, match="does not exist"):
        load_backbone("resnet18", weights=tmp_path / "missing.pth")


def test_local_timm_checkpoint_loads_strictly(tmp_path, mbv2):
    path = tmp_path / "mine.pth"
    torch.save(mbv2.backbone.model.state_dict(), path)
    loaded = load_backbone("mobilenetv2_100", weights=path)
    assert loaded.weights_hash == mbv2.backbone.weights_hash
