"""verl's GRPO trainer on the work of bench_vs_trl.py, each setting a verl user would tune.

    python benchmarks/bench_vs_verl.py --side verl --micro-batch 80 --ckpt off --out verl.json     # one setting
    python benchmarks/bench_vs_verl.py --sweep --only verl_mb80_ckptoff_bypass --out vs_verl.json
    python benchmarks/bench_vs_verl.py --combine-dir DIR --ours ours.json --out vs_verl.json       # grid + ratios
    python benchmarks/bench_vs_verl.py --print-overrides --micro-batch 40 --ckpt on               # the command only

The work is bench_vs_trl.py's: a Qwen3-shaped policy (default 1.7B) with random bf16 weights and the
real Qwen3 tokenizer (the same folder, `shared_policy`), the same English prompts (written to a parquet
file in verl's RLHF format), 16 prompts x G = 5 completions of up to 128 tokens per optimizer step (one
PPO mini-batch per step, so one optimizer step per generation batch), β = 0 (no reference model, no KL),
temperature 1, AdamW at the same learning rate, vLLM colocated at the same memory share, and relate_fast's
Model 1 reward (benchmarks/verl_reward.py). verl runs `python3 -m verl.trainer.main_ppo` (its v1 trainer,
sync mode, FSDP, one GPU) in a process per setting; its metrics come from its own file logger.

verl's speed options, swept: dynamic batch size with a token budget per micro-batch
(`ppo_max_token_len_per_gpu`) of `--micro-batch` rows of the widest possible row, the budget our side gets
for the same name; gradient checkpointing on/off; `--verl-speeds` none, `bypass` (old log-probs taken from
vLLM instead of a second forward: `algorithm.rollout_correction.bypass_mode`), `liger` (`model.use_liger`)
and `bypass_liger`, each with `_fused` (`model.use_fused_kernels`, verl's own fused log-prob kernels,
`--fused-backend` torch or triton; with remove-padding only: padded, verl 0.9.1's fused path fails); vLLM asleep through the update (`rollout.free_cache_engine`) or awake;
`--remove-paddings` off, on (`model.use_remove_padding`: the batch packed into one row of real tokens).
verl's remove-padding path is written for flash-attn's varlen kernels, and the lent GPU machine has no
flash-attn wheel (PyPI has only its sdist); with padding removed, verl here runs transformers'
`flex_attention`, which finds the packed sequences from verl's per-sequence position ids and masks each to
itself (packed logits equal separate ones: tests/test_bench_vs_verl.py, SDPA on the CPU, flex_attention
with the GPU tests). Padded, verl
runs SDPA. `--attention flash_attention_4 --attention-dir "$FA4_SITE_PATH"` runs verl on flash-attn 4's varlen
kernels instead (pure-Python wheels: scripts/gpu_fa4_wheels.sh; benchmarks/bench_attention.py checks them on the GPU
first), with benchmarks/fa4_compat.py applied in each of verl's processes (transformers hands FA4 tensor max-seqlens), and
verl's vLLM servers started without FA4's site (benchmarks/verl_rollout_env.py: vLLM pins its own cutlass-dsl).
The attention used is in every result's settings.

Measured per step after `--warmup` steps, from verl's metrics: `timing_s/step` (step), `timing_s/gen`
(generation; the rest is "update", as on the other sides: rewards, old log-probs, advantages, the update and
the weight sync), `perf/total_num_tokens` (prompt + response tokens) over the step, verl's peak memory of
the actor process (`actor/perf/max_memory_allocated_gb`; vLLM runs in another process there, so its pool is not
in it — unlike the other sides, where the allocator peak holds vLLM's pool).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.bench_vs_trl import G, longest_prompt_tokens, prompt_rows, shared_policy  # noqa: E402
from benchmarks.common import pick_settings, provenance, run_setting, shared_workdir, write_json  # noqa: E402

SPEEDS = ("none", "bypass", "liger", "bypass_liger", "fused", "bypass_fused", "bypass_liger_fused")
# --verl-loss: verl's policy loss mode for each; relate_kernels is ours on log-probs from our kernels under verl's
# fused forward (RELATE_FAST_VERL_LOGPROBS in verl's processes: relate_fast.integrations.verl_plugin), checked
# (verl's vanilla loss beside it on each micro-batch, benchmarks/verl_check.py: no extra pass, the loss math on the
# same log-probs), so its run also says whether the two losses agree
ATTENTION_TAGS = {"flash_attention_4": "fa4", "flash_attention_2": "fa2", "flex_attention": "flex"}  # setting names
LOSS_MODES = {"vanilla": "vanilla", "relate": "relate", "relate_checked": "relate_checked",
              "relate_kernels": "relate_checked"}


def attention_of(remove_padding: str, attention: str = "auto") -> str:
    """The attention verl runs here: the one asked for, else flex_attention on the packed row (no flash-attn 2 on
    the lent machine) and SDPA on the padded batch."""
    if attention != "auto":
        return attention
    return "flex_attention" if remove_padding == "on" else "sdpa"


def write_dataset(folder: Path, path: Path) -> Path:
    """The prompts as verl's RLHF parquet: a chat `prompt`, `data_source`, `reward_model` and `extra_info`
    (the prompt's index and the tokenizer folder, for verl_reward.compute_score)."""
    import pandas as pd

    if path.is_file():
        return path
    rows = prompt_rows()
    frame = pd.DataFrame({
        "data_source": ["relate_fast_ads"] * len(rows),
        "prompt": [[{"role": "user", "content": r.prompt}] for r in rows],
        "ability": ["ads"] * len(rows),
        "reward_model": [{"style": "rule", "ground_truth": ""} for _ in rows],
        "extra_info": [{"index": i, "tokenizer": str(folder)} for i in range(len(rows))],
    })
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    frame.to_parquet(tmp)
    tmp.replace(path)
    return path


def verl_overrides(args, folder: Path, data: Path, run_dir: Path, width: int, prompt_len: int) -> list:
    """verl 0.9.1's Hydra overrides for one setting (keys of its `ppo_trainer.yaml`)."""
    on = lambda b: "True" if b else "False"  # noqa: E731
    speed = args.verl_speed
    budget = args.micro_batch * width
    o = [
        "algorithm.adv_estimator=grpo", "algorithm.use_kl_in_reward=False",
        f"algorithm.rollout_correction.bypass_mode={on('bypass' in speed)}",
        f"data.train_files={data}", f"data.val_files={data}", f"data.train_batch_size={args.prompts}",
        f"data.max_prompt_length={prompt_len}", f"data.max_response_length={args.max_new_tokens}",
        "data.filter_overlong_prompts=False", "data.truncation=error",
        "+data.apply_chat_template_kwargs.enable_thinking=False",
        f"actor_rollout_ref.model.path={folder}",
        f"actor_rollout_ref.model.use_remove_padding={on(args.remove_padding == 'on')}",
        f"actor_rollout_ref.model.enable_gradient_checkpointing={on(args.ckpt == 'on')}",
        f"actor_rollout_ref.model.use_liger={on('liger' in speed)}",
        f"actor_rollout_ref.actor.optim.lr={args.lr}", f"actor_rollout_ref.actor.ppo_mini_batch_size={args.prompts}",
        "actor_rollout_ref.actor.ppo_epochs=1", "actor_rollout_ref.actor.use_kl_loss=False",
        "actor_rollout_ref.actor.entropy_coeff=0",
        "actor_rollout_ref.rollout.name=vllm", f"actor_rollout_ref.rollout.n={G}",
        "actor_rollout_ref.rollout.temperature=1.0", "actor_rollout_ref.rollout.tensor_model_parallel_size=1",
        f"actor_rollout_ref.rollout.gpu_memory_utilization={args.vllm_memory if args.vllm_mode == 'sleep' else args.awake_memory}",
        f"actor_rollout_ref.rollout.free_cache_engine={on(args.vllm_mode == 'sleep')}",
        f"reward.custom_reward_function.path={ROOT / 'benchmarks' / 'verl_reward.py'}",
        "reward.custom_reward_function.name=compute_score", f"reward.num_workers={args.reward_workers}",
        "trainer.logger=[console,file]", "trainer.n_gpus_per_node=1", "trainer.nnodes=1",
        f"trainer.total_training_steps={args.steps}", "trainer.val_before_train=False", "trainer.test_freq=-1",
        "trainer.save_freq=-1", "trainer.resume_mode=disable", "trainer.project_name=relate_fast_bench",
        f"trainer.experiment_name={run_dir.name}", f"trainer.default_local_dir={run_dir / 'ckpt'}",
    ]
    if args.verl_loss != "vanilla":  # ours, registered in verl's processes by run_verl's VERL_USE_EXTERNAL_MODULES
        o.append(f"actor_rollout_ref.actor.policy_loss.loss_mode={LOSS_MODES[args.verl_loss]}")
    # no flash-attn 2 there: flex_attention on the packed row, SDPA on the padded batch, unless --attention says
    o.append(f"+actor_rollout_ref.model.override_config.attn_implementation={attention_of(args.remove_padding, args.attention)}")
    if "fused" in speed:
        o += ["actor_rollout_ref.model.use_fused_kernels=True",
              f"actor_rollout_ref.model.fused_kernel_options.impl_backend={args.fused_backend}"]
    if args.dynamic_bsz:
        o += ["actor_rollout_ref.actor.use_dynamic_bsz=True", f"actor_rollout_ref.actor.ppo_max_token_len_per_gpu={budget}"]
    else:
        o += ["actor_rollout_ref.actor.use_dynamic_bsz=False",
              f"actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu={args.micro_batch}",
              f"actor_rollout_ref.rollout.log_prob_micro_batch_size_per_gpu={args.micro_batch}"]
    return o + list(args.extra)


def hide_packages(pythonpath: str, names: list, overlay: Path) -> str:
    """PYTHONPATH with `names` (and their dist-info) out of sight: each folder that holds one is replaced by
    an overlay of links to everything else in it. verl 0.9.1 patches TRL's value-head model whenever TRL is
    importable, and TRL 1.16 (installed beside it for bench_vs_trl.py) no longer has that class."""
    out = []
    for i, entry in enumerate(p for p in pythonpath.split(os.pathsep) if p):
        folder = Path(entry)
        hidden = lambda n: any(n == x or (n.startswith(x + "-") and n.endswith(".dist-info")) for x in names)  # noqa: E731
        if not folder.is_dir() or not any(hidden(c.name) for c in folder.iterdir()):
            out.append(entry)
            continue
        layer = overlay / str(i)
        layer.mkdir(parents=True, exist_ok=True)
        for child in folder.iterdir():
            link = layer / child.name
            if not hidden(child.name) and not link.exists():
                link.symlink_to(child.resolve())
        out.append(str(layer))
    return os.pathsep.join(out)


def _stop_group(proc, env) -> None:
    """The driver's whole process group, then Ray's local cluster, so that the next setting starts on a clean GPU."""
    import signal

    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    subprocess.run([sys.executable, "-m", "ray.scripts.scripts", "stop", "--force"], env=env, capture_output=True)


def _run_with_timeout(cmd, cwd, env, timeout, metrics_path: Path | None = None, steps: int = 0, grace: float = 30.0):
    """verl in a session of its own, its output in `cwd/verl.log`. Returns (rc, log): rc is verl's exit code,
    "timeout" (stopped at `timeout` seconds), or "stopped_after_steps": verl had logged `steps` rows to
    `metrics_path` and not exited `grace` seconds later (seen on the H200, 2026-12-03: its 3 steps done, the
    driver still up 4 minutes later), so its work is counted and it is stopped."""
    log_path = Path(cwd) / "verl.log"
    start = time.time()
    with open(log_path, "w") as log:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        done_at = None
        while proc.poll() is None:
            time.sleep(1.0)
            if done_at is None and steps and len(_metric_rows(metrics_path)) >= steps:
                done_at = time.time()
            if done_at is not None and time.time() - done_at > grace:
                rc = "stopped_after_steps"
                break
            if time.time() - start > timeout:
                rc = "timeout"
                break
        else:
            rc = None
    if rc is not None:
        _stop_group(proc, env)
    return (proc.returncode if rc is None else rc), log_path.read_text(errors="replace")


def _metric_rows(path: Path) -> list:
    """verl's file logger: one {"step": n, "data": {...}} line per step."""
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line)["data"])
        except (json.JSONDecodeError, KeyError):  # a line verl is still writing
            break
    return rows


def run_verl(args, work: Path) -> dict:
    folder = shared_policy(work, args.shape, args.workload)
    data = write_dataset(folder, work / "verl_prompts_en.parquet")
    width = longest_prompt_tokens(folder) + args.max_new_tokens
    prompt_len = width - args.max_new_tokens
    run_dir = work / f"verl_{setting_name(args)}"
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics_path = run_dir / "metrics.jsonl"
    metrics_path.unlink(missing_ok=True)
    env = dict(os.environ, VERL_FILE_LOGGER_PATH=str(metrics_path))
    modules = (["relate_fast.integrations.verl_plugin"] if args.verl_loss != "vanilla" else []) \
        + (["benchmarks.verl_check"] if checked(args) else []) \
        + (["benchmarks.fa4_compat_apply"] if args.attention == "flash_attention_4" else []) \
        + (["benchmarks.verl_rollout_env"] if args.attention_dir else [])
    if modules:  # imported by `import verl` in the driver and every Ray worker
        env["VERL_USE_EXTERNAL_MODULES"] = ",".join(modules)
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if args.verl_loss == "relate_kernels":  # read by the plugin in the driver and every Ray worker (one node)
        env["RELATE_FAST_VERL_LOGPROBS"] = "1"
    if args.hide:
        env["PYTHONPATH"] = hide_packages(env.get("PYTHONPATH", ""), args.hide.split(","), work / "pythonpath_overlay")
    if args.transformers_dir:  # verl's transformers pin first, for this process and its Ray workers
        env["PYTHONPATH"] = os.pathsep.join([args.transformers_dir, env.get("PYTHONPATH", "")])
    if args.attention_dir:  # e.g. flash-attn 4's site (scripts/gpu_fa4_setup.sh), for verl's processes only
        # but not for its vLLM servers: their cutlass-dsl stays vLLM's own (benchmarks/verl_rollout_env.py)
        env["RELATE_FAST_ROLLOUT_PYTHONPATH"] = env.get("PYTHONPATH", "")
        env["PYTHONPATH"] = os.pathsep.join([args.attention_dir, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "verl.trainer.main_ppo",
           *verl_overrides(args, folder, data, run_dir, width, prompt_len)]
    t = time.time()
    rc, log = _run_with_timeout(cmd, run_dir, env, args.verl_timeout, metrics_path, args.steps)
    rows = _metric_rows(metrics_path)
    complete = rc in (0, "stopped_after_steps") and len(rows) >= args.steps
    if not complete and not (rc == "timeout" and len(rows) > args.warmup):
        done = ", ".join(f"step {i + 1} {r.get('timing_s/step', 0):.1f} s" for i, r in enumerate(rows))
        raise SystemExit(f"verl {'timed out' if rc == 'timeout' else f'exited {rc}'} after {len(rows)} of {args.steps} "
                         f"steps ({time.time() - t:.0f} s{'; ' + done if done else ''}); the end of its log:\n{log[-6000:]}")
    # stopped at the limit after some steps past the warm-up: those steps count, and the result says so
    return dict(summarise(rows, args, width, rc), steps_done=len(rows), complete=complete,
                command=" ".join(cmd[1:4]) + " ...", run_dir=str(run_dir))


def summarise(rows: list, args, width: int, exit_status) -> dict:
    """verl's metrics rows (one per step) as the bench reports a setting: medians over the steps after --warmup."""
    steady = rows[args.warmup:] or rows
    med = lambda k: statistics.median(r[k] for r in steady if k in r)  # noqa: E731
    step, gen = med("timing_s/step"), med("timing_s/gen")
    stages = sorted({k for r in steady for k in r if k.startswith("timing_s/")})
    return {"step_s": step, "generation_s": gen, "update_s": step - gen,
            "stages_s": {k[len("timing_s/"):]: med(k) for k in stages},
            "tokens_per_second": statistics.median(r["perf/total_num_tokens"] / r["timing_s/step"] for r in steady),
            "response_tokens_mean": statistics.mean(r["response_length/mean"] for r in steady),
            "response_tokens_per_step": [round(r["response_length/mean"], 1) for r in rows],
            # every step's stages, warm-up included: whether verl had settled (it compiles for new packed lengths)
            "per_step_s": [{k[len("timing_s/"):]: round(v, 4) for k, v in r.items() if k.startswith("timing_s/")} for r in rows],
            # the actor process's peaks (verl 0.9.1 logs them under actor/; vLLM's pool is in its own process)
            "peak_mem_gib": max(r.get("actor/perf/max_memory_allocated_gb", 0.0) for r in steady),
            "peak_reserved_gib": max(r.get("actor/perf/max_memory_reserved_gb", 0.0) for r in steady),
            "attention": attention_of(args.remove_padding, args.attention), "mfu_verl": med("perf/mfu/actor")
            if any("perf/mfu/actor" in r for r in steady) else None,
            "loss_check": loss_check(rows) if checked(args) else None,
            "verl_exit": exit_status,
            "reward_mean": statistics.mean(r["critic/score/mean"] for r in steady if "critic/score/mean" in r)
            if any("critic/score/mean" in r for r in steady) else None,
            "micro_batch_tokens": args.micro_batch * width, "world_size": 1, "data_parallel": "FSDP (verl)"}


def checked(args) -> bool:
    """Whether the run's loss logs verl's vanilla loss beside ours (benchmarks/verl_check.py)."""
    return LOSS_MODES[args.verl_loss] == "relate_checked"


def loss_check(rows: list) -> dict:
    """Ours against verl's vanilla loss per step (benchmarks/verl_check.py). Where every advantage of every step
    is 0 (a group's rewards all equal: the fixed workload's random-weight text scores -2.0 everywhere, seen on the
    H200 2026-12-03) both losses are 0 whatever the code, so the check says it compared nothing; the probe (the same
    micro-batches with advantages drawn per sequence, verl_check.probe) compares them there too."""
    keys = ("actor/relate_minus_vanilla", "actor/vanilla_pg_loss", "actor/pg_loss", "actor/probe_relate_minus_vanilla",
            "actor/probe_vanilla_pg_loss", "actor/probe_grad_rel_diff")
    out = {k: [r[k] for r in rows if k in r] for k in keys}
    out["vacuous"] = all(r.get("critic/advantages/max", 0.0) == 0.0 == r.get("critic/advantages/min", 0.0) for r in rows)
    return out


def fused_on_padded(speed: str, remove_padding: str) -> bool:
    """verl 0.9.1's fused kernels run only on the packed batch: padded, its first update_actor fails with an
    IndexError in FSDPEngine.prepare_model_outputs (it reads `log_probs.shape[1]` of the fused kernels' 1-D output;
    seen on the H200, 2026-12-03)."""
    return "fused" in speed and remove_padding == "off"


def refuse_unrunnable_setting(args) -> None:
    """Settings verl cannot run say so before its ~5 minutes of start-up, not after (fused_on_padded, relate_kernels)."""
    if args.verl_loss == "relate_kernels" and not ("fused" in args.verl_speed and args.fused_backend == "triton"):
        raise SystemExit(f"--verl-loss relate_kernels replaces the kernel of verl's fused forward with its Triton backend: "
                         f"it needs a --verl-speed with _fused and --fused-backend triton, not {args.verl_speed} / "
                         f"{args.fused_backend}")
    if fused_on_padded(args.verl_speed, args.remove_padding):
        raise SystemExit(f"--verl-speed {args.verl_speed} needs --remove-padding on: verl 0.9.1's fused kernels fail on the "
                         f"padded batch (FSDPEngine.prepare_model_outputs, IndexError); the sweep leaves that pair out")


def setting_name(args) -> str:
    return (f"verl_mb{args.micro_batch}_ckpt{args.ckpt}" + ("" if args.verl_speed == "none" else f"_{args.verl_speed}")
            + ("" if args.verl_loss == "vanilla" else f"_{args.verl_loss}")
            + ("" if args.vllm_mode == "sleep" else f"_{args.vllm_mode}") + ("_rmpad" if args.remove_padding == "on" else "")
            + ("" if args.attention == "auto" else f"_{ATTENTION_TAGS.get(args.attention, args.attention)}"))


def sweep(args) -> dict:
    """verl over --grid x --ckpts x --verl-speeds x --vllm-modes, a process per setting; a setting that fails
    is kept with the end of its log."""
    out_dir = Path(args.sweep_dir or Path(args.out).with_suffix("")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = []
    for mb in [int(x) for x in args.grid.split(",")]:
        for ckpt in args.ckpts.split(","):
            for speed in args.verl_speeds.split(","):
                for mode in args.vllm_modes.split(","):
                    for loss in args.verl_losses.split(","):
                        for rmpad in args.remove_paddings.split(","):
                            if fused_on_padded(speed, rmpad):  # verl 0.9.1 fails there
                                continue
                            if loss == "relate_kernels" and "fused" not in speed:  # replaces a fused kernel
                                continue
                            one = argparse.Namespace(**vars(args))
                            one.micro_batch, one.ckpt, one.verl_speed, one.vllm_mode = mb, ckpt, speed, mode
                            one.verl_loss, one.remove_padding = loss, rmpad
                            runs.append(one)
    runs = pick_settings(runs, args.only, setting_name,
                         "--grid, --ckpts, --verl-speeds, --vllm-modes, --verl-losses, --remove-paddings")
    for one in runs:
        name = setting_name(one)
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side", "verl", "--out", str(out_dir / f"{name}.json"),
               "--verl-timeout", str(max(args.run_timeout - 30, 60)), *_one_setting_args(one)]
        run_setting(out_dir, name, cmd, side="verl", settings=_settings(one), timeout=args.run_timeout,
                    rerun=args.rerun, tail=3000)
    return combine_dir(out_dir, args.ours)


def _one_setting_args(a) -> list:
    out = ["--shape", a.shape, "--workload", a.workload, "--steps", str(a.steps), "--warmup", str(a.warmup),
           "--prompts", str(a.prompts), "--max-new-tokens", str(a.max_new_tokens), "--lr", str(a.lr),
           "--micro-batch", str(a.micro_batch), "--ckpt", a.ckpt, "--verl-speed", a.verl_speed,
           "--verl-loss", a.verl_loss, "--vllm-mode", a.vllm_mode, "--vllm-memory", str(a.vllm_memory), "--awake-memory", str(a.awake_memory),
           "--remove-padding", a.remove_padding, "--fused-backend", a.fused_backend, "--reward-workers", str(a.reward_workers), "--hide", a.hide,
           "--work", str(shared_workdir("vs_trl", a.work))]
    if a.transformers_dir:
        out += ["--transformers-dir", a.transformers_dir]
    if a.attention != "auto":
        out += ["--attention", a.attention] + (["--attention-dir", a.attention_dir] if a.attention_dir else [])
    if not a.dynamic_bsz:
        out.append("--no-dynamic-bsz")
    return out + [f"--extra={x}" for x in a.extra]


def _settings(a) -> dict:
    return dict({k: getattr(a, k) for k in ("shape", "workload", "steps", "warmup", "prompts", "micro_batch", "ckpt",
                                            "max_new_tokens", "vllm_memory", "awake_memory", "vllm_mode", "verl_speed",
                                            "remove_padding", "dynamic_bsz", "lr", "transformers_dir", "hide", "verl_loss",
                                            "fused_backend")},
                group_size=G, attention=attention_of(a.remove_padding, a.attention), extra=list(a.extra))


def _stage_ratio(r: dict, v: dict, stage: str):
    """One of verl's timers (its stages_s medians) of run r over run v; None where either lacks it."""
    a, b = r.get("stages_s", {}).get(stage), v.get("stages_s", {}).get(stage)
    return a / b if a and b else None


def combine_dir(out_dir: Path, ours_path=None) -> dict:
    """verl's grid from a sweep folder, its best, and against ours' result (a bench_vs_trl.py JSON of one
    setting of ours, or a sweep's combined JSON whose best is ours') the best-against-best ratios."""
    grid = []
    info = None
    for f in sorted(Path(out_dir).glob("verl_mb*_ckpt*.json")):
        d = json.loads(f.read_text())
        s = d["settings"]
        grid.append(dict(d["verl"], setting=f.stem, micro_batch=s["micro_batch"], ckpt=s["ckpt"], speed=s["verl_speed"],
                         vllm_mode=s["vllm_mode"], remove_padding=s["remove_padding"], loss=s.get("verl_loss", "vanilla")))
        info = d.get("info", info)
    # verl at its best is verl with its own loss; the runs with ours inside verl are the integration's measurement
    own = [r for r in grid if "error" not in r and r["loss"] == "vanilla"]
    best = max(own, key=lambda r: r["tokens_per_second"], default=None)
    result = {"grid": {"verl": grid}, "best": {"verl": best}, "info": {"verl": info}}
    same = lambda a, b: all(a.get(k) == b.get(k) for k in ("micro_batch", "ckpt", "speed", "vllm_mode",  # noqa: E731
                                                            "remove_padding", "attention"))
    pairs = [(r, v) for r in grid if "error" not in r and r["loss"] != "vanilla" for v in own if same(r, v)]
    if pairs:  # our loss inside verl against verl's own, at the same settings
        result["ours_inside_verl"] = [{"setting": r["setting"], "against": v["setting"],
                                       "update_s_ratio": r["update_s"] / v["update_s"],
                                       "update_actor_ratio": _stage_ratio(r, v, "update_actor"),
                                       "peak_mem_ratio": r["peak_mem_gib"] / v["peak_mem_gib"] if v["peak_mem_gib"] else None,
                                       "loss_check": r.get("loss_check")} for r, v in pairs]
    if ours_path:
        o = json.loads(Path(ours_path).read_text())
        ours = o["best"]["ours"] if "best" in o else dict(o["ours"], **{k: o["settings"][k] for k in ("micro_batch", "ckpt", "vllm_mode")})
        result["best"]["ours"] = ours
        result["ours_source"] = str(ours_path)
        if best:
            result["ratios"] = {"end_to_end_tokens_per_second": ours["tokens_per_second"] / best["tokens_per_second"],
                                "step_time_speedup": best["step_s"] / ours["step_s"],
                                "update_speedup": best["update_s"] / ours["update_s"],
                                "generation_speedup": best["generation_s"] / ours["generation_s"]}
            fastest = min((r for r in grid if "error" not in r), key=lambda r: r["update_s"])
            result["ratios"]["best_update_speedup"] = fastest["update_s"] / ours["update_s"]
    return result


def print_grid(result: dict):
    print("\nsetting                              tokens/s  step s  generation s  update s  peak GiB  response tokens")
    for r in result["grid"]["verl"]:
        if "error" in r:
            print(f"{r['setting']:36} {r['error']}")
        else:
            print(f"{r['setting']:36} {r['tokens_per_second']:8.0f}  {r['step_s']:6.2f}  {r['generation_s']:12.2f}  "
                  f"{r['update_s']:8.2f}  {r['peak_mem_gib']:8.1f}  {r['response_tokens_mean']:6.1f}")
    if result.get("ratios"):
        print("ours against verl's best: " + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items()))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", choices=("verl",), help="run one setting")
    ap.add_argument("--sweep", action="store_true", help="verl over the grid, a process per setting")
    ap.add_argument("--combine-dir", default=None, help="the grid of a sweep folder's JSONs (no run)")
    ap.add_argument("--print-overrides", action="store_true", help="print verl's command for one setting and stop")
    ap.add_argument("--ours", default=None, help="ours' JSON (bench_vs_trl.py) for the ratios")
    ap.add_argument("--shape", default="1.7b")
    ap.add_argument("--workload", default="fixed", choices=("fixed", "realistic"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per optimizer step (x G = 5)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None, help="default: 1e-6 fixed workload, 1e-12 realistic (bench_vs_trl.py)")
    ap.add_argument("--micro-batch", type=int, default=80,
                    help="token budget per micro-batch, in rows of the widest possible row (dynamic batch size)")
    ap.add_argument("--no-dynamic-bsz", dest="dynamic_bsz", action="store_false",
                    help="fixed micro-batches of --micro-batch sequences instead of a token budget")
    ap.add_argument("--ckpt", default="off", choices=("on", "off"))
    ap.add_argument("--verl-speed", default="none", choices=SPEEDS)
    ap.add_argument("--verl-loss", default="vanilla", choices=tuple(LOSS_MODES),
                    help="verl's policy loss: its own, ours (relate_fast.integrations.verl), ours with verl's computed "
                         "beside it on the same micro-batch and their difference logged (benchmarks/verl_check.py), or "
                         "ours on log-probs from our kernels (relate_kernels: with a _fused speed, triton backend)")
    ap.add_argument("--remove-padding", default="off", choices=("on", "off"),
                    help="verl's use_remove_padding (here with flex_attention: the lent GPU machine has no flash-attn)")
    ap.add_argument("--fused-backend", default="triton", choices=("torch", "triton"),
                    help="verl's fused_kernel_options.impl_backend, for the speeds with _fused")
    ap.add_argument("--vllm-mode", default="sleep", choices=("sleep", "awake"))
    ap.add_argument("--vllm-memory", type=float, default=0.3)
    ap.add_argument("--awake-memory", type=float, default=0.1)
    ap.add_argument("--reward-workers", type=int, default=2, help="verl's reward.num_workers (Ray actors)")
    ap.add_argument("--transformers-dir", default=None, help="a folder put first on PYTHONPATH for verl (its transformers pin)")
    ap.add_argument("--attention", default="auto",
                    help="verl's attn_implementation (auto: flex_attention packed, sdpa padded; e.g. flash_attention_4)")
    ap.add_argument("--attention-dir", default=None,
                    help="folders (os.pathsep-separated) put first on PYTHONPATH for verl's processes, holding "
                         "--attention's package (flash-attn 4: $FA4_SITE_PATH from scripts/gpu_fa4_setup.sh); "
                         "its vLLM servers keep the path without them (benchmarks/verl_rollout_env.py)")
    ap.add_argument("--verl-timeout", type=int, default=None,
                    help="one setting: seconds before verl and its Ray cluster are stopped (the steps done are reported)")
    ap.add_argument("--hide", default="trl", help="packages kept out of verl's sight (comma-separated; '' for none)")
    ap.add_argument("--extra", action="append", default=[], help="one more verl override (repeatable)")
    ap.add_argument("--grid", default="20,40,80")
    ap.add_argument("--ckpts", default="off,on")
    ap.add_argument("--verl-speeds", default="none,bypass,bypass_fused")
    ap.add_argument("--vllm-modes", default="sleep")
    ap.add_argument("--remove-paddings", default="off,on", help="--sweep: verl's use_remove_padding settings")
    ap.add_argument("--verl-losses", default="vanilla", help="--sweep: verl's policy losses (vanilla, relate, relate_checked, relate_kernels)")
    ap.add_argument("--only", default=None)
    ap.add_argument("--sweep-dir", default=None)
    ap.add_argument("--rerun", action="store_true")
    ap.add_argument("--run-timeout", type=int, default=420)
    ap.add_argument("--work", default=None, help="folder for the policy and the runs (bench_vs_trl.py's by default)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "vs_verl.json"))
    args = ap.parse_args(argv)
    if args.lr is None:
        args.lr = 1e-12 if args.workload == "realistic" else 1e-6
    if args.print_overrides:
        work = shared_workdir("vs_trl", args.work)
        folder = work / f"qwen3_{args.shape}_{args.workload}"
        print("\n".join(verl_overrides(args, folder, work / "verl_prompts_en.parquet", work / f"verl_{setting_name(args)}",
                                       width=512 + args.max_new_tokens, prompt_len=512)))
        return None
    if args.sweep or args.combine_dir:
        result = sweep(args) if args.sweep else combine_dir(Path(args.combine_dir), args.ours)
        print_grid(result)
        write_json(args.out, result)
        return result
    if not args.side:
        ap.error("--side verl, --sweep, --combine-dir DIR or --print-overrides")
    refuse_unrunnable_setting(args)
    res = run_verl(args, shared_workdir("vs_trl", args.work))
    result = {"verl": res, "settings": _settings(args), "info": provenance()}
    print(json.dumps(result, indent=2))
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
