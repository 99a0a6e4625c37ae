#!/usr/bin/env bash
# One call on the lent GPU machine for the trainer (issue 5): set up, then bench_train.py --gpu.
#   bash scripts/gpu_train.sh [bench_train.py args...]
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv
python3 -c "import torch, deepspeed, relate_fast._native; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__)"
python3 benchmarks/bench_train.py --gpu --out "$OUT/train_gpu.json" "$@" 2>&1 | grep -v "Loading weights" | tee "$OUT/bench_train.log"
