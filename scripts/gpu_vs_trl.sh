#!/usr/bin/env bash
# One call on the lent GPU machine: our trainer vs TRL's GRPOTrainer (issue 8, single-GPU part).
#   bash scripts/gpu_vs_trl.sh [bench_vs_trl.py args...]
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh"
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -c "import torch, trl, deepspeed; print('torch', torch.__version__, 'trl', trl.__version__, 'deepspeed', deepspeed.__version__)"
python3 benchmarks/bench_vs_trl.py --out "$OUT/vs_trl.json" "$@" 2>&1 | grep -v "Loading weights\|Writing model" | tee "$OUT/vs_trl.log"
