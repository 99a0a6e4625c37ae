"""Our trainer against TRL's GRPOTrainer on the same run, each side at its own best settings.

    python benchmarks/bench_vs_trl.py --sweep --out vs_trl.json                 # both sides, the whole grid
    python benchmarks/bench_vs_trl.py --sweep --workload realistic --out vs_trl_realistic.json
    python benchmarks/bench_vs_trl.py --side trl --micro-batch 40 --ckpt on --out trl.json   # one setting
    python benchmarks/bench_vs_trl.py --combine-dir DIR --out vs_trl.json       # the grid of earlier runs
    python benchmarks/bench_vs_trl.py --side ours --shape tiny --engine hf --steps 2 --warmup 0   # CPU smoke

Both sides: a Qwen3-shaped policy (default 1.7B) with random bf16 weights saved once and the real
Qwen3 tokenizer; per GPU `--prompts` prompts x G = 5 completions of up to `--max-new-tokens` tokens
per optimizer step (one optimizer step per generation batch), β = 0, loss grpo, temperature 1,
AdamW (`--lr`, see below), DeepSpeed ZeRO-2 (TRL through the HF Trainer's DeepSpeed integration; plain DDP
with --no-trl-deepspeed), vLLM colocated with the same memory share and sleep mode on, and the same
reward: relate_fast's Model 1 preset (length in Qwen3 tokens + format) computed by the same
`RewardFunction` on the same token ids. TRL's vLLM importance-sampling correction is off (ours has
none, and it would cost TRL an extra forward per batch).

Workloads: `fixed`, the random policy never stops, so every response is `--max-new-tokens` long;
`realistic`, the policy's weights are made to stop (benchmarks.common.make_stop): responses end with
EOS at varied lengths, about 37 tokens on average (the dataset's reference ads are 27-47 Qwen3
tokens with EOS), up to `--max-new-tokens`. Training must not move those lengths, or the two sides
(which train differently) would generate different work: Adam's first steps move every weight by about
the learning rate whatever the gradient, and on this hand-made policy one step at 1e-6 took the mean
length from 38 to 14 tokens (benchmarks/probe_stop_drift.py; a sweep at 1e-6 measured 84 tokens on our
side and 58 on TRL's). So `--lr` defaults to 1e-6 on the fixed workload and to 1e-12 on the realistic
one: the same update work, a policy that stays put.

The settings a user tunes, swept with `--sweep` for each side (a fresh process per setting, one vLLM
engine per process): `--micro-batch` {8, 20, 40, 80} sequences (TRL's per_device_train_batch_size;
ours gets a token budget of that many rows of the widest possible row, prompt + max new tokens, in
the layout `--layout`, packed by default on a GPU) x gradient checkpointing {on, off}, and for TRL its
own speed options `--trl-speeds` {none, liger (liger-kernel's RMSNorm/SwiGLU/RoPE through the HF
Trainer's `use_liger_kernel`), compile (the Trainer's `torch_compile`)}, and on both sides vLLM's mode
`--vllm-modes` {sleep (the engine's memory freed during the update, `--vllm-memory` of the GPU while it
samples), awake (no sleep: the engine keeps a smaller share, `--awake-memory`, through the update and skips
the wake-up, the re-allocation and the weights' reload)}. `--only` runs the named settings of that grid
(e.g. `ours_mb80_ckptoff,trl_mb40_ckptoff_liger_awake`). A setting that fails (out of memory, or an
option that does not run) is recorded with its error. The result holds the whole grid, each side's best
(highest tokens/s) and the best-against-best ratios.

Measured per optimizer step after `--warmup` steps: wall time, the generation part, the update part
(everything else: rewards, forward, loss, backward, optimizer step, weight push), tokens per second
(prompt + completion tokens of all ranks over the step time) and peak GPU memory per GPU
(PyTorch's allocator peak; max over ranks). Every JSON is stamped with provenance.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.common import (MEAN_RESPONSE_TOKENS, pick_settings, provenance, qwen3_folder, run_setting,  # noqa: E402
                               shared_workdir, write_json)

G = 5


def shared_policy(work: Path, shape: str, workload: str) -> Path:
    """The policy folder (random weights written once by rank 0; the other ranks wait for it)."""
    folder = work / f"qwen3_{shape}_{workload}"
    if int(os.environ.get("RANK", "0")) == 0 and not (folder / ".ready").is_file():
        qwen3_folder(folder, shape, weights=True,
                     mean_response_tokens=MEAN_RESPONSE_TOKENS if workload == "realistic" else None)
        (folder / ".ready").touch()
    while not (folder / ".ready").is_file():
        time.sleep(0.5)
    return folder


def prompt_rows():
    from relate_fast.data import sample_ads

    return sample_ads("train", langs=["en"])


def longest_prompt_tokens(folder: Path) -> int:
    """The widest prompt of the dataset under the policy's chat template (ours' micro-batch budget)."""
    from transformers import AutoTokenizer

    from relate_fast.models import prompt_ids

    tok = AutoTokenizer.from_pretrained(str(folder))
    return max(len(prompt_ids(tok, r.prompt)) for r in prompt_rows())


class SameReward:
    """TRL's reward function: relate_fast's Model 1 preset (what our side computes with `--reward.preset
    model1`), by the same RewardFunction on the same token ids; the dataset's `row` column names each
    prompt's AdPrompt."""

    __name__ = "relate_fast_model1"

    def __init__(self, tokenizer):
        from relate_fast.rewards import RewardConfig, RewardFunction

        self.rows = prompt_rows()
        self.fn = RewardFunction.from_config(RewardConfig(preset="model1", encoder="hashed", monitor=False),
                                             tokenizer=tokenizer)

    def __call__(self, prompts, completions, completion_ids, row, **kw):
        from relate_fast.rewards import RolloutBatch

        texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
        batch = RolloutBatch([self.rows[i] for i in row], texts, [list(c) for c in completion_ids], group_size=1)
        return [float(x) for x in self.fn(batch).sentence]


def _peak_gib_max_over_ranks() -> float:
    import torch

    if not torch.cuda.is_available():
        return 0.0
    t = torch.tensor([torch.cuda.max_memory_allocated() / 2**30], device="cuda")
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t)


def _vllm_share(args) -> float:
    """vLLM's share of the GPU: the sampling share when it sleeps through the update, the smaller
    always-held share when it stays awake."""
    return args.vllm_memory if args.vllm_mode == "sleep" else args.awake_memory


def run_ours(folder, args, work) -> dict:
    from relate_fast.config import load_config
    from relate_fast.trainer import Trainer

    width = longest_prompt_tokens(folder) + args.max_new_tokens
    over = ["--run.out_dir", str(work), "--run.name", "ours", "--run.progress", "false", "--eval.enabled", "false",
            "--run.checkpoint_every", "0", "--run.save_final", "false", "--run.resume", "false", "--model.path", str(folder),
            "--model.dtype", "bfloat16", "--model.gradient_checkpointing", str(args.ckpt not in ("off", "auto")).lower(),
            "--model.checkpoint_layers", args.ckpt[1:] if args.ckpt.startswith("l") else "-1",
            "--model.auto_checkpointing", str(args.ckpt == "auto").lower(),
            "--model.fused_layers", args.fused, "--sft.steps", "0",
            "--rollout.engine", args.engine, "--rollout.group_size", str(G), "--rollout.prompts_per_step",
            str(args.prompts), "--rollout.max_new_tokens", str(args.max_new_tokens), "--rollout.temperature", "1.0",
            "--rollout.vllm_gpu_memory_utilization", str(_vllm_share(args)),
            "--rollout.vllm_sleep", str(args.vllm_mode == "sleep").lower(),
            "--rollout.mode", args.rollout_mode.removesuffix("_process"),
            "--rollout.vllm_own_process", str(args.rollout_mode.endswith("_process")).lower(),
            "--rollout.sampler_ranks", str(args.sampler_ranks),
            "--grpo.steps", str(args.steps), "--grpo.beta", "0", "--grpo.loss_type", "grpo", "--grpo.layout", args.layout,
            "--grpo.micro_batch_tokens", str(args.micro_batch * width), "--grpo.lr", str(args.lr),
            "--reward.preset", "model1", "--reward.monitor", "false", "--ctcvr.encoder", "hashed",
            "--reward.encoder", "hashed", "--ctcvr.epochs", "1", "--ctcvr.variants", "2", "--ctcvr.impressions", "2",
            "--data.langs", "[en]", "--data.max_prompt_tokens", "512"]
    trainer = Trainer(load_config(None, over))
    trainer.run()
    all_rows = [json.loads(l) for l in (work / "ours" / "metrics.jsonl").read_text().splitlines()] \
        if trainer.rank == 0 else []
    rows = all_rows[args.warmup:]
    peak = _peak_gib_max_over_ranks()
    if trainer.rank != 0:
        return {}
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    res = {"step_s": med("time/total"), "generation_s": med("time/rollout"),
           "update_s": med("time/total") - med("time/rollout"),
           "stages_s": {k[5:]: med(k) for k in rows[0] if k.startswith("time/")},
           "tokens_per_second": med("tokens_per_second"),
           "tokens_per_second_per_gpu": med("tokens_per_second_per_gpu"),  # every GPU of the job, sampling ranks too
           "response_tokens_mean": statistics.mean(r["response_tokens_mean"] for r in rows),
           "response_tokens_per_step": [round(r["response_tokens_mean"], 1) for r in all_rows],
           "eos_rate": statistics.mean(r["eos_rate"] for r in rows),
           "reward_mean": statistics.mean(r["reward/total"] for r in rows if "reward/total" in r) if "reward/total" in rows[0] else None,
           "rollout_engine": trainer.rollout.name, "rollout_engine_start_s": round(trainer.rollout_init_s, 1),
           "peak_mem_gib": peak, "device_used_gib": max(r.get("gpu_mem_device_used_gib", 0) for r in rows),
           "reserved_peak_gib": max(r.get("gpu_mem_reserved_gib", 0) for r in rows),
           "world_size": trainer.world, "data_parallel": "deepspeed zero-2", "micro_batch_tokens": args.micro_batch * width}
    plan = trainer.parts.memory_plan
    if plan is not None:  # --ckpt auto: what the plan chose and predicted, beside the peak measured above
        gib = {k: getattr(plan, k) / 2**30 for k in ("predicted_peak", "states", "step_states", "engine", "others", "budget")}
        res["memory_plan"] = {"checkpointed_layers": plan.checkpointed_layers, "layers": plan.layers, "fits": plan.fits,
                              **{f"{k}_gib": v for k, v in gib.items()},
                              "activation_kib_per_token_layer": plan.activation_per_token_layer / 1024}
    for k in ("update_mfu", "update_hfu", "update_model_tflops"):
        if f"speed/{k}" in rows[0]:
            res[k] = med(f"speed/{k}")
    return res


def run_trl(folder, args, work) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    times = []

    from benchmarks.common import cuda_sync as sync

    class Timed(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            sync()
            t = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            sync()
            self._gen_s += time.perf_counter() - t
            self._tokens += float(out["completion_mask"].sum() + out["prompt_mask"].sum())
            self._completion_tokens += float(out["completion_mask"].sum())
            self._responses += out["completion_mask"].shape[0]
            return out

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rows = prompt_rows()
    ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": r.prompt}] for r in rows],
                            "row": list(range(len(rows)))})
    gas = (args.prompts * G) // args.micro_batch
    ds_config = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                 "gradient_clipping": "auto", "bf16": {"enabled": "auto"},
                 "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                                       "reduce_bucket_size": 50_000_000, "allgather_bucket_size": 50_000_000}}
    use_ds = torch.cuda.is_available() and args.trl_deepspeed
    kw = dict(output_dir=str(work / "trl"), per_device_train_batch_size=args.micro_batch,
              gradient_accumulation_steps=gas, num_generations=G, max_completion_length=args.max_new_tokens,
              max_steps=args.steps, learning_rate=args.lr, beta=0.0, loss_type="grpo", bf16=torch.cuda.is_available(),
              gradient_checkpointing=args.ckpt == "on", logging_steps=1, report_to=[], save_strategy="no",
              temperature=1.0, use_cpu=not torch.cuda.is_available(), seed=0,
              chat_template_kwargs={"enable_thinking": False}, deepspeed=ds_config if use_ds else None)
    if args.trl_speed == "liger":
        kw["use_liger_kernel"] = True
    elif args.trl_speed == "compile":
        kw["torch_compile"] = True
    if args.engine == "vllm":
        kw.update(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=_vllm_share(args),
                  vllm_enable_sleep_mode=args.vllm_mode == "sleep", vllm_importance_sampling_correction=False)
    conf = GRPOConfig(**kw)
    tok = AutoTokenizer.from_pretrained(str(folder))
    trainer = Timed(model=str(folder), reward_funcs=SameReward(tok), args=conf, train_dataset=ds, processing_class=tok)
    trainer._gen_s, trainer._tokens, trainer._completion_tokens, trainer._responses = 0.0, 0.0, 0.0, 0

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            sync()
            self.t = time.perf_counter()
            trainer._gen_s, trainer._tokens, trainer._completion_tokens, trainer._responses = 0.0, 0.0, 0.0, 0

        def on_step_end(self, a, state, control, **kw):
            sync()
            times.append((time.perf_counter() - self.t, trainer._gen_s, trainer._tokens,
                          trainer._completion_tokens / max(trainer._responses, 1)))

    trainer.add_callback(StepTimer())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = _peak_gib_max_over_ranks()
    if int(os.environ.get("RANK", "0")) != 0:
        return {}
    steady = times[args.warmup:] or times
    step = statistics.median(t for t, _, _, _ in steady)
    gen = statistics.median(g for _, g, _, _ in steady)
    return {"step_s": step, "generation_s": gen, "update_s": step - gen,
            # TRL counts its own rank's tokens; every rank has the same per-GPU work
            "tokens_per_second": statistics.median(n * world / t for t, _, n, _ in steady),
            "response_tokens_mean": statistics.mean(c for _, _, _, c in steady),
            "response_tokens_per_step": [round(c, 1) for _, _, _, c in times],
            "peak_mem_gib": peak, "world_size": world,
            "data_parallel": "deepspeed zero-2 (HF Trainer integration)" if use_ds else "DDP"}


# --------------------------------------------------------------------------- the sweep


def _ours_speed(settings: dict) -> str:
    mode = settings.get("rollout_mode", "sync")
    return "none" if mode == "sync" else mode


def _setting(side: str, mb: int, ckpt: str, speed: str = "none", mode: str = "sleep") -> str:
    return f"{side}_mb{mb}_ckpt{ckpt}" + ("" if speed == "none" else f"_{speed}") + ("" if mode == "sleep" else f"_{mode}")


def _failed_settings(side: str, mb: int, ckpt: str, speed: str, mode: str) -> dict:
    """What a failed setting's JSON holds, for its row's label (a run that finishes writes the same keys itself)."""
    kind = {"trl_speed": speed} if side == "trl" else {"rollout_mode": "sync" if speed == "none" else speed}
    return {"micro_batch": mb, "ckpt": ckpt, "vllm_mode": mode, **kind}


def sweep(args) -> dict:
    """Each side x micro-batch x checkpointing (x TRL's speed options) in its own process (one vLLM engine
    per process); a setting that fails is kept with the end of its log."""
    out_dir = Path(args.sweep_dir or Path(args.out).with_suffix("")).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    common = ["--shape", args.shape, "--engine", args.engine, "--steps", str(args.steps), "--warmup", str(args.warmup),
              "--prompts", str(args.prompts), "--max-new-tokens", str(args.max_new_tokens), "--vllm-memory",
              str(args.vllm_memory), "--awake-memory", str(args.awake_memory), "--workload", args.workload, "--lr", str(args.lr), "--layout", args.layout,
              "--fused", args.fused, "--work", str(shared_workdir("vs_trl", args.work))]
    if not args.trl_deepspeed:
        common.append("--no-trl-deepspeed")
    runs = [(side, mb, ckpt, speed, mode) for side in args.sides.split(",")
            for mb in [int(x) for x in args.grid.split(",")] for ckpt in args.ckpts.split(",")
            if side == "ours" or not (ckpt.startswith("l") or ckpt == "auto")  # TRL: all layers or none, by hand
            for speed in (args.trl_speeds if side == "trl" else args.rollout_modes).split(",")
            for mode in args.vllm_modes.split(",")]
    runs = pick_settings(runs, args.only, lambda r: _setting(*r), "--grid, --ckpts, --trl-speeds, --vllm-modes")
    for side, mb, ckpt, speed, mode in runs:
        name = _setting(side, mb, ckpt, speed, mode)
        # the "speed" of a setting: TRL's speed option, or our rollout.mode
        speed_arg = ["--trl-speed", speed] if side == "trl" else ["--rollout-mode", "sync" if speed == "none" else speed]
        cmd = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--micro-batch", str(mb),
               "--ckpt", ckpt, *speed_arg, "--vllm-mode", mode, "--out", str(out_dir / f"{name}.json"), *common]
        run_setting(out_dir, name, cmd, side=side, timeout=args.run_timeout, rerun=args.rerun,
                    settings=_failed_settings(side, mb, ckpt, speed, mode))
    return combine_dir(out_dir)


def combine_dir(out_dir: Path) -> dict:
    """The grid of a sweep folder's per-setting JSONs, each side's best and the best-against-best ratios."""
    grid = {"ours": [], "trl": []}
    settings, info = None, {}
    # ours_* and trl_* only: a sweep folder shared with bench_vs_verl.py also holds verl_* settings
    for f in sorted(p for side in ("ours", "trl") for p in Path(out_dir).glob(f"{side}_mb*_ckpt*.json")):
        d = json.loads(f.read_text())
        side = "ours" if "ours" in d else "trl"
        row = dict(d[side], micro_batch=d["settings"]["micro_batch"], ckpt=d["settings"]["ckpt"],
                   speed=d["settings"].get("trl_speed", "none") if side == "trl" else _ours_speed(d["settings"]),
                   vllm_mode=d["settings"].get("vllm_mode", "sleep"))
        grid[side].append(row)
        if "info" in d:
            info[side] = d["info"]
            settings = {k: v for k, v in d["settings"].items() if k not in ("micro_batch", "ckpt", "trl_speed", "vllm_mode", "rollout_mode")}
    for rows in grid.values():
        rows.sort(key=lambda r: (r["vllm_mode"], r["speed"], r["micro_batch"], r["ckpt"]))
    best = {side: max((r for r in rows if "error" not in r), key=lambda r: r["tokens_per_second"], default=None)
            for side, rows in grid.items()}
    result = {"grid": grid, "best": best, "settings": settings, "info": info}
    modes = sorted({r["speed"] for r in grid["ours"] if "error" not in r})
    if len(modes) > 1:  # our rollout modes against each other, each at its best setting
        by_mode = {m: max((r for r in grid["ours"] if "error" not in r and r["speed"] == m),
                          key=lambda r: r["tokens_per_second"]) for m in modes}
        result["ours_best_by_rollout_mode"] = {("sync" if m == "none" else m): r for m, r in by_mode.items()}
        for m in by_mode:  # one_step_off_over_sync, one_step_off_process_over_sync, ...
            if m != "none" and "none" in by_mode:
                result[f"{m}_over_sync"] = by_mode[m]["tokens_per_second"] / by_mode["none"]["tokens_per_second"]
    o, t = best["ours"], best["trl"]
    if o and t:
        result["ratios"] = {"end_to_end_tokens_per_second": o["tokens_per_second"] / t["tokens_per_second"],
                            "step_time_speedup": t["step_s"] / o["step_s"],
                            "update_speedup": t["update_s"] / o["update_s"],
                            "generation_speedup": t["generation_s"] / o["generation_s"],
                            "peak_mem": o["peak_mem_gib"] / t["peak_mem_gib"] if t["peak_mem_gib"] else None}
        best_update = {side: min((r for r in rows if "error" not in r), key=lambda r: r["update_s"])
                       for side, rows in grid.items()}
        result["ratios"]["best_update_speedup"] = best_update["trl"]["update_s"] / best_update["ours"]["update_s"]
    return result


def print_grid(result: dict):
    print("\nside  speed    vllm   micro-batch ckpt  tokens/s  step s  generation s  update s  peak GiB  response tokens")
    for side, rows in result["grid"].items():
        for r in rows:
            if "error" in r:
                print(f"{side:5} {r.get('speed', 'none'):8} {r.get('vllm_mode', 'sleep'):6} {r['micro_batch']:11} {r['ckpt']:4}  {r['error']}")
            else:
                print(f"{side:5} {r.get('speed', 'none'):8} {r.get('vllm_mode', 'sleep'):6} {r['micro_batch']:11} {r['ckpt']:4}  {r['tokens_per_second']:8.0f}  {r['step_s']:6.2f}  "
                      f"{r['generation_s']:12.2f}  {r['update_s']:8.2f}  {r['peak_mem_gib']:8.1f}  "
                      f"{r.get('response_tokens_mean', 0):6.1f}")
    if result.get("ratios"):
        b = result["best"]
        print(f"best: ours mb {b['ours']['micro_batch']} ckpt {b['ours']['ckpt']} vllm {b['ours'].get('vllm_mode', 'sleep')}, "
              f"trl mb {b['trl']['micro_batch']} ckpt {b['trl']['ckpt']} speed {b['trl'].get('speed', 'none')} "
              f"vllm {b['trl'].get('vllm_mode', 'sleep')}: " + ", ".join(f"{k} {v:.2f}" for k, v in result["ratios"].items() if v))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", choices=("ours", "trl"))
    ap.add_argument("--sweep", action="store_true", help="both sides over --grid x --ckpts, a process per setting")
    ap.add_argument("--combine-dir", default=None, help="the grid of a sweep folder's JSONs (no run)")
    ap.add_argument("--shape", default="1.7b")
    ap.add_argument("--workload", default="fixed", choices=("fixed", "realistic"))
    ap.add_argument("--engine", default="vllm", choices=("vllm", "hf"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per optimizer step per GPU (x G = 5)")
    ap.add_argument("--micro-batch", type=int, default=40, help="sequences per micro-batch (one setting)")
    ap.add_argument("--ckpt", default="on", help="gradient checkpointing (one setting): on, off, lN (ours: N of the "
                                                 "decoder layers checkpointed, model.checkpoint_layers) or auto (ours: "
                                                 "model.auto_checkpointing's memory plan chooses)")
    ap.add_argument("--layout", default="auto", help="ours: grpo.layout (auto: packed on a GPU)")
    ap.add_argument("--fused", default="auto", help="ours: model.fused_layers (auto: compile on a GPU)")
    ap.add_argument("--grid", default="8,20,40,80", help="--sweep: micro-batch sizes")
    ap.add_argument("--ckpts", default="on,off", help="--sweep: checkpointing settings")
    ap.add_argument("--sides", default="ours,trl", help="--sweep: sides")
    ap.add_argument("--trl-speed", default="none", choices=("none", "liger", "compile"),
                    help="TRL's speed option (one setting): liger = use_liger_kernel, compile = torch_compile")
    ap.add_argument("--trl-speeds", default="none,liger", help="--sweep: TRL's speed options")
    ap.add_argument("--rollout-mode", default="sync", choices=("sync", "one_step_off", "sync_process", "one_step_off_process"),
                    help="ours (one setting): rollout.mode; one_step_off samples the next batch during the update "
                         "(use with --vllm-mode awake: the engine stays awake anyway); _process: vLLM's engine core in "
                         "a process of its own (rollout.vllm_own_process)")
    ap.add_argument("--sampler-ranks", type=int, default=0,
                    help="ours, under torchrun with --rollout-mode one_step_off: ranks that only sample (rollout.sampler_ranks)")
    ap.add_argument("--rollout-modes", default="none",
                    help="--sweep: our rollout modes (none = sync, one_step_off, sync_process, one_step_off_process); "
                         "they fill the grid's speed column")
    ap.add_argument("--vllm-mode", default="sleep", choices=("sleep", "awake"),
                    help="both sides (one setting): sleep through the update, or stay awake at --awake-memory")
    ap.add_argument("--vllm-modes", default="sleep", help="--sweep: vLLM modes (sleep, awake)")
    ap.add_argument("--awake-memory", type=float, default=0.1,
                    help="vLLM's share of GPU memory when it stays awake, both sides")
    ap.add_argument("--only", default=None, help="--sweep: comma-separated setting names of the grid to run")
    ap.add_argument("--sweep-dir", default=None, help="--sweep: folder of the per-setting JSONs (default: next to --out)")
    ap.add_argument("--rerun", action="store_true", help="--sweep: run settings whose JSON exists again")
    ap.add_argument("--run-timeout", type=int, default=420, help="--sweep: seconds per setting")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--lr", type=float, default=None,
                    help="learning rate, both sides (default: 1e-6 fixed workload, 1e-12 realistic; see the docstring)")
    ap.add_argument("--vllm-memory", type=float, default=0.3, help="vLLM's share of GPU memory, both sides")
    ap.add_argument("--no-trl-deepspeed", dest="trl_deepspeed", action="store_false")
    ap.add_argument("--work", default=None, help="folder for the policy and the runs (shared by both sides)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "vs_trl.json"))
    args = ap.parse_args(argv)
    if args.lr is None:
        args.lr = 1e-12 if args.workload == "realistic" else 1e-6
    for c in [args.ckpt] + args.ckpts.split(","):
        if not (c in ("on", "off", "auto") or (c.startswith("l") and c[1:].isdigit())):
            ap.error(f"--ckpt/--ckpts: {c!r} is not on, off, auto or lN (N decoder layers checkpointed)")
    if args.side == "trl" and (args.ckpt.startswith("l") or args.ckpt == "auto"):
        ap.error(f"--ckpt {args.ckpt} is ours alone: TRL checkpoints every layer or none")
    if args.sweep or args.combine_dir:
        result = sweep(args) if args.sweep else combine_dir(Path(args.combine_dir))
        print_grid(result)
        write_json(args.out, result)
        return result
    if not args.side:
        ap.error("--side ours|trl, --sweep or --combine-dir DIR")
    work = shared_workdir("vs_trl", args.work)  # the same folder on every rank
    folder = shared_policy(work, args.shape, args.workload)
    t = time.time()
    res = (run_ours if args.side == "ours" else run_trl)(folder, args, work)
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    res["wall_s"] = round(time.time() - t, 1)
    settings = {k: getattr(args, k) for k in ("shape", "workload", "engine", "steps", "warmup", "prompts", "micro_batch",
                                              "ckpt", "max_new_tokens", "vllm_memory", "awake_memory", "vllm_mode", "layout",
                                              "fused", "trl_speed", "rollout_mode", "sampler_ranks", "lr")}
    result = {args.side: res, "settings": dict(settings, group_size=G), "info": provenance()}
    print(json.dumps(result, indent=2))
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
