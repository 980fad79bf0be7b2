#!/usr/bin/env bash
# The GPU check (issue "Real scale", item 11), ready for a lent GPU: one table, also written to a file.
#
#   bash scripts/gpu-check.sh            on CUDA device 0: LLaVA-1.5-7B shapes (< 8 min on one H100/H200)
#   bash scripts/gpu-check.sh --cpu      the same code on the CPU with a ~100M-parameter shape (< 5 min)
#   bash scripts/gpu-check.sh --out FILE (default: target/gpu-check.md)
#
# (a) the device tests (crates/mllm/tests/device.rs on AMP_TEST_DEVICE): bf16 against f32 logits on
#     the transformers fixtures (tolerance 0.05 of the largest |logit|, derived in
#     crates/mllm/tests/precision.rs), greedy generation token-identical to transformers, 3 MDPO and
#     3 SFT LoRA steps in bf16 with gradient checkpointing;
# (b) a random-weight model built directly on the device in bf16 (7B: CLIP ViT-L/14-336, 576 image
#     tokens, 32 layers x 4096, vocab 32000), an MDPO K = 4 step at micro-batch 2 with 300-token
#     answers, LoRA r 64 and checkpointing: seconds per step, peak memory, model FLOPs utilisation;
# (c) decode tokens/s at batch 1 and 16 (examples/gpu_check.rs);
# (d) where the machine has two or more GPUs: data parallel over NCCL, `amp train --nproc 2
#     --device cuda` (and `amp sft`) against one GPU with gradient accumulation 2 on the tiny
#     fixture (tests/distributed.rs, nccl_world_2_matches_one_gpu_with_accumulation_2). With one
#     GPU, or in --cpu mode, (d) runs the same comparison over Gloo on 2 CPU ranks instead.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=gpu
out=target/gpu-check.md
while [ $# -gt 0 ]; do
  case "$1" in
    --cpu) mode=cpu ;;
    --out) out="$2"; shift ;;
    *) echo "usage: scripts/gpu-check.sh [--cpu] [--out FILE]" >&2; exit 2 ;;
  esac
  shift
done
# shellcheck source=scripts/setup.sh
source scripts/setup.sh >/dev/null
export AMP_FIXTURES="${AMP_FIXTURES:-$PWD/target/oracle-fixtures}"
if [ ! -f "$AMP_FIXTURES/llava/oracle.json" ]; then
  "$AMP_PYTHON" tests/oracles/gen_llava.py "$AMP_FIXTURES/llava"
fi
if [ "$mode" = gpu ]; then
  dev=cuda; shape=7b; steps=3; warmup=1; decode=64; answer=300
  command -v nvidia-smi >/dev/null || { echo "gpu-check: no nvidia-smi; use --cpu" >&2; exit 1; }
else
  # the same code, one step, 100-token answers: a shared 2-core machine must finish in < 5 min
  dev=cpu; shape=100m; steps=1; warmup=0; decode=2; answer=100
fi
t0=$(date +%s)
log="$(mktemp)"
echo "gpu-check ($mode): building" >&2
cargo test -q -p mllm --test device --no-run 2>&1 | tail -20 >&2
# (d) also runs examples/custom_model_mdpo, which `cargo test --test distributed` does not build.
cargo build -q --example gpu_check --example custom_model_mdpo 2>&1 | tail -20 >&2
cargo test -q --test distributed --no-run 2>&1 | tail -20 >&2
tb=$(date +%s)
echo "gpu-check ($mode): (a) device tests" >&2
if AMP_TEST_DEVICE="$dev" cargo test -q -p mllm --test device -- --nocapture --test-threads 1 >"$log" 2>&1; then
  a_result="pass"
else
  a_result="FAIL (see the log below)"
fi
ta=$(date +%s)
echo "gpu-check ($mode): (b) MDPO step, (c) decode" >&2
rows="$(cargo run -q --example gpu_check -- --shape "$shape" --device "$dev" --steps "$steps" --warmup "$warmup" --answer-tokens "$answer" --decode-tokens "$decode")"
tc=$(date +%s)
gpus=0
if [ "$mode" = gpu ]; then gpus=$(nvidia-smi -L | grep -c '^GPU' || true); fi
dlog="$(mktemp)"
if [ "$gpus" -ge 2 ]; then
  echo "gpu-check ($mode): (d) NCCL, 2 ranks on 2 of $gpus GPUs" >&2
  d_what="NCCL, 2 GPUs"; d_filter=nccl_world_2
else
  echo "gpu-check ($mode): (d) $gpus GPU(s): data parallel over Gloo on 2 CPU ranks" >&2
  d_what="Gloo, 2 CPU ranks ($gpus GPU(s): NCCL not run)"; d_filter=world_2_matches_one_process
fi
if AMP_TEST_DEVICE="$dev" cargo test -q --test distributed "$d_filter" -- --nocapture --test-threads 1 >"$dlog" 2>&1; then
  d_result="pass ($(grep -o 'max abs difference [^ ]*' "$dlog" | sed 's/max abs difference //' | paste -sd' ' -))"
else
  d_result="FAIL (see the log below)"
fi
td=$(date +%s)
{
  echo "# GPU check ($mode, $(date -u +%Y-%m-%dT%H:%MZ))"
  echo
  if [ "$mode" = gpu ]; then nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | sed 's/^/device: /'; else echo "device: CPU ($(nproc) threads)"; fi
  echo
  echo "| check | value | note |"
  echo "|---|---|---|"
  echo "| (a) device tests: bf16 vs f32 parity, greedy parity, MDPO + SFT LoRA steps | $a_result | AMP_TEST_DEVICE=$dev, $((ta - tb)) s |"
  echo "$rows"
  echo "| (d) data parallel, world 2 vs accumulation 2 (max abs diff of the adapters, MDPO then SFT) | $d_result | $d_what, $((td - tc)) s |"
  echo "| wall time | $((td - t0)) s | build $((tb - t0)) s, tests $((ta - tb)) s, (b)+(c) $((tc - ta)) s, (d) $((td - tc)) s |"
  echo
  echo '(a) output:'
  echo '```'
  grep -E "bf16|transformers|test result|panicked|FAILED" "$log" || true
  echo '```'
  echo
  echo '(d) output:'
  echo '```'
  grep -E "max abs|skipped|test result|panicked|FAILED|differ" "$dlog" || true
  echo '```'
} | tee "$out"
rm -f "$log" "$dlog"
[ "$a_result" = pass ] && [ "${d_result%% *}" = pass ]
