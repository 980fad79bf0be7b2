#!/usr/bin/env bash
# The main job: the end-to-end AMP demo (see README.md) on the synthetic world.
#   bash scripts/main-job.sh                 # small preset (default), runs/demo
#   AMP_DEMO_PRESET=tiny bash scripts/main-job.sh
#   bash scripts/main-job.sh --seeds 0,1,2,3 # extra flags go to `amp demo`
# Installs libtorch if it is missing. Resumable: rerunning skips finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
AMP_NO_ORACLES=1 source scripts/setup.sh
# The dev profile is optimised (opt-level 1/2, see Cargo.toml) and shares the test build's cache.
cargo build --bin amp
exec target/debug/amp demo --preset "${AMP_DEMO_PRESET:-small}" --out "${AMP_DEMO_OUT:-runs/demo}" "$@"
