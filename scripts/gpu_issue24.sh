#!/usr/bin/env bash
# The policy update at the hardware's speed (issue 24), on one lent H200, in one call:
#   bash scripts/gpu_issue24.sh [tests] [update] [update_realistic] [vs_trl] ...
#   tests             the GPU tests of the packed layout, varlen attention and fused layers, and the loss
#   rollout_tests     the GPU tests of the vLLM engine (tests/test_gpu_rollout.py: pushed weights sampled in process and
#                     with the engine core in its own process); ROLLOUT_K selects (pytest -k), e.g. own
#   update            bench_update.py, fixed-length workload (1.7B shape): layout x checkpointing x
#                     micro-batch x fused decoder body
#   update_realistic  the same on the realistic-length workload
#   profile           bench_update.py --profile at the trainer's best update setting (packed, 80 rows, no checkpointing,
#                     compiled layers), both workloads: the update's device time by kind of kernel, its idle share and
#                     its host syncs by line; PROFILE_WORKLOADS (fixed realistic), PROFILE_SETS (variants run one after the
#                     other, each KEY=VALUE[,KEY=VALUE...], - for none; PROFILE_SET: one)
#   probe             benchmarks/probe_memory_plan.py: what a forward keeps per checkpointed layer against the plan
#   green             benchmarks/probe_green_context.py: the update's products and a graph-replayed decode step at once,
#                     on two streams and with CUDA green contexts splitting the SMs (issue 27; no vLLM needed)
#   phases            bench_rollout.py --phases, fixed and realistic workloads (1.7B shape): where the
#                     rollout's time goes (push, wake, generate, sleep) per sleep setting and seeding
#   decode            probe_decode.py: a vLLM decode step's time per batch size, a profile of one generate,
#                     in-process and with vLLM's engine core in its own process
#   vs_trl            bench_vs_trl.py --sweep, fixed workload (needs the vLLM pieces: carry .gpu-vllm/part.00..08
#                     first); ONLY_FIXED names the settings to run (--only)
#   vs_trl_realistic  the same on the realistic workload; ONLY_REALISTIC
#   offpolicy         our rollout.mode sync against one_step_off (the next batch sampled in a background thread
#                     during the update), vLLM awake at --awake-memory, micro-batch OFF_GRID (40,80), no
#                     checkpointing, fixed workload; ONLY_OFF names settings; OFF_MODES (none,one_step_off) the modes
#                     (sync_process, one_step_off_process: vLLM's engine core in a process of its own)
#   offpolicy_realistic  the same on the realistic workload
#   judge             the LLM judge on the GPU (reward.judge_engine vllm: a second vLLM engine, its engine core in
#                     a process of its own): 3 GRPO steps of a SHAPE (1.7b) policy judged by a random-weight JUDGE_SHAPE (0.6b),
#                     against the same run without a judge (JUDGE_RUNS="none vllm" names the runs); the rewards
#                     stage's time per step from metrics.jsonl. JUDGE_TIMEOUT (420 s) covers both engines' cold start on
#                     a fresh machine (judge ~200 s, policy ~70 s) and the first step's compilation
#   split             several GPUs (the multi-GPU issue): our sync on every GPU against one_step_off with
#                     SAMPLER_RANKS (1) ranks that only sample, under torchrun on all the machine's GPUs;
#                     WORKLOAD (fixed), MB (80 sequences per micro-batch), no checkpointing, vLLM awake
# SHAPE (1.7b, 4b, ...) picks the policy's shape; each shape and workload keeps its own sweep folder, which the
# vs_trl and offpolicy jobs share (our sync row is the same run in both).
# Carry .whl (scripts/gpu_wheels.sh). JSON and logs under $OUT. UPDATE_ARGS, VS_TRL_ARGS add arguments.
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh" > "${OUT:-/tmp/out}/setup.log" 2>&1 || { tail -5 "${OUT:-/tmp/out}/setup.log"; exit 1; }
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, torch.cuda.get_device_name())"
jobs=("$@"); [ ${#jobs[@]} -gt 0 ] || jobs=(tests update update_realistic)
for job in "${jobs[@]}"; do case "$job" in tests|update|update_realistic|profile|probe|green) ;; *) require_vllm || exit 3 ;; esac; done
for job in "${jobs[@]}"; do
  t=$SECONDS
  case "$job" in
  tests) timeout 300 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu_packing.py tests/test_gpu_memory_plan.py tests/test_kernels_grpo_loss.py \
           > "$OUT/tests.log" 2>&1; echo "-- tests rc=$? in $((SECONDS - t)) s"; grep -E "passed|failed|Error|assert" "$OUT/tests.log" | tail -8 ;;
  rollout_tests) timeout ${ROLLOUT_TIMEOUT:-240} python3 -m pytest -v -p no:cacheprovider -m gpu tests/test_gpu_rollout.py \
           ${ROLLOUT_K:+-k "$ROLLOUT_K"} > "$OUT/rollout_tests.log" 2>&1; echo "-- rollout_tests rc=$? in $((SECONDS - t)) s"
         grep -E "PASSED|FAILED|SKIPPED|Error|assert" "$OUT/rollout_tests.log" | tail -12 | cut -c1-300 ;;
  update|update_realistic)
         w=fixed; [ "$job" = update_realistic ] && w=realistic
         timeout ${UPDATE_TIMEOUT:-280} python3 benchmarks/bench_update.py --shape ${SHAPE:-1.7b} --workload $w ${UPDATE_ARGS:-} \
           --out "$OUT/update_$w.json" > "$OUT/update_$w.log" 2>&1; echo "-- $job rc=$? in $((SECONDS - t)) s"
         sed -n '/^layout/,$p' "$OUT/update_$w.log"; grep -E "Error|error" "$OUT/update_$w.log" | tail -3 ;;
  profile) for w in ${PROFILE_WORKLOADS:-fixed realistic}; do for set in ${PROFILE_SETS:-${PROFILE_SET:--}}; do
           name=profile_$w; [ "$set" = - ] || name=profile_${w}_$(echo "$set" | tr -c 'a-zA-Z0-9\n' _)
           timeout ${PROFILE_TIMEOUT:-200} python3 benchmarks/bench_update.py --shape ${SHAPE:-1.7b} --workload $w --profile \
             --layouts packed --ckpt off --rows 80 --fused compile $([ "$set" = - ] || for kv in ${set//,/ }; do echo --set $kv; done) --out "$OUT/$name.json" \
             > "$OUT/$name.log" 2>&1
           echo "-- $name rc=$? in $((SECONDS - t)) s"; sed -n '/^profile:/,/^{/p' "$OUT/$name.log" | cut -c1-140 | head -${PROFILE_LINES:-45}
           grep -E "Error|error" "$OUT/$name.log" | tail -3
         done; done ;;
  probe) timeout 120 python3 benchmarks/probe_memory_plan.py --out "$OUT/probe_memory_plan.json" > "$OUT/probe.log" 2>&1
         echo "-- probe rc=$? in $((SECONDS - t)) s"; tail -20 "$OUT/probe.log" | cut -c1-160 ;;
  green) timeout 150 python3 benchmarks/probe_green_context.py --out "$OUT/green_context.json" > "$OUT/green.log" 2>&1
         echo "-- green rc=$? in $((SECONDS - t)) s"; tail -14 "$OUT/green.log" | cut -c1-200 ;;
  phases) for w in fixed realistic; do
           timeout ${PHASES_TIMEOUT:-240} python3 benchmarks/bench_rollout.py --phases --shape ${SHAPE:-1.7b} --prompts 16 \
             --max-new-tokens 128 --workload $w --out "$OUT/phases_$w.json" > "$OUT/phases_$w.log" 2>&1
           echo "-- phases $w rc=$? in $((SECONDS - t)) s"; grep -E "^(sleep|awake|prefill)|Error" "$OUT/phases_$w.log" | tail -8
         done ;;
  decode) timeout 300 python3 benchmarks/probe_decode.py --shape ${SHAPE:-1.7b} --out "$OUT/decode_inproc.json" \
           > "$OUT/decode_inproc.log" 2>&1; echo "-- decode in-process rc=$? in $((SECONDS - t)) s"
         grep -E "^batch|^profile|Error" "$OUT/decode_inproc.log"; sed -n '/^profile/,/^{/p' "$OUT/decode_inproc.log" | cut -c1-160 | head -60
         VLLM_ENABLE_V1_MULTIPROCESSING=1 timeout 200 python3 benchmarks/probe_decode.py --shape ${SHAPE:-1.7b} --no-profile \
           --out "$OUT/decode_mp.json" > "$OUT/decode_mp.log" 2>&1; echo "-- decode multiprocessing rc=$? in $((SECONDS - t)) s"
         grep -E "^batch|Error" "$OUT/decode_mp.log" ;;
  vs_trl|vs_trl_realistic)
         # the per-setting JSONs stay in /tmp on the warm machine: a later call resumes the sweep where this
         # one stopped (a setting cut by the timeout is run again); each call returns the combined grid
         w=fixed; only=${ONLY_FIXED:-}; [ "$job" = vs_trl_realistic ] && { w=realistic; only=${ONLY_REALISTIC:-}; }
         d=sweep_${SHAPE:-1.7b}_$w
         timeout ${VS_TRL_TIMEOUT:-540} python3 benchmarks/bench_vs_trl.py --sweep --shape ${SHAPE:-1.7b} --workload $w \
           ${VS_TRL_ARGS:-} ${only:+--only $only} --sweep-dir /tmp/$d --out "$OUT/vs_trl_$w.json" > "$OUT/vs_trl_$w.log" 2>&1
         echo "-- $job rc=$? in $((SECONDS - t)) s"; tail -25 "$OUT/vs_trl_$w.log"
         tar czf "$OUT/$d.tgz" -C /tmp $d 2>/dev/null ;;
  offpolicy|offpolicy_realistic)
         w=fixed; [ "$job" = offpolicy_realistic ] && w=realistic
         d=sweep_${SHAPE:-1.7b}_$w
         timeout ${VS_TRL_TIMEOUT:-540} python3 benchmarks/bench_vs_trl.py --sweep --shape ${SHAPE:-1.7b} --workload $w \
           --sides ours --rollout-modes ${OFF_MODES:-none,one_step_off} --vllm-modes awake --grid ${OFF_GRID:-40,80} --ckpts off \
           ${VS_TRL_ARGS:-} ${ONLY_OFF:+--only $ONLY_OFF} --sweep-dir /tmp/$d --out "$OUT/offpolicy_$w.json" \
           > "$OUT/offpolicy_$w.log" 2>&1
         echo "-- $job rc=$? in $((SECONDS - t)) s"; tail -12 "$OUT/offpolicy_$w.log"
         grep -oE '"[a-z_]+_over_sync": [0-9.]+' "$OUT/offpolicy_$w.json"
         tar czf "$OUT/$d.tgz" -C /tmp $d 2>/dev/null ;;
  judge) python3 -c "from pathlib import Path; from benchmarks.common import qwen3_folder as q; \
q(Path('/tmp/judge/policy'), '${SHAPE:-1.7b}'); q(Path('/tmp/judge/judge'), '${JUDGE_SHAPE:-0.6b}')" > "$OUT/judge_setup.log" 2>&1
         for j in ${JUDGE_RUNS:-none vllm}; do
           extra=(); [ "$j" = vllm ] && extra=(--reward.judge_model /tmp/judge/judge --reward.judge_engine vllm)
           timeout ${JUDGE_TIMEOUT:-420} python3 -m relate_fast.train --run.out_dir /tmp/judge/runs --run.name "judge_$j" \
             --run.progress false --run.resume false --run.checkpoint_every 0 --run.save_final false --eval.enabled false \
             --model.path /tmp/judge/policy --model.dtype bfloat16 --sft.steps 0 --rollout.engine vllm \
             --rollout.vllm_gpu_memory_utilization 0.3 --rollout.prompts_per_step 16 --rollout.max_new_tokens 128 \
             --grpo.steps 3 --grpo.beta 0 --grpo.micro_batch_tokens 20000 --ctcvr.encoder hashed --reward.encoder hashed \
             --ctcvr.epochs 1 --ctcvr.variants 2 --ctcvr.impressions 2 \
             --data.langs "[en]" --data.max_prompt_tokens 512 "${extra[@]}" > "$OUT/judge_$j.log" 2>&1
           echo "-- judge $j rc=$? in $((SECONDS - t)) s"; grep -E "judge:|Error|error" "$OUT/judge_$j.log" | tail -4
           cp /tmp/judge/runs/judge_$j/metrics.jsonl "$OUT/judge_${j}_metrics.jsonl" 2>/dev/null
           python3 -c "import json,sys; r=[json.loads(l) for l in open(sys.argv[1])]; \
print([(round(m['time/rewards'],3), round(m['time/total'],3), m.get('reward/correctness_judge')) for m in r])" \
             "$OUT/judge_${j}_metrics.jsonl" 2>/dev/null
         done ;;
  split) n=$(nvidia-smi -L | wc -l); k=${SAMPLER_RANKS:-1}; w=${WORKLOAD:-fixed}
         for mode in sync split; do
           extra=(); [ "$mode" = split ] && extra=(--rollout-mode one_step_off --sampler-ranks "$k")
           timeout ${SPLIT_TIMEOUT:-280} torchrun --nproc_per_node "$n" --master_port $((29500 + RANDOM % 1000)) \
             benchmarks/bench_vs_trl.py --side ours --shape ${SHAPE:-1.7b} --workload "$w" --micro-batch ${MB:-80} --ckpt off \
             --vllm-mode awake "${extra[@]}" --out "$OUT/split_${mode}_${n}gpu_$w.json" > "$OUT/split_${mode}_${n}gpu_$w.log" 2>&1
           echo "-- split: $mode on $n GPUs rc=$? in $((SECONDS - t)) s"
           grep -oE '"tokens_per_second(_per_gpu)?": [0-9.]+' "$OUT/split_${mode}_${n}gpu_$w.json" | head -2
         done ;;
  esac
done
pack_logs
