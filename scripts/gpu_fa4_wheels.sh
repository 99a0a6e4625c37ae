#!/usr/bin/env bash
# flash-attn 4 (the CuTe-DSL kernels, pure Python; SM90 forward and backward among them) for the lent GPU
# machine (Python 3.12, x86-64, torch 2.11+cu130; no package index there), cut into 56 MiB pieces in .gpu-fa4/
# (ignored by git). Carry .gpu-fa4/part.00, part.01 one per call like the vLLM pieces; scripts/gpu_fa4_setup.sh
# installs them there into /tmp/site_fa4.
#   bash scripts/gpu_fa4_wheels.sh        # from the project root; prints the pieces
#
# The set: flash-attn-4 4.0.0b36 and what it needs newer than the GPU vLLM bundle (../shared/gpu-vllm/wheels.txt)
# holds: nvidia-cutlass-dsl 4.8.1 with its base, core and CUDA 13 libraries (the bundle has 4.6.0; FA4 asks
# >= 4.6.2), apache-tvm-ffi 0.1.15 (bundle 0.1.10; FA4 asks >= 0.1.11), quack-kernels 0.6.5 (bundle 0.6.3).
# torch, einops, typing_extensions, cuda-bindings and torch-c-dlpack-ext are in the image or the bundle.
# /tmp/site_fa4 goes first on PYTHONPATH only for the processes that use FA4: vLLM keeps its own cutlass-dsl.
# Beware: flash-attn-4 installs a package named `flash_attn` (only flash_attn/cute); code that takes any
# `flash_attn` for flash-attn 2 goes wrong (relate_fast.models.flash_attn_2_installed checks the distribution).
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.gpu-fa4/' .git/info/exclude 2>/dev/null || echo '/.gpu-fa4/' >> .git/info/exclude
PY=${PYTHON:-.venv/bin/python}
out=.gpu-fa4
rm -rf "$out" && mkdir -p "$out/w"
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_24_x86_64 --platform any -d "$out/w" \
  flash-attn-4==4.0.0b36 nvidia-cutlass-dsl==4.8.1 nvidia-cutlass-dsl-libs-base==4.8.1 \
  nvidia-cutlass-dsl-libs-core==4.8.1 nvidia-cutlass-dsl-libs-cu13==4.8.1 apache-tvm-ffi==0.1.15.post2 quack-kernels==0.6.5
(cd "$out" && tar cf - w | split -b 56M -d - part.)
echo "$(find "$out/w" -name '*.whl' | wc -l) wheels, $(du -sh "$out/w" | cut -f1), pieces:"
ls "$out"/part.*
