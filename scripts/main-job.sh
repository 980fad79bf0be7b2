#!/usr/bin/env bash
# The main job: the end-to-end AMP demo (see README.md). Installs libtorch if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
AMP_NO_ORACLES=1 source scripts/setup.sh
echo "scripts/main-job.sh: the end-to-end demo (issue 7) has not landed yet; nothing to run." >&2
exit 2
