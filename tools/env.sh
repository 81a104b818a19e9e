# Source this (bash) to get the environment tools/setup_env.sh built: the venv, then the colcon
# install overlay (fsplit_ros.msg, vision_msgs, executables under lib/fsplit_ros).
_fsplit_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_fsplit_venv="${FSPLIT_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/fsplit_ros/venv}"
export FSPLIT_INSTALL="${FSPLIT_WS:-$_fsplit_root/.ws}/install"
if [[ ! -f "$FSPLIT_INSTALL/setup.bash" ]]; then
  echo "fsplit_ros is not built yet: run tools/setup_env.sh first" >&2
  return 1 2>/dev/null || exit 1
fi
# shellcheck disable=SC1091
source "$_fsplit_venv/bin/activate"
# The overlay's setup scripts reference unset variables; tolerate that under `set -u`.
_fsplit_had_u=0; [[ $- == *u* ]] && _fsplit_had_u=1 && set +u
# shellcheck disable=SC1091
source "$FSPLIT_INSTALL/setup.bash"
[[ $_fsplit_had_u == 1 ]] && set -u
# Keep DDS traffic of tests and demos on this machine unless the user configured otherwise.
export ROS_AUTOMATIC_DISCOVERY_RANGE="${ROS_AUTOMATIC_DISCOVERY_RANGE:-LOCALHOST}"
# Camera frames over 512 KiB need a larger Fast DDS shared-memory segment (config/fastdds_large_frames.xml).
# Kilted's Fast DDS 3 reads FASTDDS_DEFAULT_PROFILES_FILE only (with FASTRTPS_... set as well it
# parses the file twice and every node logs XMLPARSER errors): see fsplit_ros/launch_support.py.
_fsplit_dds_profile="$FSPLIT_INSTALL/fsplit_ros/share/fsplit_ros/config/fastdds_large_frames.xml"
export FASTDDS_DEFAULT_PROFILES_FILE="${FASTDDS_DEFAULT_PROFILES_FILE:-$_fsplit_dds_profile}"
unset _fsplit_dds_profile _fsplit_root _fsplit_venv _fsplit_had_u
