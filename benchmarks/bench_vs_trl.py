"""Our trainer against TRL's GRPOTrainer on the same run: model, prompts, G, lengths, micro-batch,
optimizer, GPUs, and vLLM colocated with sleep mode on both sides.

    torchrun --nproc_per_node 2 benchmarks/bench_vs_trl.py --side ours --out ours.json
    torchrun --nproc_per_node 2 benchmarks/bench_vs_trl.py --side trl  --out trl.json
    python benchmarks/bench_vs_trl.py --combine ours.json trl.json --out vs_trl.json
    python benchmarks/bench_vs_trl.py --side ours --shape tiny --steps 2 --engine hf   # CPU smoke

Both sides: a Qwen3-shaped policy (default 1.7B) with random bf16 weights saved once and the real
Qwen3 tokenizer; per GPU `--prompts` prompts x G = 5 completions of up to `--max-new-tokens` tokens
per optimizer step (one optimizer step per generation batch), β = 0, loss grpo, temperature 1,
`--micro-batch` sequences per micro-batch (TRL's per_device_train_batch_size; ours gets a token
budget holding that many rows of full width), gradient checkpointing, AdamW (lr 1e-6), DeepSpeed
ZeRO-2 (TRL through the HF Trainer's DeepSpeed integration; if that fails to start, plain DDP, said
in the result), vLLM colocated with the same memory share, sleep mode on, the same structural reward
(length + format). TRL's vLLM importance-sampling correction is turned off: ours has none, and it
would make TRL compute an extra forward per batch.

Measured per optimizer step after `--warmup` steps: wall time, the generation part, the update part
(everything else: rewards, forward, loss, backward, optimizer step, weight push), tokens per second
(prompt + completion tokens of all ranks over the step time) and peak GPU memory per GPU
(PyTorch's allocator peak; max over ranks). Rank 0 writes the side's JSON with provenance.
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

from benchmarks.common import provenance, qwen3_folder, shared_workdir, write_json  # noqa: E402

G = 5


def shared_policy(work: Path, shape: str) -> Path:
    """The policy folder (random weights written once by rank 0; the other ranks wait for it)."""
    folder = work / f"qwen3_{shape}"
    if int(os.environ.get("RANK", "0")) == 0 and not (folder / ".ready").is_file():
        qwen3_folder(folder, shape, weights=True)
        (folder / ".ready").touch()
    while not (folder / ".ready").is_file():
        time.sleep(0.5)
    return folder


def structural_reward(prompts, completions, **kw):
    """TRL reward: length + format of relate_fast's components, on the completion text."""
    from relate_fast.data.ads import AdPrompt
    from relate_fast.rewards import COMPONENTS, RewardContext, RolloutBatch

    texts = [c if isinstance(c, str) else c[-1]["content"] for c in completions]
    row = AdPrompt(id="x", lang="en", industry="x", query="q", bidword="b", selling_points=("s",), facts=())
    batch = RolloutBatch([row] * len(texts), texts)
    ctx = RewardContext()
    return list(COMPONENTS["length"].fn(batch, ctx) + COMPONENTS["format"].fn(batch, ctx))


def _peak_gib_max_over_ranks() -> float:
    import torch

    if not torch.cuda.is_available():
        return 0.0
    t = torch.tensor([torch.cuda.max_memory_allocated() / 2**30], device="cuda")
    if torch.distributed.is_initialized():
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
    return float(t)


def run_ours(folder, args, work) -> dict:
    from relate_fast.config import load_config
    from relate_fast.trainer import Trainer

    width = 512 + args.max_new_tokens
    over = ["--run.out_dir", str(work), "--run.name", "ours", "--run.progress", "false", "--eval.enabled", "false",
            "--run.checkpoint_every", "0", "--run.save_final", "false", "--run.resume", "false", "--model.path", str(folder),
            "--model.dtype", "bfloat16", "--model.gradient_checkpointing", "true", "--sft.steps", "0",
            "--rollout.engine", args.engine, "--rollout.group_size", str(G), "--rollout.prompts_per_step",
            str(args.prompts), "--rollout.max_new_tokens", str(args.max_new_tokens), "--rollout.temperature", "1.0",
            "--rollout.vllm_gpu_memory_utilization", str(args.vllm_memory),
            "--grpo.steps", str(args.steps), "--grpo.beta", "0", "--grpo.loss_type", "grpo",
            "--grpo.micro_batch_tokens", str(args.micro_batch * width), "--grpo.lr", "1e-6",
            "--reward.preset", "model1", "--reward.monitor", "false", "--ctcvr.encoder", "hashed",
            "--reward.encoder", "hashed", "--ctcvr.epochs", "1", "--ctcvr.variants", "2", "--ctcvr.impressions", "2",
            "--data.langs", "[en]", "--data.max_prompt_tokens", "512"]
    trainer = Trainer(load_config(None, over))
    trainer.run()
    rows = [json.loads(l) for l in (work / "ours" / "metrics.jsonl").read_text().splitlines()][args.warmup:] \
        if trainer.rank == 0 else []
    peak = _peak_gib_max_over_ranks()
    if trainer.rank != 0:
        return {}
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    return {"step_s": med("time/total"), "generation_s": med("time/rollout"),
            "update_s": med("time/total") - med("time/rollout"),
            "stages_s": {k[5:]: med(k) for k in rows[0] if k.startswith("time/")},
            "tokens_per_second": med("tokens_per_second"),
            "response_tokens_mean": statistics.mean(r["response_tokens_mean"] for r in rows),
            "rollout_engine": trainer.rollout.name, "rollout_engine_start_s": round(trainer.rollout_init_s, 1),
            "peak_mem_gib": peak, "device_used_gib": max(r.get("gpu_mem_device_used_gib", 0) for r in rows),
            "world_size": trainer.world, "data_parallel": "deepspeed zero-2"}


def run_trl(folder, args, work) -> dict:
    import torch
    from datasets import Dataset
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from relate_fast.data import sample_ads

    times = []

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    class Timed(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            sync()
            t = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            sync()
            self._gen_s += time.perf_counter() - t
            self._tokens += float(out["completion_mask"].sum() + out["prompt_mask"].sum())
            return out

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rows = sample_ads("train", langs=["en"])
    ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": r.prompt}] for r in rows]})
    gas = (args.prompts * G) // args.micro_batch
    ds_config = {"train_micro_batch_size_per_gpu": "auto", "gradient_accumulation_steps": "auto",
                 "gradient_clipping": "auto", "bf16": {"enabled": "auto"},
                 "zero_optimization": {"stage": 2, "overlap_comm": True, "contiguous_gradients": True,
                                       "reduce_bucket_size": 50_000_000, "allgather_bucket_size": 50_000_000}}
    use_ds = torch.cuda.is_available() and args.trl_deepspeed
    kw = dict(output_dir=str(work / "trl"), per_device_train_batch_size=args.micro_batch,
              gradient_accumulation_steps=gas, num_generations=G, max_completion_length=args.max_new_tokens,
              max_steps=args.steps, learning_rate=1e-6, beta=0.0, loss_type="grpo", bf16=torch.cuda.is_available(),
              gradient_checkpointing=True, logging_steps=1, report_to=[], save_strategy="no", temperature=1.0,
              use_cpu=not torch.cuda.is_available(), seed=0, chat_template_kwargs={"enable_thinking": False},
              deepspeed=ds_config if use_ds else None)
    if args.engine == "vllm":
        kw.update(use_vllm=True, vllm_mode="colocate", vllm_gpu_memory_utilization=args.vllm_memory,
                  vllm_enable_sleep_mode=True, vllm_importance_sampling_correction=False)
    conf = GRPOConfig(**kw)
    trainer = Timed(model=str(folder), reward_funcs=structural_reward, args=conf, train_dataset=ds)
    trainer._gen_s, trainer._tokens = 0.0, 0.0

    class StepTimer(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            sync()
            self.t = time.perf_counter()
            trainer._gen_s, trainer._tokens = 0.0, 0.0

        def on_step_end(self, a, state, control, **kw):
            sync()
            times.append((time.perf_counter() - self.t, trainer._gen_s, trainer._tokens))

    trainer.add_callback(StepTimer())
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak = _peak_gib_max_over_ranks()
    if int(os.environ.get("RANK", "0")) != 0:
        return {}
    steady = times[args.warmup:] or times
    step = statistics.median(t for t, _, _ in steady)
    gen = statistics.median(g for _, g, _ in steady)
    return {"step_s": step, "generation_s": gen, "update_s": step - gen,
            # TRL counts its own rank's tokens; every rank has the same per-GPU work
            "tokens_per_second": statistics.median(n * world / t for t, _, n in steady),
            "peak_mem_gib": peak, "world_size": world,
            "data_parallel": "deepspeed zero-2 (HF Trainer integration)" if use_ds else "DDP"}


def combine(ours: dict, trl: dict) -> dict:
    o, t = ours["ours"], trl["trl"]
    return {"ours": o, "trl": t, "settings": ours["settings"],
            "ratios": {"end_to_end_tokens_per_second": o["tokens_per_second"] / t["tokens_per_second"],
                       "step_time_speedup": t["step_s"] / o["step_s"],
                       "update_speedup": t["update_s"] / o["update_s"],
                       "generation_speedup": t["generation_s"] / o["generation_s"],
                       "peak_mem": o["peak_mem_gib"] / t["peak_mem_gib"] if t["peak_mem_gib"] else None},
            "info": {"ours": ours["info"], "trl": trl["info"]}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--side", choices=("ours", "trl"))
    ap.add_argument("--combine", nargs=2, metavar=("OURS_JSON", "TRL_JSON"))
    ap.add_argument("--shape", default="1.7b")
    ap.add_argument("--engine", default="vllm", choices=("vllm", "hf"))
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=16, help="prompts per optimizer step per GPU (x G = 5)")
    ap.add_argument("--micro-batch", type=int, default=8, help="sequences per micro-batch on both sides")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--vllm-memory", type=float, default=0.3, help="vLLM's share of GPU memory, both sides")
    ap.add_argument("--no-trl-deepspeed", dest="trl_deepspeed", action="store_false")
    ap.add_argument("--work", default=None, help="folder for the policy and the runs (shared by both sides)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "vs_trl.json"))
    args = ap.parse_args(argv)
    if args.combine:
        a, b = (json.loads(Path(p).read_text()) for p in args.combine)
        result = combine(a, b)
        print(json.dumps(result, indent=2))
        write_json(args.out, result)
        return result
    if not args.side:
        ap.error("--side ours|trl or --combine OURS TRL")
    work = shared_workdir("vs_trl", args.work)  # the same folder on every rank
    folder = shared_policy(work, args.shape)
    t = time.time()
    res = (run_ours if args.side == "ours" else run_trl)(folder, args, work)
    if int(os.environ.get("RANK", "0")) != 0:
        return None
    res["wall_s"] = round(time.time() - t, 1)
    settings = {k: getattr(args, k) for k in ("shape", "engine", "steps", "warmup", "prompts", "micro_batch",
                                              "max_new_tokens", "vllm_memory")}
    result = {args.side: res, "settings": dict(settings, group_size=G), "info": provenance()}
    print(json.dumps(result, indent=2))
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
