"""A backbone added by one BackboneSpec (EfficientNet-Lite2, 260 px) runs end to end: encoder and
decoder as separate processes over real DDS. Its own module, so that no other graph of the same
topics is alive meanwhile (test_graph.py's module-scoped Lite0 graph answered these frames too)."""
import pytest
from vision_msgs.msg import Classification

from fsplit_ros.datasets.offline import labelled_imagenet_photos
from ros_harness import encoder_decoder_graph, local_top1_of, results_in_mode


@pytest.fixture(scope="module")
def lite2_graph(tmp_path_factory):
    """EfficientNet-Lite2 (260x260 input), added as one BackboneSpec; no bottleneck ships for it, so
    the default checkpoint setting loads none."""
    common = {"backbone": "efficientnet_lite2", "num_threads": 1}
    with encoder_decoder_graph(tmp_path_factory.mktemp("lite2"), common, ("classification", Classification)) as g:
        yield g


@pytest.mark.parametrize("mode", ["split", "local"])
def test_a_backbone_added_by_one_spec_runs_end_to_end(lite2_graph, mode):
    """Lite2 over DDS: split payloads name the model and carry its 260-px geometry's tensor; the
    edge's answers equal the unchanged model run here."""
    probe = lite2_graph[0]
    photos = labelled_imagenet_photos()[3:6]
    base = 7000 + 100 * ["split", "local"].index(mode)
    seen = results_in_mode(lite2_graph, mode, base, photos)
    top1 = local_top1_of("efficientnet_lite2")
    for sec, msg in seen.items():
        assert msg.header.frame_id == "camera_optical"
        assert msg.results[0].class_id == str(top1(photos[sec - base][0]))
    sent = [m for m in probe.messages("compressed_feature") if base <= m.header.stamp.sec < base + 3]
    if mode == "local":
        assert not sent
    else:
        from fsplit_ros.runtime import Deployment
        shapes = {p.index: list(p.shape) for p in Deployment.load("efficientnet_lite2", bottleneck=None).split_points}
        assert sent and all(m.model_name == "efficientnet_lite2" and m.mode == "split" for m in sent)
        assert all(list(m.shape) == shapes[m.split_index] for m in sent), [(m.split_index, list(m.shape)) for m in sent]
