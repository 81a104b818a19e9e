#!/usr/bin/env bash
# The whole test suite: the ROS-free core, then the nodes as separate processes over real DDS.
# Extra arguments go to pytest (e.g. tools/run_tests.sh -k payload).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck disable=SC1091
source "$ROOT/tools/env.sh"
cd "$ROOT"
# Tests that need ROS must not be skipped silently in this environment.
export FSPLIT_REQUIRE_ROS=1
exec pytest test "$@"
