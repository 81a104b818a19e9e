#!/usr/bin/env bash
# The main job: the demo graph on the bundled video (see python -m fsplit_ros.demo --help).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/tools/env.sh"
cd "$ROOT"
exec python -m fsplit_ros.demo "$@"
