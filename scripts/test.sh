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

# The downstream crate below shares the workspace's target directory: with different profile
# settings every dependency would compile a second time (minutes, and gigabytes of disk).
profiles() { awk '/^\[/ { inp = ($0 ~ /^\[profile\./) } inp { sub(/[ \t]*#.*/, ""); if ($0 != "") print }' "$1"; }
if ! diff <(profiles Cargo.toml) <(profiles tests/downstream/Cargo.toml) >&2; then
  echo "scripts/test.sh: tests/downstream/Cargo.toml's [profile.*] sections differ from Cargo.toml's (diff above)" >&2
  exit 1
fi

# A clean build of the suite needs about 3 GB under target/; a full disk shows up as linker bus
# errors, so say it first.
avail_kb="$(df -Pk . | awk 'NR == 2 { print $4 }')"
if [ "${avail_kb:-0}" -lt $((4 * 1024 * 1024)) ]; then
  echo "scripts/test.sh: warning: only $((avail_kb / 1024)) MiB free on $(df -P . | awk 'NR == 2 { print $6 }'); a clean build needs about 3 GB" >&2
fi

# Every test binary's "test result" line is collected, so the run ends with one total.
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
rc=0
cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || rc=$?

# A crate outside the workspace that depends on `mdpo` by version and trains its own model through
# the public API (tests/downstream). Same Cargo.lock versions, target directory and profiles as the
# workspace, so only mdpo and the downstream crate compile.
cp Cargo.lock tests/downstream/Cargo.lock
CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}" cargo test --manifest-path tests/downstream/Cargo.toml 2>&1 \
  | tee -a "$log" || rc=$?

sum_of() { sed -n "s/^test result: .* \([0-9][0-9]*\) $1.*/\1/p" "$log" | awk '{ s += $1 } END { print s + 0 }'; }
echo "summary: $(sum_of passed) passed, $(sum_of failed) failed"
exit "$rc"
