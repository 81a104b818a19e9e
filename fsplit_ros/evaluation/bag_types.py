"""A rosbags typestore that knows fsplit_ros and vision_msgs, registered from their installed .msg
files (share/<pkg>/msg/*.msg on AMENT_PREFIX_PATH, or a source tree): no hand-written CDR."""
from __future__ import annotations

import os
from pathlib import Path

from rosbags.typesys import Stores, get_types_from_msg, get_typestore

CUSTOM_PACKAGES = ("fsplit_ros", "vision_msgs")
REPO_ROOT = Path(__file__).resolve().parents[2]


def _msg_dirs(package: str) -> list[Path]:
    dirs = [Path(p) / "share" / package / "msg" for p in os.environ.get("AMENT_PREFIX_PATH", "").split(":") if p]
    dirs += [REPO_ROOT / "msg"] if package == "fsplit_ros" else [REPO_ROOT / "test" / "interfaces" / package / "msg"]
    return [d for d in dirs if d.is_dir()]


def fsplit_typestore():
    store = get_typestore(Stores.ROS2_KILTED) if hasattr(Stores, "ROS2_KILTED") else get_typestore(Stores.LATEST)
    types = {}
    for package in CUSTOM_PACKAGES:
        dirs = _msg_dirs(package)
        if not dirs:
            raise FileNotFoundError(f"no .msg files for {package}: build the package (tools/setup_env.sh) or "
                                    f"source a ROS 2 install that has it")
        for path in sorted(dirs[0].glob("*.msg")):
            types.update(get_types_from_msg(path.read_text(), f"{package}/msg/{path.stem}"))
    store.register(types)
    return store
