#!/usr/bin/env bash
# One call on the lent GPU machine for the loss (issue 3): set up, GPU tests, stage probe, benchmark.
#   bash scripts/gpu_loss.sh [bench_loss.py args...]
# Wheels the image lacks (liger-kernel, cut-cross-entropy) are read from .whl/ when present.
set -uo pipefail
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
# the loss needs no C++ extension; map relate_fast.kernels onto kernels/ as the install would
[ -e relate_fast/kernels ] || ln -s ../kernels relate_fast/kernels
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_kernels_grpo_loss.py 2>&1 | tail -15
python3 benchmarks/probe_loss_parts.py | tee "$OUT/probe.json"
python3 benchmarks/bench_loss.py --out "$OUT/loss.json" "$@" 2>&1 | tee "$OUT/bench.log"
