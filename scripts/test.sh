#!/usr/bin/env bash
# The whole test suite, from a fresh clone: installs libtorch + the test-only Python oracles if they
# are missing (once, into a per-user cache), regenerates the oracle fixtures, builds, and runs every
# test of every crate (unit, integration and doc tests).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/setup.sh
source scripts/setup.sh

export AMP_FIXTURES="${AMP_FIXTURES:-$PWD/target/oracle-fixtures}"
mkdir -p "$AMP_FIXTURES"
shopt -s nullglob
for gen in tests/oracles/gen_*.py; do
  name="$(basename "$gen" .py)"; name="${name#gen_}"
  echo "scripts/test.sh: oracle fixtures: $name"
  "$AMP_PYTHON" "$gen" "$AMP_FIXTURES/$name"
done

# Every library crate must stay publishable (metadata, versions on path dependencies, files inside
# the package): package them all without building (about 15 s).
echo "scripts/test.sh: cargo package (library crates)"
cargo package --workspace --exclude amp --no-verify --allow-dirty --quiet

cargo test --workspace --no-fail-fast "$@"
