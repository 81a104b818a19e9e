"""How much each candidate's results agree with the unmodified model's, so that the link monitor's
`min_fidelity` floor can keep lossy configurations out.

A fidelity record (`fsplit-fidelity/1`, one JSON file per backbone, shipped in
`fsplit_ros/profiling/fidelity/` and written by `fsplit-eval --record PATH`) holds the held-out
fidelity of every image and split configuration fsplit-eval measured: top-1 agreement for
classifiers, fidelity mAP@0.5 for detectors, with its Wilson interval where there is one. It
belongs to one set of weights (`weights_hash`): a user's own weights get no record until they
measure one. The learned bottleneck's fidelity comes from its checkpoint (its training run's
held-out check), so that a new checkpoint carries its own.

Lossy pixels cost more than their bytes suggest: on held-out family A, Lite0's top-1 agrees with
the full model on 85.5 % of the frames after JPEG q95 of its own input crop, 100 % after PNG.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import TYPE_CHECKING

from fsplit_ros.modes import MODES, candidate_name

if TYPE_CHECKING:
    from fsplit_ros.policy.link_profile import LinkProfile

FORMAT = "fsplit-fidelity/1"
RECORD_DIR = Path(__file__).parent / "fidelity"
METRICS = ("top1_agreement", "fidelity_map50")


def config_key(mode: str, split_index: int | None = None, tensor_codec: str | None = None,
               image_codec: str | None = None, image_resolution: str = "model") -> str | None:
    """The record's name for one payload configuration: "split@13 uint8-channel+zlib",
    "image jpeg:95 model", "image png model" (PNG is lossless at every level). None for modes a
    record does not hold (local is the model itself; the bottleneck's fidelity is its checkpoint's)
    and where the codec is not known (a hand-written profile)."""
    spec = MODES.get(mode)
    codec = {"tensor_codec": tensor_codec, "image_codec": image_codec}.get(spec.codec_parameter) if spec else None
    if not codec:
        return None
    if codec.split(":", 1)[0] == "png":
        codec = "png"
    key = f"{candidate_name(mode, split_index)} {codec}"
    return f"{key} {image_resolution}" if spec.sends_pixels else key


_SPLIT_SETTING = re.compile(r"^(\d+) \S+ (\S+)$")          # "13 blocks.5.0 uint8-channel+zlib"
_QUALITY = re.compile(r"^q(\d+)$")


def key_of_result_row(row: dict) -> str | None:
    """The config key of one fsplit-eval result row (classifier or detector tables), or None."""
    method, setting = row["method"], row["setting"]
    if method == "split":
        m = _SPLIT_SETTING.match(setting)
        return config_key("split", int(m.group(1)), m.group(2)) if m else None
    if method in ("jpeg", "webp", "png"):                    # classifier table: the model crop
        codec, resolution, quality = method, "model", setting
    elif method in ("image-model", "image-native"):           # detector table: "jpeg q95"
        codec, quality = setting.split(" ", 1)
        resolution = method.split("-", 1)[1]
    else:
        return None
    if codec == "png":
        return config_key("image", image_codec="png", image_resolution=resolution)
    m = _QUALITY.match(quality)
    return config_key("image", image_codec=f"{codec}:{m.group(1)}", image_resolution=resolution) if m else None


def record_from_results(summary: dict, weights_hash: str) -> dict:
    """A fidelity record from an fsplit-eval summary (its rate_accuracy.json or
    detection_fidelity.json), for the weights it evaluated."""
    detector = "detector" in summary
    metric = "fidelity_map50" if detector else "top1_agreement"
    entries = {}
    for row in summary["rows"]:
        key = key_of_result_row(row)
        if key is None:
            continue
        if detector:
            entry = {"fidelity": row["map50"]}
        else:
            entry = {"fidelity": row["agreement"], "lo": row.get("agreement_lo"), "hi": row.get("agreement_hi")}
        entries[key] = {**entry, "bytes": row["bytes_mean"]}
    frames = summary.get("frames", 0) + summary.get("photos", 0)
    return {"format": FORMAT, "backbone": summary.get("detector") or summary["backbone"],
            "weights_hash": weights_hash, "metric": metric,
            "measured_on": f"held-out family {summary.get('family', '?')}, {frames} frames",
            "command": summary.get("command", ""), "entries": entries}


def save_record(record: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=1) + "\n")


def load_record(backbone: str, record_dir: str | Path = RECORD_DIR) -> dict | None:
    """The shipped record of `backbone`, or None."""
    path = Path(record_dir) / f"{backbone}.json"
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    if record.get("format") != FORMAT:
        raise ValueError(f"{path} is not an {FORMAT} file: write one with fsplit-eval --record")
    return record


def attach_fidelity(profile: "LinkProfile", record: dict | None) -> list[str]:
    """Give every image and split candidate of `profile` its recorded fidelity (in place; a
    bottleneck keeps the one its checkpoint gave it). Returns the candidates whose fidelity is
    unknown: offloading ones without a record, or a record made for other weights."""
    usable = record is not None and record.get("weights_hash") == profile.model_hashes.get("split")
    unknown = []
    for name, c in profile.candidates.items():
        if not c.offloads or c.fidelity is not None:
            continue
        key = config_key(c.mode, c.split_index, tensor_codec=profile.tensor_codec,
                         image_codec=profile.image_codec, image_resolution=profile.image_resolution)
        found = record["entries"].get(key) if usable and key else None
        if found is None:
            unknown.append(name)
            continue
        c.fidelity = float(found["fidelity"])
        c.fidelity_source = f"{record['metric']} on {record['measured_on']} ({key})"
    return unknown
