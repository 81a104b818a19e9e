"""The offline corpus: package layouts select the right files, the manifest's checksums catch an
altered file, and the default split keeps every held-out file (family A and family B) out of
training, by file. A small corpus is laid out in a temporary folder the way `fsplit-data` extracts
the Debian packages, so the suite never needs the 440 MB download."""
import json

import cv2
import numpy as np
import pytest

from fsplit_ros.cli.data import main as data_cli
from fsplit_ros.datasets import corpus
from fsplit_ros.datasets.frames import (Augmentation, FrameDataset, camera_family, default_corpus,
                                        heldout_families, load_frames, load_overlays, overlay_paths)


def _photo(path, seed, size=(90, 160)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = size if path.suffix == ".pgm" else (*size, 3)     # PGM: a grayscale camera frame
    assert cv2.imwrite(str(path), rng.integers(0, 255, shape, dtype=np.uint8))


def _stamp(path, seed):
    """An RGBA object cut-out: an opaque disc on a transparent square."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rgba = np.zeros((40, 40, 4), np.uint8)
    rgba[..., :3] = np.random.default_rng(seed).integers(0, 255, 3, dtype=np.uint8)
    cv2.circle(rgba, (20, 20), 15, (0, 0, 0, 255), -1)
    rgba[..., :3] = np.where(rgba[..., 3:] > 0, 200, 0)
    assert cv2.imwrite(str(path), rgba)


@pytest.fixture
def fake_corpus(tmp_path, monkeypatch):
    """Photos (mate layout, plus a plasma wallpaper with several renderings), stamps (one in an
    excluded 'symbols' folder) and two ViSP camera sequences, laid out as extracted."""
    root = tmp_path / "corpus"
    mate = root / "mate-backgrounds/usr/share/backgrounds/mate/nature"
    for i in range(24):
        _photo(mate / f"photo{i:02d}.jpg", i)
    wall = root / "plasma-workspace-wallpapers/usr/share/wallpapers/Autumn/contents"
    for size in ("1920x1080", "5120x2880", "1080x1920"):
        _photo(wall / "images" / f"{size}.png", 99)
    _photo(wall / "screenshot.png", 98)
    stamps = root / "tuxpaint-stamps-default/usr/share/tuxpaint/stamps"
    for i in range(5):
        _stamp(stamps / "animals" / f"animal{i}.png", i)
    _stamp(stamps / "symbols" / "arrow.png", 7)
    visp = root / "visp-images-data/usr/share/visp-images-data/ViSP-images"
    for seq, n in (("cube", 30), ("mire-2", 25), ("calibration", 4)):
        for i in range(n):
            _photo(visp / seq / f"image{i:04d}.pgm", 1000 + i, size=(48, 64))
    packages = {}
    for pkg in corpus.PACKAGES:
        if (root / pkg.name).is_dir():
            packages[pkg.name] = corpus.package_entry(root, pkg, "0" * 64, 0)
    corpus.write_manifest(root, packages)
    monkeypatch.setenv("FSPLIT_CORPUS", str(root))
    return root


def test_package_layouts_select_the_right_files(fake_corpus):
    manifest = json.loads((fake_corpus / "manifest.json").read_text())
    plasma = manifest["packages"]["plasma-workspace-wallpapers"]["files"]
    # one file per wallpaper: its largest landscape rendering, never the screenshot
    assert [f["path"].rsplit("/", 1)[-1] for f in plasma] == ["5120x2880.png"]
    stamps = manifest["packages"]["tuxpaint-stamps-default"]["files"]
    assert len(stamps) == 5 and not any("symbols" in f["path"] for f in stamps)
    camera = manifest["packages"]["visp-images-data"]["files"]
    # sequences of >= MIN_CAMERA_SEQUENCE frames only (calibration stills are not footage)
    assert {f["group"] for f in camera} == {"cube", "mire-2"} and len(camera) == 55
    assert all(f["heldout"] for f in camera)
    for entry in manifest["packages"].values():
        for f in entry["files"]:
            assert len(f["sha256"]) == 64 and f["bytes"] > 0
    summary = corpus.summary()
    assert summary["photos"]["files"] == 25 and summary["objects"]["files"] == 5


def test_verify_catches_an_altered_file(fake_corpus, capsys):
    assert data_cli(["--verify"]) == 0
    victim = next((fake_corpus / "mate-backgrounds").rglob("photo03.jpg"))
    victim.write_bytes(victim.read_bytes()[:-10])
    assert data_cli(["--verify"]) == 2
    assert "photo03.jpg" in capsys.readouterr().err


def test_missing_corpus_says_how_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FSPLIT_CORPUS", str(tmp_path / "nowhere"))
    assert not corpus.installed()
    assert data_cli(["--verify"]) == 2
    assert "fsplit-data" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="not installed"):
        default_corpus()
    assert camera_family() == [] and overlay_paths() == []


def test_held_out_files_of_both_families_never_enter_training(fake_corpus):
    train, family_a = default_corpus()
    families = heldout_families()
    assert set(families) == {"A", "B"}
    train_files = {s.file_key for s in train}
    for name, sources in families.items():
        assert sources and not train_files & {s.file_key for s in sources}, name
    # the corpus's held-out photos are exactly the hashed eighth, each with its fixed views
    corpus_photos = [f for f in corpus.corpus_files() if f.role == "photos"]
    held = {str(f.path.resolve()) for f in corpus_photos if f.heldout}
    assert held and held < {s.file_key for s in family_a}
    assert {str(f.path.resolve()) for f in corpus_photos if not f.heldout} <= train_files
    viewed = [s for s in family_a if s.file_key in held]
    frames = load_frames(viewed)
    assert len(frames) == sum(s.views for s in viewed) and all(s.views > 1 for s in viewed)
    assert {f.source for f in frames} == held
    # family B: every camera sequence, none of it in training
    assert {s.path.parent.name for s in families["B"]} == {"cube", "mire-2"}
    # training frames decode, and none comes from a held-out file
    train_frames = load_frames([s for s in train if s.file_key.startswith(str(fake_corpus))])
    assert not {f.source for f in train_frames} & (held | {s.file_key for s in families["B"]})


def test_overlays_and_mixing_are_reproducible_and_change_the_view(fake_corpus):
    overlays = load_overlays(overlay_paths())
    assert len(overlays) == 5 and all(o.shape[2] == 4 for o in overlays)
    frames = load_frames([s for s in default_corpus()[0] if s.file_key.startswith(str(fake_corpus))][:6])
    plain = FrameDataset(frames, (0.5,) * 3, (0.5,) * 3, 64, augmentation=Augmentation())
    mixed_aug = Augmentation(overlay_p=1.0, mixup_p=0.5, cutmix_p=0.5, grayscale_p=0.5)
    mixed = FrameDataset(frames, (0.5,) * 3, (0.5,) * 3, 64, augmentation=mixed_aug, overlays=overlays)
    a, b = mixed[(2, 1234)]["image"], mixed[(2, 1234)]["image"]
    assert a.shape == (3, 64, 64) and np.array_equal(a.numpy(), b.numpy())     # a pure function of the seed
    changed = sum(not np.array_equal(mixed[(2, s)]["image"].numpy(), plain[(2, s)]["image"].numpy())
                  for s in range(8))
    assert changed == 8
    with pytest.raises(ValueError, match="cut-outs"):
        FrameDataset(frames, (0.5,) * 3, (0.5,) * 3, 64, augmentation=Augmentation(overlay_p=0.5))
    with pytest.raises(ValueError, match="saliency"):
        import torch
        FrameDataset(frames, (0.5,) * 3, (0.5,) * 3, 64, augmentation=mixed_aug, overlays=overlays,
                     saliency=[torch.ones(4, 4)] * len(frames))
