#!/usr/bin/env bash
# The main job: the end-to-end AMP demo (see README.md) on the synthetic world.
#   bash scripts/main-job.sh                 # small preset (default), runs/demo
#   AMP_DEMO_PRESET=tiny bash scripts/main-job.sh
#   bash scripts/main-job.sh --seeds 0,1,2,3 # extra flags go to `amp demo`
# Installs libtorch if it is missing (CPU-only unless the machine has an NVIDIA GPU, see
# scripts/setup.sh). Resumable: rerunning skips finished stages. Prints the time of each part.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$SECONDS
AMP_NO_ORACLES=1 source scripts/setup.sh
t1=$SECONDS
# The dev profile is optimised (opt-level 1/2, see Cargo.toml) and shares the test build's cache.
cargo build --bin amp
t2=$SECONDS
echo "main-job: install $((t1 - t0)) s, build $((t2 - t1)) s" >&2
rc=0
"${CARGO_TARGET_DIR:-target}/debug/amp" demo --preset "${AMP_DEMO_PRESET:-small}" --out "${AMP_DEMO_OUT:-runs/demo}" "$@" || rc=$?
echo "main-job: install $((t1 - t0)) s, build $((t2 - t1)) s, demo $((SECONDS - t2)) s, total $((SECONDS - t0)) s (exit $rc)" >&2
exit $rc
