#!/usr/bin/env bash
# verl beside ours (issue 26), on one lent H200, in one call:
#   bash scripts/gpu_issue26.sh [tests] [ab] [oab] [loss] [attention] [path] [verl] [verl_wait] [ours]   (a job may name its workload: ours:realistic)
#   tests  the integration's tests against the real verl installed there (tests/test_integration_verl_real.py, its
#          GPU test included: the triton loss in bf16 against verl's vanilla loss; OpenRLHF's skip: not installed), and
#          the log-prob kernels with a backward on the GPU (tests/test_logprobs_grad.py: both logits paths against float64)
#   verl   bench_vs_verl.py --sweep over ONLY_VERL (default: verl_mb80_ckptoff_bypass_fused_rmpad: its fused log-prob
#          kernels on the packed batch, its best without flash-attn; padded they fail in verl 0.9.1, NOTES_verl.md), fixed workload; VERL_RUN_TIMEOUT
#          (540 s) per setting: verl takes ~300 s to start (Ray, FSDP, vLLM's server: ~2 min even warm) and its first
#          step ~50 s more, so one verl setting per call; it is stopped 30 s after logging its last step
#          VERL_BACKGROUND=1 starts it detached and waits VERL_WAIT (540) s; `verl_wait` in the next calls waits again
#          and collects it (verl at ad lengths needs more than one call: NOTES_verl.md)
#   ab     benchmarks/verl_engine_ab.py for AB_WORKLOADS (fixed realistic): our loss against verl's vanilla inside verl's
#          own FSDP engine (its fused kernels, packed, flex_attention), one batch, one process: loss, gradients, time, memory;
#          then verl's own loss at the token budgets AB_BUDGETS (16,40,80 rows); checkpointing off unless AB_ARGS="--ckpt on";
#          AB_LOGPROBS (on): also verl's vanilla loss on log-probs from our kernels (use_fused_logprobs) instead of its own,
#          at AB_CHUNKS tokens per chunk (1024,0: the integration's default and the loss's own, 0), each a mode of one A/B
#   oab    benchmarks/openrlhf_actor_ab.py for AB_WORKLOADS: OpenRLHF 0.11.2's actor step (full logits, its PolicyLoss)
#          against the drop-in's fused loss on the hidden states, each over its micro-batch sizes; needs openrlhf in .whl
#   loss   bench_loss.py at Qwen3-1.7B's head (H 2048, 8,192 and 17,920 tokens): our fused loss against verl's own
#          fused log-prob kernels (Triton, chunked torch) followed by the GRPO math, and the other anchors; ours also
#          at LOSS_CHUNKS tokens per chunk (512,1024,2048: its extra memory is one chunk's logits)
#   attention  benchmarks/bench_attention.py: packed causal attention at the 1.7B shape, forward + backward — torch's
#          varlen (ours), flex_attention (verl's here), flash-attn 4 (scripts/gpu_fa4_wheels.sh: .gpu-fa4/part.00..01
#          carried first; $FA4_SITE_PATH first on PYTHONPATH for this process only), SDPA per row; and transformers'
#          flash_attention_4 on a tiny Qwen3, packed against separate rows
#   path   benchmarks/probe_rollout_path.py: the same vLLM asked for 80 x 128 tokens of the 1.7B shape our trainer's
#          way and verl's (AsyncLLM in its own process, a request per sequence, detokenized, log-probs, streamed), and
#          verl's with one thing changed at a time, and ours with the engine core in a process of its own: is verl's
#          2 s of generation in vLLM's request path? (~4 min: three engine starts, each stopped after PATH_EACH s)
#   ours   bench_vs_trl.py, ours at OURS_SETTING (default ours_mb80_ckptoff_awake; ~130 s with the engine's start) in the same sweep folder, then
#          the verl grid combined with it (ratios from one call)
# Needs the vLLM pieces (.gpu-vllm/part.00..08), the verl pieces (.gpu-verl/part.00..02, scripts/gpu_verl_wheels.sh)
# and .whl (scripts/gpu_wheels.sh) carried in earlier calls on the same warm machine. VERL_TF=1 puts verl's
# transformers pin (5.10, /tmp/site_verl_tf) first for the verl processes. SWEEP_TAG keeps a sweep apart (e.g. ours
# inside verl with vLLM eager: its vanilla setting has the same name as the one in the main sweep). JSON and logs under $OUT;
# KEEP_ALL=1 puts them all into $OUT/all.tgz after each job. FA4=1: verl and the engine A/B on flash-attn 4. A job may name its workload: `ours:realistic ab:fixed`.
set -uo pipefail
source "$(dirname "$0")/gpu_setup.sh" > "${OUT:-/tmp/out}/setup.log" 2>&1 || { tail -5 "${OUT:-/tmp/out}/setup.log"; exit 1; }
require_vllm || exit 3
source "$(dirname "$0")/gpu_verl_setup.sh" > "$OUT/setup_verl.log" 2>&1 || { tail -5 "$OUT/setup_verl.log"; exit 1; }
tail -1 "$OUT/setup_verl.log"
export RAY_DEDUP_LOGS=0 RAY_USAGE_STATS_ENABLED=0
# keep_all: every file under $OUT moved into $OUT/all.tgz (the device returns at most 8 files; a call cut later
# still returns what the jobs before finished)
keep_all() { local k=${KEEP_DIR:-/tmp/keep_all}; mkdir -p "$k" && find "$OUT" -maxdepth 1 -type f ! -name all.tgz \
             -exec mv {} "$k"/ \; && tar czf "$OUT/all.tgz" -C "$(dirname "$k")" "$(basename "$k")"; }
verl_logs() {  # verl's own logs (the trainer's console, per setting) next to the bench's
  for f in $d/verl_*.log; do [ -f "$f" ] && { echo "== $f"; grep -E "Error|error|Traceback|exited" "$f" | tail -12; }; done
  for f in /tmp/vs_work/verl_*/verl.log; do [ -f "$f" ] && cp "$f" "$OUT/$(basename $(dirname $f)).log"; done; }
# VERL_BACKGROUND=1: the verl job starts the bench detached (files in $bg) and waits VERL_WAIT s for it; a later call's
# verl_wait job waits again. The machine stays warm between calls, so verl may run past one call's 10 minutes
# (its start and first packed update at ad lengths take longer than that); nothing else should use the GPU meanwhile.
bg=${VERL_BG_DIR:-/tmp/verl_bg}
verl_wait() {
  [ -f "$bg/pid" ] || { echo "-- verl_wait: no background verl run (no $bg/pid)"; return 1; }
  local pid end=$((SECONDS + ${VERL_WAIT:-540})); pid=$(cat "$bg/pid")
  while [ ! -f "$bg/rc" ] && kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $end ]; do sleep 5; done
  if [ -f "$bg/rc" ]; then
    echo "-- verl (background) rc=$(cat "$bg/rc"), collected after $((SECONDS - t)) s of this call"
    cp "$bg"/vs_verl_*.json "$OUT"/ 2>/dev/null; cp "$bg/vs_verl.log" "$OUT/vs_verl_$(cat "$bg/workload").log"
    tail -8 "$bg/vs_verl.log"; verl_logs
  elif kill -0 "$pid" 2>/dev/null; then
    echo "-- verl (background) still running after $((SECONDS - t)) s of this call; its steps so far:"
    grep -ahoE "step:[0-9]+ " /tmp/vs_work/verl_*/verl.log 2>/dev/null | tail -3
    verl_logs  # its console so far comes back even if a later call never collects it
  else echo "-- verl (background) gone without a result: stopped with the call that started it?"; fi; }
# FA4=1: verl (the trainer and the engine A/B) on flash-attn 4 instead of flex_attention (scripts/gpu_fa4_wheels.sh's
# pieces carried first; its site first on PYTHONPATH for those processes only); settings and names say so (_fa4)
fa4_verl=(); fa4_ab=(); fa4_tag=; ab_path=${PYTHONPATH:-}
if [ "${FA4:-0}" = 1 ]; then
  source "$(dirname "$0")/gpu_fa4_setup.sh" > "$OUT/setup_fa4.log" 2>&1 || { tail -3 "$OUT/setup_fa4.log"; exit 1; }
  fa4_verl=(--attention flash_attention_4 --attention-dir "$FA4_SITE_PATH"); fa4_ab=(--attn flash_attention_4)
  ab_path=$FA4_PYTHONPATH; fa4_tag=_fa4
fi
jobs=("$@"); [ ${#jobs[@]} -gt 0 ] || jobs=(verl ours)
for spec in "${jobs[@]}"; do  # a job, or job:workload (e.g. ours:realistic) for one job on another workload
  job=${spec%%:*}; w=${WORKLOAD:-fixed}; [ "$spec" = "$job" ] || w=${spec#*:}
  d=${SWEEP_ROOT:-/tmp}/sweep_${SHAPE:-1.7b}_$w${SWEEP_TAG:+_$SWEEP_TAG}  # SWEEP_TAG: a sweep folder of its own
  abw=${AB_WORKLOADS:-fixed realistic}; [ "$spec" = "$job" ] || abw=$w  # the A/B benches' workloads
  t=$SECONDS
  # a timed job beside a background verl run would time both at once: skipped, saying so (verl_wait collects it)
  if [ "$job" != verl_wait ] && [ "$job" != tests ] && [ -f "$bg/pid" ] && [ ! -f "$bg/rc" ] && kill -0 "$(cat "$bg/pid")" 2>/dev/null; then
    echo "-- $spec skipped: verl is still running in the background (pid $(cat "$bg/pid")); verl_wait first"; continue
  fi
  case "$job" in
  tests) timeout 300 python3 -m pytest -q -p no:cacheprovider tests/test_integration_verl_real.py tests/test_bench_vs_verl.py \
           tests/test_integration_openrlhf_real.py tests/test_logprobs_grad.py > "$OUT/tests_verl.log" 2>&1
         echo "-- tests rc=$? in $((SECONDS - t)) s"; grep -E "passed|failed|Error|assert" "$OUT/tests_verl.log" | tail -8 ;;
  ab)   for wl in $abw; do  # ours inside verl's own engine, no Ray, no vLLM (~2 min each)
          PYTHONPATH=$ab_path timeout ${AB_TIMEOUT:-240} python3 benchmarks/verl_engine_ab.py --shape ${SHAPE:-1.7b} --workload $wl "${fa4_ab[@]}" ${AB_ARGS:-} \
            --budget-grid ${AB_BUDGETS:-16,40,80} --logprobs-ab ${AB_LOGPROBS:-on} --logprobs-chunk ${AB_CHUNKS:-1024,0} --work /tmp/vs_work --out "$OUT/verl_engine_ab_$wl.json" > "$OUT/verl_engine_ab_$wl.log" 2>&1
          echo "-- ab $wl rc=$? in $((SECONDS - t)) s"; grep -A3 '"relate_over_vanilla"' "$OUT/verl_engine_ab_$wl.log"
          grep -E "Error|error:" "$OUT/verl_engine_ab_$wl.log" | tail -3; done ;;
  oab)  for wl in $abw; do  # ours inside OpenRLHF's actor step (its Actor, PolicyLoss)
          timeout ${OAB_TIMEOUT:-200} python3 benchmarks/openrlhf_actor_ab.py --shape ${SHAPE:-1.7b} --workload $wl ${OAB_ARGS:-} \
            --work /tmp/vs_work --out "$OUT/openrlhf_actor_ab_$wl.json" > "$OUT/openrlhf_actor_ab_$wl.log" 2>&1
          echo "-- oab $wl rc=$? in $((SECONDS - t)) s"; grep -A3 '"ratios"\|"agreement"' "$OUT/openrlhf_actor_ab_$wl.log" | head -12
          grep -E "Error|error:" "$OUT/openrlhf_actor_ab_$wl.log" | tail -3; done ;;
  loss) timeout ${LOSS_TIMEOUT:-150} python3 benchmarks/bench_loss.py --hidden 2048 --sizes ${LOSS_SIZES:-8192,17920} \
          --chunks ${LOSS_CHUNKS:-512,1024,2048} \
          --skip ${LOSS_SKIP:-ours_recompute,ours_epilogue_beta,ours_epilogue_tokens_dapo} --out "$OUT/loss_vs_verl.json" \
          > "$OUT/loss_vs_verl.log" 2>&1  # ours against verl's fused log-prob kernels + GRPO math, 1.7B's head
        echo "-- loss rc=$? in $((SECONDS - t)) s"; grep -E "^N=|verl" "$OUT/loss_vs_verl.log" | tail -8 ;;
  attention) source "$(dirname "$0")/gpu_fa4_setup.sh" > "$OUT/setup_fa4.log" 2>&1; tail -2 "$OUT/setup_fa4.log"
        PYTHONPATH="${FA4_PYTHONPATH:-$PYTHONPATH}" timeout ${ATTN_TIMEOUT:-360} python3 benchmarks/bench_attention.py \
          --transformers --out "$OUT/attention.json" > "$OUT/attention.log" 2>&1
        echo "-- attention rc=$? in $((SECONDS - t)) s"; grep -vE "Warning|warn" "$OUT/attention.log" | tail -12 ;;
  path) timeout ${PATH_TIMEOUT:-560} python3 benchmarks/probe_rollout_path.py --shape ${SHAPE:-1.7b} --timeout ${PATH_EACH:-180} \
          --out "$OUT/rollout_path.json" > "$OUT/rollout_path.log" 2>&1
        echo "-- path rc=$? in $((SECONDS - t)) s"; grep -A8 '"over_ours"' "$OUT/rollout_path.log"; tail -3 "$OUT/rollout_path.log" ;;
  verl) tf=(); [ "${VERL_TF:-0}" = 1 ] && tf=(--transformers-dir /tmp/site_verl_tf)
        cmd=(python3 benchmarks/bench_vs_verl.py --sweep --shape ${SHAPE:-1.7b} --workload $w
             --only ${ONLY_VERL:-verl_mb80_ckptoff_bypass_fused_rmpad$fa4_tag} --run-timeout ${VERL_RUN_TIMEOUT:-540} "${tf[@]}" "${fa4_verl[@]}" ${VERL_ARGS:-}
             --work /tmp/vs_work --sweep-dir $d)
        if [ "${VERL_BACKGROUND:-0}" = 1 ]; then  # outlives this call: verl_wait in the next calls collects it
          rm -rf "$bg"; mkdir -p "$bg"; echo "$w" > "$bg/workload"; echo "$d" > "$bg/sweep"
          BG=$bg TO=${VERL_TIMEOUT:-400} setsid nohup bash -c 'echo $$ > "$BG/pid.new" && mv "$BG/pid.new" "$BG/pid"
            timeout "$TO" "$@" > "$BG/vs_verl.log" 2>&1; echo $? > "$BG/rc"' verl_bg "${cmd[@]}" --out "$bg/vs_verl_$w.json" \
            < /dev/null > /dev/null 2>&1 &
          for _ in $(seq 50); do [ -f "$bg/pid" ] && break; sleep 0.2; done
          echo "-- verl started in the background (pid $(cat "$bg/pid" 2>/dev/null), ${VERL_TIMEOUT:-400} s at most)"
          verl_wait
        else
          timeout ${VERL_TIMEOUT:-400} "${cmd[@]}" --out "$OUT/vs_verl_$w.json" > "$OUT/vs_verl_$w.log" 2>&1
          echo "-- verl rc=$? in $((SECONDS - t)) s"; tail -8 "$OUT/vs_verl_$w.log"; verl_logs
        fi ;;
  verl_wait) [ -f "$bg/sweep" ] && d=$(cat "$bg/sweep"); verl_wait ;;
  ours) s=${OURS_SETTING:-ours_mb80_ckptoff_awake}
        timeout ${OURS_TIMEOUT:-300} python3 benchmarks/bench_vs_trl.py --sweep --shape ${SHAPE:-1.7b} --workload $w --sides ours \
          --grid 80 --ckpts off --vllm-modes awake,sleep --only $s --work /tmp/vs_work --sweep-dir $d --out "$OUT/ours_$w.json" > "$OUT/ours_$w.log" 2>&1
        echo "-- ours rc=$? in $((SECONDS - t)) s"; tail -4 "$OUT/ours_$w.log"
        [ -f $d/$s.json ] && python3 benchmarks/bench_vs_verl.py --combine-dir $d --ours $d/$s.json --out "$OUT/vs_verl_$w.json" | tail -8 ;;
  esac
  tar czf "$OUT/$(basename $d).tgz" -C "$(dirname $d)" "$(basename $d)" 2>/dev/null
  [ "${KEEP_ALL:-0}" = 1 ] && keep_all
done
[ "${KEEP_ALL:-0}" = 1 ] || pack_logs
