#!/usr/bin/env bash
# The fused loss at the floor (issue 18), on one lent H100: the GPU tests of both loss kernels, the
# per-chunk probe of the epilogue GEMM's tile configs, then bench_loss.py with both logits paths.
#   bash scripts/gpu_issue18.sh [probe] [tests] [bench] [oldbench] [trainer]   (default: the first three)
# Writes JSON and logs under $OUT. No vLLM or DeepSpeed needed: plain torch + Triton of the image,
# except for the job `trainer` (carry .whl: DeepSpeed and, without the vLLM pieces, pydantic), which
# runs bench_train.py (Qwen3-0.6B shape, HF engine) with each logits path, the epilogue first.
set -uo pipefail
export PYTHONUNBUFFERED=1 TRITON_INTERPRET=0 NCCL_NVLS_ENABLE=0
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
[ -e relate_fast/kernels ] || ln -s ../kernels relate_fast/kernels
export PYTHONPATH="$PWD:${PYTHONPATH:-}"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
jobs=("$@"); [ ${#jobs[@]} -gt 0 ] || jobs=(tests probe bench)
for job in "${jobs[@]}"; do
  t=$SECONDS
  case "$job" in
  tests) timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_kernels_logits_gemm.py \
           tests/test_kernels_grpo_loss.py > "$OUT/tests.log" 2>&1; echo "-- tests rc=$? in $((SECONDS - t)) s"
         tail -3 "$OUT/tests.log" ;;
  probe) timeout 300 python3 benchmarks/probe_logits_gemm.py ${PROBE_ARGS:-} --profile ${PROFILE_N:-4096} --out "$OUT/probe_logits_gemm.json" > "$OUT/probe.log" 2>&1
         echo "-- probe rc=$? in $((SECONDS - t)) s"; grep -E "== |  [ 0-9.]+ ms |TFLOPs|error|dlogits|product|addmm|rescale|stats" "$OUT/probe.log" | head -90 ;;
  bench) timeout 400 python3 benchmarks/bench_loss.py --sizes ${SIZES:-4096,8192,16384} --skip naive,ours_recompute \
           --out "$OUT/loss.json" > "$OUT/bench.log" 2>&1; echo "-- bench rc=$? in $((SECONDS - t)) s"
         sed -n '/forward+backward/,$p' "$OUT/bench.log" ;;
  widths) timeout 300 python3 benchmarks/probe_widths.py --out "$OUT/widths.json" 2>&1 | tail -20
         echo "-- widths rc=$? in $((SECONDS - t)) s" ;;
  oldbench)  # the same benchmark on the tree in .old (carry it: a copy of an earlier commit), for a
             # before/after pair on one machine
         ( cd .old && { [ -e relate_fast/kernels ] || ln -s ../kernels relate_fast/kernels; } && PYTHONPATH="$PWD" \
           timeout 300 python3 benchmarks/bench_loss.py --sizes ${OLD_SIZES:-4096,8192} \
           --skip naive,ours_recompute,ours,ours_epilogue_beta,ours_epilogue_tokens_dapo --out "$OUT/loss_old.json" \
           > "$OUT/bench_old.log" 2>&1 ); echo "-- oldbench rc=$? in $((SECONDS - t)) s"
         sed -n '/forward+backward/,$p' "$OUT/bench_old.log" ;;
  trainer) source scripts/gpu_setup.sh > "$OUT/setup.log" 2>&1 || { tail -5 "$OUT/setup.log"; continue; }
         for p in ${TRAIN_PATHS:-auto fp32}; do
           n0=$(find ~/.triton/cache -name "*.json" 2>/dev/null | wc -l)
           RELATE_FAST_LOGITS=$p timeout 240 python3 benchmarks/bench_train.py --gpu --engine hf ${TRAIN_ARGS:-} \
             --keep "$OUT/run_$p" --log-compiles "$OUT/compiles_$p.log" --out "$OUT/train_$p.json" > "$OUT/train_$p.log" 2>&1
           echo "-- trainer ($p) rc=$? triton cache files $n0 -> $(find ~/.triton/cache -name "*.json" | wc -l)"
           grep -h '"time/update"' "$OUT/train_$p.json" 2>/dev/null
           python3 -c "import json,sys; [print(round(r.get('time/update',0)*1e3), end=' ') for r in map(json.loads, open(sys.argv[1]))]; print()" "$OUT/run_$p/bench/metrics.jsonl"
           rm -rf "$OUT/run_$p/qwen3_0.6b" "$OUT/run_$p/bench/"{checkpoint,checkpoints,ctcvr,plots,tensorboard}
         done ;;
  esac
done
