#!/usr/bin/env bash
# The trainer at GPU scale (issue 14), as jobs for the lent multi-GPU machine (4 GPUs; 2 suffice for
# vs_trl and resume2). Each job writes its JSON under R=$OUT/work/results and its log under
# $OUT/work/logs; both are packed into $OUT/issue14.tgz at the end, and a summary is printed.
#   bash scripts/gpu_issue14.sh engines multinode scaling   # one call
#   bash scripts/gpu_issue14.sh paper8b                     # next call, same warm machine
#   bash scripts/gpu_issue14.sh vs_trl                      # ...
# Pass RELATE_FAST_COMMIT=$(git rev-parse HEAD) from the checkout: the machine's copy of .git is stale.
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh" || exit 1
W=/tmp/issue14; R=$W/results; L=$W/logs; mkdir -p "$R" "$L"
NGPU=$(nvidia-smi -L | wc -l)
MEM_GIB=$(nvidia-smi --query-gpu=memory.total --format=csv,noheader,nounits | head -1 | awk '{print int($1/1024)}')
# vLLM's share of each GPU: what is left beside the policy's training state (8B: ~46 GB per GPU on 4)
if [ "$MEM_GIB" -gt 100 ]; then VLLM8B=0.45; else VLLM8B=0.3; fi
echo "== $(date -u +%FT%TZ) $NGPU GPUs, $MEM_GIB GiB each; jobs: $*"
nvidia-smi --query-gpu=index,name,memory.total,memory.used --format=csv,noheader
python3 -c "import torch, vllm, deepspeed, trl; print('torch', torch.__version__, 'vllm', vllm.__version__, 'deepspeed', deepspeed.__version__, 'trl', trl.__version__)" 2>&1 | tail -1
TR="python3 -m torch.distributed.run"
run() {  # run NAME TIMEOUT CMD...: one job, logged, time-limited so the call always returns its logs
  local name=$1 limit=$2; shift 2
  local t=$SECONDS
  timeout --kill-after=10 "$limit" "$@" > "$L/$name.log" 2>&1
  local rc=$?
  echo "-- $name: rc=$rc in $((SECONDS - t)) s"
  [ $rc -eq 0 ] || tail -25 "$L/$name.log" | grep -v "^\s*$" | tail -12
}

for job in "$@"; do
  case "$job" in
  engines)  # the rollout engine three ways on GPUs 0-2 (one process each) beside the GPU tests on GPU 3
    for i in 0 1 2; do
      ex=(eager cuda_graphs compiled); e=${ex[$i]}
      CUDA_VISIBLE_DEVICES=$i run rollout_$e 400 python3 benchmarks/bench_rollout.py --execution $e --out $R/rollout_$e.json &
    done
    CUDA_VISIBLE_DEVICES=3 run pytest_gpu 400 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_rollout.py \
      tests/test_kernels_grpo_loss.py -k "not two_gpus" &
    wait ;;
  multinode)  # two "nodes" of 2 GPUs on this host, c10d rendezvous: the multi-node launch of the README
    for node in 0 1; do
      CUDA_VISIBLE_DEVICES=$((2 * node)),$((2 * node + 1)) run multinode_node$node 300 $TR --nnodes 2 --nproc_per_node 2 \
        --rdzv_backend c10d --rdzv_endpoint 127.0.0.1:29410 --rdzv_id relate-demo -m relate_fast.train \
        --run.out_dir $W/runs --run.name multinode --run.progress false --model.dtype bfloat16 --model.tiny.head_dim 64 \
        --sft.steps 0 --ctcvr.encoder hashed --reward.encoder hashed --ctcvr.epochs 1 --ctcvr.variants 2 \
        --ctcvr.impressions 2 --rollout.engine vllm --rollout.vllm_gpu_memory_utilization 0.2 --grpo.steps 3 \
        --eval.enabled false --run.check_replicas_every 1 &
    done
    wait
    cp $W/runs/multinode/metrics.jsonl $R/multinode_metrics.jsonl 2>/dev/null ;;
  scaling)  # the same per-GPU work (1.7B shape, 16 prompts x 5 x 128 tokens per GPU) on 1, 2 and 4 GPUs
    for n in 1 2 4; do
      [ "$n" -le "$NGPU" ] || continue
      run scaling_$n 420 $TR --nproc_per_node $n --master_port 2952$n benchmarks/bench_vs_trl.py --side ours \
        --shape 1.7b --work $W/vs --out $R/scaling_$n.json
    done ;;
  scaling12)  # 1 GPU (GPU 0) beside 2 GPUs (GPUs 2,3), at once: disjoint GPUs
    CUDA_VISIBLE_DEVICES=0 run scaling_1 420 $TR --nproc_per_node 1 --master_port 29521 \
      benchmarks/bench_vs_trl.py --side ours --shape 1.7b --work $W/vs1 --out $R/scaling_1.json &
    CUDA_VISIBLE_DEVICES=2,3 run scaling_2 420 $TR --nproc_per_node 2 --master_port 29522 \
      benchmarks/bench_vs_trl.py --side ours --shape 1.7b --work $W/vs2 --out $R/scaling_2.json &
    wait ;;
  scaling4)
    run scaling_4 420 $TR --nproc_per_node 4 --master_port 29524 benchmarks/bench_vs_trl.py --side ours \
      --shape 1.7b --work $W/vs4 --out $R/scaling_4.json ;;
  paper8b)  # the paper's shape: Qwen3-8B config, random weights, 4 x 72 prompts x G=5 = 1,440 responses
    run paper8b 560 $TR --nproc_per_node 4 --master_port 29530 benchmarks/bench_train.py --gpu --shape 8b \
      --prompts 72 --max-new-tokens 256 --steps 3 --warmup 1 --out $R/paper8b.json --keep $W/paper8b_run \
      --rollout.vllm_gpu_memory_utilization $VLLM8B --deepspeed.reduce_bucket_size 200000000 \
      --deepspeed.allgather_bucket_size 200000000
    cp $W/paper8b_run/bench/metrics.jsonl $R/paper8b_metrics.jsonl 2>/dev/null ;;  # the steps, even if killed
  vs_trl)  # ours and TRL on GPUs 0,1; the 2-GPU resume test beside ours on GPUs 2,3 (if there): ours
           # pays for that neighbour, TRL runs alone
    CUDA_VISIBLE_DEVICES=0,1 run vs_trl_ours 420 $TR --nproc_per_node 2 --master_port 29540 benchmarks/bench_vs_trl.py \
      --side ours --shape 1.7b --work $W/vs --out $R/vs_trl_ours.json &
    if [ "$NGPU" -ge 4 ]; then
      CUDA_VISIBLE_DEVICES=2,3 run resume2 420 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_rollout.py \
        -k two_gpus --basetemp=$W/resume2 &
    fi
    wait
    CUDA_VISIBLE_DEVICES=0,1 run vs_trl_trl 480 $TR --nproc_per_node 2 --master_port 29541 benchmarks/bench_vs_trl.py \
      --side trl --shape 1.7b --work $W/vs --out $R/vs_trl_trl.json
    python3 benchmarks/bench_vs_trl.py --combine $R/vs_trl_ours.json $R/vs_trl_trl.json --out $R/vs_trl.json \
      > $L/vs_trl_combine.log 2>&1; cp $W/resume2/resume_2gpu.json $R/ 2>/dev/null ;;
  diag8b)  # start-up of the 8B random-init policy and its vLLM engine on GPU 0, tracebacks every 30 s
    CUDA_VISIBLE_DEVICES=0 VLLM_LOGGING_LEVEL=INFO run diag8b 100 python3 benchmarks/diag_init.py --shape 8b
    grep -v "^\s*$" $L/diag8b.log | grep -E "^(folder|random init|vllm init|push) |took|seconds|Thread 0x|File \"/" | head -60 ;;
  resume2)
    CUDA_VISIBLE_DEVICES=0,1 run resume2 420 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_rollout.py \
      -k two_gpus --basetemp=$W/resume2; cp $W/resume2/resume_2gpu.json $R/ 2>/dev/null ;;
  *) echo "unknown job $job" ;;
  esac
done
tar czf "$OUT/issue14.tgz" -C "$W" results logs
python3 - "$R" <<'PY'
import json, sys, glob, os
for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json"))):
    d = json.load(open(f)); name = os.path.basename(f)
    keep = {k: d[k] for k in ("start_s", "generate_s", "generate_tokens_per_s", "push_s", "memory_gib", "greedy_first8_equal",
                              "step_ms", "tokens_per_second", "tokens_per_second_per_gpu", "gpu_mem_peak_gib",
                              "gpu_mem_device_used_gib", "responses_per_step", "ratios") if k in d}
    for side in ("ours", "trl"):
        if side in d and isinstance(d[side], dict):
            keep[side] = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in d[side].items() if k != "stages_s"}
    print(name, json.dumps(keep))
PY
