"""Training frames: the fixed train/held-out split never leaks a held-out file into training,
users' videos and image folders load, and augmentation moves saliency maps with the image."""
import warnings

import cv2
import numpy as np
import pytest
import torch

from fsplit_ros.datasets.frames import (Augmentation, Frame, FrameDataset, FrameSource, FrameSourceError,
                                        check_disjoint, crop_saliency, default_corpus,
                                        frames_digest, load_frames, sources_from_paths)
from fsplit_ros.models.preprocess import preprocess_rgb

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
NO_JITTER = dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)


@pytest.fixture(scope="module")
def small_corpus():
    """The default split with few frames per video (every 40th, at most 4), decoded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # a missing optional file is skipped with a warning
        train, heldout = default_corpus(every=40, frames_per_video=4, heldout_every=40)
    return train, heldout, load_frames(train), load_frames(heldout)


def test_held_out_files_never_enter_training(small_corpus):
    train, heldout, train_frames, heldout_frames = small_corpus
    train_files, heldout_files = {s.file_key for s in train}, {s.file_key for s in heldout}
    assert train_files and heldout_files
    assert not train_files & heldout_files
    # the fixed split: named held-out files, the labelled photos always among them
    heldout_names = {s.name for s in heldout}
    assert {"tree.avi", "carphone_pristine.mp4"} & heldout_names or not any(
        s.kind == "video" for s in heldout)
    assert sum(n.startswith("imagenet_") for n in heldout_names) == 20
    assert not any(s.name.startswith("imagenet_") or s.name in ("tree.avi", "carphone_pristine.mp4")
                   for s in train)
    # no decoded training frame comes from a held-out file, and every training file contributes
    assert not {f.source for f in train_frames} & heldout_files
    assert {f.source for f in train_frames} == train_files
    assert {f.source for f in heldout_frames} <= heldout_files
    # a dataset over the training frames only ever yields training frames
    ds = FrameDataset(train_frames, MEAN, STD)
    assert all(ds.frames[ds[(i, i)]["index"]].source in train_files for i in range(0, len(ds), 7))


def test_overlapping_user_split_is_refused(tmp_path):
    path = tmp_path / "a.png"
    cv2.imwrite(str(path), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(FrameSourceError, match="never be trained on"):
        check_disjoint(sources_from_paths([tmp_path]), sources_from_paths([path]))


def test_frames_are_capped_and_downscaled(small_corpus):
    train, _, train_frames, _ = small_corpus
    per_file = {}
    for f in train_frames:
        per_file[f.source] = per_file.get(f.source, 0) + 1
        assert f.rgb.dtype == np.uint8 and f.rgb.ndim == 3 and f.rgb.shape[2] == 3
        assert min(f.rgb.shape[:2]) <= 320
    for s in train:
        if s.kind == "video":
            assert 1 <= per_file[s.file_key] <= 4


def test_augmented_samples_are_normalised_model_inputs(photos):
    frames = [Frame(rgb, f"photo{i}", 0) for i, (rgb, _) in enumerate(photos[:4])]
    ds = FrameDataset(frames, MEAN, STD, size=224)
    lo = (0 - torch.tensor(MEAN)) / torch.tensor(STD)
    hi = (1 - torch.tensor(MEAN)) / torch.tensor(STD)
    items = [ds[(i % 4, 1000 + i)] for i in range(8)]
    for item in items:
        x = item["image"]
        assert x.shape == (3, 224, 224) and x.dtype == torch.float32
        assert (x >= lo.view(3, 1, 1) - 1e-5).all() and (x <= hi.view(3, 1, 1) + 1e-5).all()
        assert x.std() > 0.1   # a real image, not a constant
    # seeded keys are reproducible, different seeds give different crops
    assert torch.equal(ds[(0, 7)]["image"], ds[(0, 7)]["image"])
    assert not torch.equal(ds[(0, 7)]["image"], ds[(0, 8)]["image"])
    # a flat grey frame without jitter normalises exactly to (v/255 - mean) / std
    flat = FrameDataset([Frame(np.full((240, 320, 3), 128, np.uint8), "flat", 0)], MEAN, STD,
                        augmentation=Augmentation(**NO_JITTER))
    expected = ((128 / 255 - torch.tensor(MEAN)) / torch.tensor(STD)).view(3, 1, 1).expand(3, 224, 224)
    assert torch.allclose(flat[(0, 3)]["image"], expected, atol=1e-5)


def test_evaluation_variant_is_deterministic_centre_crop(photos):
    rgb = photos[5][0]
    ds = FrameDataset([Frame(rgb, "p", 0)], MEAN, STD, augment=False, crop_pct=0.875)
    a, b = ds[0]["image"], ds[0]["image"]
    assert torch.equal(a, b)
    # the same view the deployed preprocessing gives (resize + centre crop; resamplers differ)
    deployed = preprocess_rgb(rgb, 224, 0.875, MEAN, STD)[0]
    assert (a - deployed).abs().mean() < 0.1
    assert torch.corrcoef(torch.stack([a.flatten(), deployed.flatten()]))[0, 1] > 0.98
    shifted = preprocess_rgb(rgb[:, 8:], 224, 0.875, MEAN, STD)[0]   # a misaligned crop is worse
    assert (a - shifted).abs().mean() > 2 * (a - deployed).abs().mean()


def _blob_frame(height=200, width=300, cy=60, cx=70, radius=30):
    """A frame that is bright only in a disc, and its saliency map: the same disc at 1/8 scale."""
    yy, xx = np.mgrid[0:height, 0:width]
    disc = ((yy - cy) ** 2 + (xx - cx) ** 2) <= radius ** 2
    rgb = np.where(disc[..., None], 255, 0).astype(np.uint8).repeat(3, axis=2)
    hs, ws = height // 8, width // 8
    sy, sx = np.mgrid[0:hs, 0:ws]
    sal = (((sy + 0.5) * 8 - cy) ** 2 + ((sx + 0.5) * 8 - cx) ** 2 <= radius ** 2).astype(np.float32)
    return rgb, torch.from_numpy(sal)


def test_saliency_follows_the_flip():
    rgb, _ = _blob_frame()
    ramp = torch.linspace(0, 1, 37).repeat(25, 1)   # asymmetric: grows left -> right
    ramp[:5] += 2.0                                   # and top-heavy
    full = dict(crop_scale=(1.0, 1.0), crop_ratio=(1.5, 1.5), **NO_JITTER)   # crop = whole frame
    kept = FrameDataset([Frame(rgb, "f", 0)], MEAN, STD, saliency=[ramp],
                        augmentation=Augmentation(flip_p=0.0, **full))[(0, 1)]
    flipped = FrameDataset([Frame(rgb, "f", 0)], MEAN, STD, saliency=[ramp],
                           augmentation=Augmentation(flip_p=1.0, **full))[(0, 1)]
    assert kept["saliency"].shape == flipped["saliency"].shape == (28, 28)
    assert torch.allclose(flipped["saliency"], kept["saliency"].flip(-1))
    assert torch.equal(flipped["image"], kept["image"].flip(-1))
    s = kept["saliency"]
    assert s[:, -1].mean() > s[:, 0].mean() and s[0].mean() > s[-1].mean()   # orientation kept
    fs = flipped["saliency"]
    assert fs[:, 0].mean() > fs[:, -1].mean()


def test_saliency_moves_with_random_crops_and_flips():
    """For random crops/flips, the saliency map must land where the bright disc lands in the image."""
    rgb, sal = _blob_frame()
    ds = FrameDataset([Frame(rgb, "f", 0)], MEAN, STD, saliency=[sal],
                      augmentation=Augmentation(crop_scale=(0.3, 1.0), **NO_JITTER))
    flips = checked = 0
    for seed in range(24):
        item = ds[(0, seed)]
        bright = torch.nn.functional.avg_pool2d(item["image"][:1].unsqueeze(0), 8)[0, 0]
        bright = (bright - bright.min()) / (bright.max() - bright.min() + 1e-9)
        s = item["saliency"]
        if s.max() < 0.2 or bright.max() < 0.5:
            continue   # the crop missed the disc
        corr = torch.corrcoef(torch.stack([bright.flatten(), s.flatten()]))[0, 1]
        assert corr > 0.85, f"seed {seed}: saliency does not follow the image (corr {corr:.2f})"
        # centre of mass of saliency and image agree to within a feature cell
        grid_y, grid_x = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
        com = lambda m: torch.stack([(m * grid_y).sum(), (m * grid_x).sum()]) / m.sum()  # noqa: E731
        assert (com(s) - com(bright)).abs().max() < 1.0
        flips += int(com(s)[1] > 14)
        checked += 1
    assert checked >= 12
    assert 0 < flips < checked   # the disc sits left in the frame: only flipped samples show it right


def test_crop_saliency_box_is_in_frame_coordinates():
    sal = torch.zeros(20, 40)
    sal[:, 20:] = 1.0   # right half of the frame
    right = crop_saliency(sal, (160, 320), (0, 160, 160, 160), 28)
    left = crop_saliency(sal, (160, 320), (0, 0, 160, 160), 28)
    # bilinear sampling blends only the column that straddles the half-frame edge
    assert torch.allclose(right[:, 1:], torch.ones(28, 27)) and right.mean() > 0.98
    assert torch.allclose(left[:, :-1], torch.zeros(28, 27)) and left.mean() < 0.02


def test_users_video_and_image_folder(tmp_path):
    video = tmp_path / "robot_cam.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 64))
    assert writer.isOpened()
    for i in range(12):
        frame = np.zeros((64, 96, 3), np.uint8)
        frame[:, : 8 * (i + 1)] = 200   # the bright band widens frame by frame
        writer.write(frame)
    writer.release()
    folder = tmp_path / "shots"
    folder.mkdir()
    for i, (h, w) in enumerate([(50, 70), (400, 600), (90, 90)]):
        cv2.imwrite(str(folder / f"shot{i}.png"), np.full((h, w, 3), 40 * (i + 1), np.uint8))
    (folder / "notes.txt").write_text("not an image")

    sources = sources_from_paths([video, folder], every=2, max_frames=4)
    assert [s.kind for s in sources] == ["video", "image", "image", "image"]
    frames = load_frames(sources, max_short_side=320)
    video_frames = [f for f in frames if f.source == str(video.resolve())]
    # every 2nd of 12 frames = 0,2,...,10, capped to 4 spread evenly over the clip
    assert [f.index for f in video_frames] == [0, 4, 6, 10]
    widths = [(f.rgb[32, :, 0] > 100).sum() for f in video_frames]
    assert widths == sorted(widths) and widths[0] < widths[-1]   # the real frames, in order
    shapes = [f.rgb.shape for f in frames if f.source != str(video.resolve())]
    assert shapes == [(50, 70, 3), (320, 480, 3), (90, 90, 3)]   # the large one downscaled
    ds = FrameDataset(frames, MEAN, STD)
    assert all(ds[(i, i)]["image"].shape == (3, 224, 224) for i in range(len(ds)))
    assert len(frames_digest(frames)) == 40


def test_bad_user_inputs_say_what_is_wrong(tmp_path):
    with pytest.raises(FrameSourceError, match="does not exist"):
        sources_from_paths([tmp_path / "missing.mp4"])
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(FrameSourceError, match="unknown file type"):
        sources_from_paths([tmp_path / "data.csv"])
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FrameSourceError, match="contains no images"):
        sources_from_paths([empty])
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    with pytest.raises(FrameSourceError):
        load_frames([FrameSource(broken, "video")])
    with pytest.raises(ValueError, match="every"):
        FrameSource(broken, "video", every=0)
