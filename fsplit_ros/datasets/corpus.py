"""The offline training corpus: photographs, object cut-outs and real camera sequences from Debian
packages, installed once by `fsplit-data` with a manifest (files, sizes, checksums, licences).

Why these: no image hub is reachable, and the bottleneck generalises only as far as the views it
is trained on. A few hundred distinct sources, cut into strongly augmented views (random resized
crops over a wide scale range of multi-megapixel photos, object cut-outs pasted onto them, mixup
and cutmix), give far more distinct views than the ~95 files the first checkpoints saw.

Roles (one per package):
  photos   wallpapers and puzzle photos: training views, a fixed eighth of them held out (family A)
  objects  Tux Paint's photographed stamps (RGBA): pasted onto training views as objects
  camera   ViSP's grayscale lab camera sequences: never trained on; held-out family B ("footage
           unlike the training data": another camera, other content)

Held-out photos are chosen by a hash of the photo's *group* (a wallpaper and its variants), so the
split is fixed, independent of file order, and never splits variants of one picture.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from fsplit_ros.hashing import file_sha256

CORPUS_FORMAT = "fsplit-corpus/1"
PHOTO_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
CAMERA_SUFFIXES = (".pgm", ".ppm", ".png", ".jpg")
HELDOUT_PHOTO_EVERY = 8          # 1 group in 8 is held out (by hash)
MIN_CAMERA_SEQUENCE = 20         # ViSP folders with fewer frames are calibration stills


class CorpusError(RuntimeError):
    """The corpus is missing, incomplete or altered; the message says how to (re)install it."""


def default_root() -> Path:
    env = os.environ.get("FSPLIT_CORPUS")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fsplit_ros" / "corpus"


@dataclass(frozen=True)
class CorpusPackage:
    name: str
    version: str                 # Debian bookworm's; pinned so the manifest's checksums hold
    role: str                    # photos | objects | camera
    licence: str                 # as stated in the package's copyright file
    select: Callable[[Path], list[tuple[Path, str]]]   # extracted root -> [(file, group)]


def _images_under(root: Path, suffixes=PHOTO_SUFFIXES) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in suffixes)


def _plain_photos(root: Path) -> list[tuple[Path, str]]:
    """Every raster image; day/night variants (`name-d`, `name-l`) share a group."""
    out = []
    for p in _images_under(root):
        if p.name == "screenshot.png" or "/icons/" in str(p):
            continue
        stem = p.stem
        group = stem[:-2] if stem.endswith(("-d", "-l")) else stem
        out.append((p, group))
    return out


def _plasma_wallpapers(root: Path) -> list[tuple[Path, str]]:
    """One file per wallpaper: its largest landscape rendering (the rest are resamplings)."""
    out = []
    for folder in sorted(p for p in (root / "usr/share/wallpapers").iterdir() if p.is_dir()):
        best = None
        for p in _images_under(folder / "contents" / "images"):
            try:
                w, h = (int(v) for v in p.stem.split("x"))
            except ValueError:
                continue
            if w >= h and (best is None or w * h > best[0]):
                best = (w * h, p)
        if best:
            out.append((best[1], folder.name))
    return out


# Stamp folders that hold letters, signs and drawings rather than photographed things.
_STAMP_EXCLUDED = ("symbols", "cartoon", "lowercase", "uppercase", "asl", "operators", "math",
                   "roadsigns", "coins", "chess", "planets")


def _tuxpaint_stamps(root: Path) -> list[tuple[Path, str]]:
    stamps = root / "usr/share/tuxpaint/stamps"
    out = []
    for p in _images_under(stamps, (".png",)):
        rel = p.relative_to(stamps)
        if any(part in _STAMP_EXCLUDED for part in rel.parts[:-1]) or p.stem.endswith("_thumb"):
            continue
        out.append((p, str(rel.with_suffix(""))))
    return out


def _visp_sequences(root: Path) -> list[tuple[Path, str]]:
    """Frames of every ViSP folder with >= MIN_CAMERA_SEQUENCE images; the folder is the group
    (a held-out *sequence*). Depth maps are skipped."""
    base = root / "usr/share/visp-images-data/ViSP-images"
    by_folder: dict[Path, list[Path]] = {}
    for p in _images_under(base, CAMERA_SUFFIXES):
        if "Depth" in p.parts:
            continue
        by_folder.setdefault(p.parent, []).append(p)
    out = []
    for folder, files in sorted(by_folder.items()):
        if len(files) >= MIN_CAMERA_SEQUENCE:
            out += [(p, str(folder.relative_to(base))) for p in files]
    return out


PACKAGES: tuple[CorpusPackage, ...] = (
    CorpusPackage("plasma-workspace-wallpapers", "4:5.27.5-2", "photos", "GPL-2+ / LGPL (KDE)", _plasma_wallpapers),
    CorpusPackage("mate-backgrounds", "1.26.0-1", "photos", "GPL-2+", _plain_photos),
    CorpusPackage("gnome-backgrounds", "43.1-1", "photos", "CC-BY-SA-3.0 / GPL (GNOME)", _plain_photos),
    CorpusPackage("palapeli-data", "4:22.12.3-1", "photos", "GPL-2+ / CC", _plain_photos),
    CorpusPackage("jigzo-data", "0.6.1-7.1", "photos", "GPL-2+ / CC-BY-NC-SA-1.0", _plain_photos),
    CorpusPackage("ukui-wallpapers", "20.04.3-1.1", "photos", "CC-BY-SA-3.0", _plain_photos),
    CorpusPackage("sway-backgrounds", "1.7-6", "photos", "Expat / MIT-like", _plain_photos),
    CorpusPackage("tuxpaint-stamps-default", "2022.06.04-1", "objects", "GPL-2", _tuxpaint_stamps),
    CorpusPackage("visp-images-data", "3.5.0-1", "camera", "GPL-2", _visp_sequences),
)
ROLES = ("photos", "objects", "camera")


def photo_heldout(group: str) -> bool:
    """The fixed held-out eighth of the photo groups (a hash, so independent of order)."""
    return int(hashlib.sha1(group.encode()).hexdigest(), 16) % HELDOUT_PHOTO_EVERY == 0


def _copyright_head(extracted: Path, package: str) -> str:
    path = extracted / "usr/share/doc" / package / "copyright"
    if not path.is_file():
        return ""
    licences = sorted({line.split(":", 1)[1].strip() for line in path.read_text(errors="replace").splitlines()
                       if line.startswith("License:")})
    return ", ".join(licences)


def install(root: Path | None = None, packages=PACKAGES, any_version: bool = False,
            progress: Callable[[str], None] = lambda s: print(s, file=sys.stderr)) -> Path:
    """apt-get download + dpkg-deb -x each package into ROOT/<package>/, then write the manifest.
    Idempotent: a package whose files match the manifest is kept."""
    root = (root or default_root()).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    for tool in ("apt-get", "dpkg-deb"):
        if shutil.which(tool) is None:
            raise CorpusError(f"'{tool}' is not available: the corpus comes from Debian packages; on "
                              f"another system, pass your own image folders to fsplit-train instead")
    old = _read_manifest(root) if (root / "manifest.json").is_file() else {"packages": {}}
    manifest = {"format": CORPUS_FORMAT, "packages": {}}
    for pkg in packages:
        entry = old["packages"].get(pkg.name)
        if entry and entry.get("version") == pkg.version and (root / pkg.name).is_dir():
            manifest["packages"][pkg.name] = entry
            progress(f"{pkg.name}: already installed ({len(entry['files'])} files)")
            continue
        spec = pkg.name if any_version else f"{pkg.name}={pkg.version}"
        with tempfile.TemporaryDirectory() as tmp:
            run = subprocess.run(["apt-get", "download", spec], cwd=tmp, capture_output=True, text=True)
            if run.returncode != 0:
                raise CorpusError(f"apt-get download {spec} failed: {run.stderr.strip()[-300:]} "
                                  f"(run 'apt-get update' first; --any-version takes the archive's "
                                  f"current version, whose checksums will differ)")
            deb = next(Path(tmp).glob("*.deb"))
            target = root / pkg.name
            shutil.rmtree(target, ignore_errors=True)
            subprocess.run(["dpkg-deb", "-x", str(deb), str(target)], check=True)
            deb_sha, deb_bytes = file_sha256(deb), deb.stat().st_size
        manifest["packages"][pkg.name] = package_entry(root, pkg, deb_sha, deb_bytes, any_version)
        files = manifest["packages"][pkg.name]["files"]
        progress(f"{pkg.name}: {len(files)} files ({pkg.role})")
    write_manifest(root, manifest["packages"])
    return root


def package_entry(root: Path, pkg: CorpusPackage, deb_sha256: str, deb_bytes: int,
                  any_version: bool = False) -> dict:
    """The manifest entry of a package extracted into ROOT/<name>/: its selected files with
    group, size, checksum and held-out flag."""
    target = root / pkg.name
    files = []
    for path, group in pkg.select(target):
        files.append({"path": str(path.relative_to(root)), "group": group, "bytes": path.stat().st_size,
                      "sha256": file_sha256(path),
                      "heldout": pkg.role == "camera" or (pkg.role == "photos" and photo_heldout(group))})
    if not files:
        raise CorpusError(f"{pkg.name} {pkg.version} contains no usable images: its layout changed")
    return {"version": pkg.version if not any_version else "any", "role": pkg.role,
            "licence": _copyright_head(target, pkg.name) or pkg.licence, "deb_sha256": deb_sha256,
            "deb_bytes": deb_bytes, "files": files}


def write_manifest(root: Path, packages: dict) -> Path:
    path = root / "manifest.json"
    path.write_text(json.dumps({"format": CORPUS_FORMAT, "packages": packages}, indent=1) + "\n")
    return path


def _read_manifest(root: Path) -> dict:
    path = root / "manifest.json"
    if not path.is_file():
        raise CorpusError(f"no corpus at {root}: install it with `fsplit-data` "
                          f"(python -m fsplit_ros.cli.data), about 440 MB of Debian packages")
    manifest = json.loads(path.read_text())
    if manifest.get("format") != CORPUS_FORMAT:
        raise CorpusError(f"{path} is not an {CORPUS_FORMAT} manifest: reinstall with `fsplit-data`")
    return manifest


def verify(root: Path | None = None) -> dict:
    """Recompute every checksum; raises CorpusError naming the first altered or missing file."""
    root = (root or default_root()).expanduser()
    manifest = _read_manifest(root)
    for name, entry in manifest["packages"].items():
        for f in entry["files"]:
            path = root / f["path"]
            if not path.is_file() or file_sha256(path) != f["sha256"]:
                raise CorpusError(f"{path} is missing or altered: reinstall with `fsplit-data --force`")
    return manifest


@dataclass(frozen=True)
class CorpusFile:
    path: Path
    group: str
    package: str
    role: str
    heldout: bool


def corpus_files(root: Path | None = None) -> list[CorpusFile]:
    """Every file of the installed corpus (manifest order); CorpusError if none is installed."""
    root = (root or default_root()).expanduser()
    manifest = _read_manifest(root)
    return [CorpusFile(root / f["path"], f["group"], name, entry["role"], bool(f["heldout"]))
            for name, entry in manifest["packages"].items() for f in entry["files"]]


def installed(root: Path | None = None) -> bool:
    return ((root or default_root()).expanduser() / "manifest.json").is_file()


def summary(root: Path | None = None) -> dict:
    """Counts per role: files, groups, held-out files, bytes (for the README and the note)."""
    out: dict[str, dict] = {}
    for f in corpus_files(root):
        row = out.setdefault(f.role, {"files": 0, "groups": set(), "heldout_files": 0, "bytes": 0})
        row["files"] += 1
        row["groups"].add(f.group)
        row["heldout_files"] += f.heldout
        row["bytes"] += f.path.stat().st_size
    return {role: {**row, "groups": len(row["groups"])} for role, row in out.items()}
