"""Benchmark of GRPO training steps: step-time breakdown, tokens per second (per GPU) and memory.

    python benchmarks/bench_train.py                      # CPU: the tiny default config (cold start included)
    python benchmarks/bench_train.py --quick              # CI smoke: 2 steps of a smaller tiny model
    python benchmarks/bench_train.py --gpu --shape 1.7b   # one GPU: Qwen3-1.7B shape, vLLM rollouts
    torchrun --nproc_per_node 4 benchmarks/bench_train.py --gpu --shape 8b --prompts 72 --max-new-tokens 256
                                                          # the paper's shape: 4 x 72 prompts x G=5 = 1,440 responses

On the GPU the policy is a Qwen3-shaped model with seeded random weights and the real Qwen3
tokenizer (`--model.init random`: nothing is written to disk; vLLM starts from dummy weights and
receives the policy's), bf16, ZeRO-2, gradient checkpointing, vLLM rollouts at full speed, β = 0,
one update per rollout batch, structural + CTCVR + diversity rewards with the hashed encoder. Random
weights rarely stop, so almost every response runs to --max-new-tokens (the heaviest case).

It runs the real trainer (`relate_fast.trainer.Trainer`) with evaluation off and reads the run's
metrics.jsonl: per stage (rollout, rewards, old/ref log-probs, update, weight push) the median over
the steps after the first `--warmup`, tokens per second (prompt + response tokens of all ranks over
the step's wall time) and per GPU, and on GPU the peak memory per GPU (PyTorch's allocator peak,
which includes vLLM's weights and KV cache in sleep mode, and the device's used memory at stage ends,
with vLLM asleep). Under torchrun rank 0 writes the JSON
(default benchmarks/out/train_{cpu,gpu}.json), stamped with commit, versions, device and date.
Results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.common import provenance, qwen3_folder, shared_workdir, write_json  # noqa: E402


def summarize(run_dir: Path, warmup: int) -> dict:
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    steady = rows[warmup:] or rows
    keys = sorted({k for r in steady for k in r if k.startswith("time/")})
    med = lambda k: statistics.median(r[k] for r in steady)  # noqa: E731
    res = {"steps_measured": len(steady), "step_ms": {k: round(1000 * med(k), 1) for k in keys},
           "tokens_per_second": round(med("tokens_per_second"), 1),
           "tokens_per_second_per_gpu": round(med("tokens_per_second_per_gpu"), 1),
           "response_tokens_mean": round(statistics.mean(r["response_tokens_mean"] for r in steady), 1),
           "responses_per_step": rows[0]["responses_global"],
           "reward_total": [round(r["reward/total"], 4) for r in rows]}
    if "gpu_mem_peak_gib" in rows[0]:
        res["gpu_mem_peak_gib"] = round(max(r["gpu_mem_peak_gib"] for r in rows), 2)
        res["gpu_mem_device_used_gib"] = round(max(r["gpu_mem_device_used_gib"] for r in rows), 2)
    return res


def _log_triton_compiles(path: Path):
    """Triton's jit_cache_hook runs before each new specialisation is compiled or loaded: where the
    slow steps of a run come from (a compile is 0.1-3 s)."""
    import triton

    t0 = time.time()

    def hook(*, key, repr, **_):
        with path.open("a") as f:
            f.write(f"{time.time() - t0:8.2f} s  {repr[:400]}\n")
        return None  # a true value would skip the compile

    triton.knobs.runtime.jit_cache_hook = hook


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="a Qwen3-shaped policy on the GPU(s)")
    ap.add_argument("--quick", action="store_true", help="CI smoke: 2 steps of a smaller tiny model")
    ap.add_argument("--shape", default="0.6b", help="GPU policy shape: 0.6b, 1.7b or 8b")
    ap.add_argument("--engine", default="vllm", help="GPU rollout engine: vllm or hf")
    ap.add_argument("--prompts", type=int, default=16, help="GPU: prompts per step per rank (x G = 5 responses)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--steps", type=int, default=None, help="GRPO steps (default: 12 CPU, 6 GPU)")
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the medians")
    ap.add_argument("--out", default=None)
    ap.add_argument("--keep", default=None, help="keep the run folder here (else a temporary folder, removed)")
    ap.add_argument("--log-compiles", default=None,
                    help="append each Triton kernel specialisation this process meets for the first time (a compile, "
                         "or a load from the disk cache) to this file, one line each with its time")
    args, extra = ap.parse_known_args(argv)
    from relate_fast.config import load_config
    from relate_fast.distributed import barrier, init_distributed
    from relate_fast.trainer import Trainer

    if args.log_compiles:
        _log_triton_compiles(Path(args.log_compiles))
    rank, _ = init_distributed()  # the trainer reuses this process group
    work = shared_workdir("bench_train", args.keep)  # the same folder on every rank
    if rank == 0 and not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    common = ["--run.out_dir", str(work), "--run.name", "bench", "--eval.enabled", "false", "--run.progress", "false",
              "--run.checkpoint_every", "0", "--run.save_final", "false", "--run.resume", "false"]
    if args.gpu:
        folder = work / f"qwen3_{args.shape}"
        if rank == 0:
            qwen3_folder(folder, args.shape, weights=False)
        barrier()
        steps = args.steps or 6
        over = common + ["--model.path", str(folder), "--model.init", "random", "--model.dtype", "bfloat16",
                         "--model.gradient_checkpointing", "true", "--sft.steps", "0",
                         "--rollout.engine", args.engine, "--rollout.max_new_tokens", str(args.max_new_tokens),
                         "--rollout.prompts_per_step", str(args.prompts), "--grpo.beta", "0", "--grpo.lr", "1e-6",
                         "--ctcvr.encoder", "hashed", "--reward.encoder", "hashed", "--reward.preset", "model3",
                         "--ctcvr.epochs", "1", "--ctcvr.variants", "2", "--ctcvr.impressions", "2",
                         "--grpo.micro_batch_tokens", "16384", "--grpo.steps", str(steps), "--data.max_prompt_tokens", "512"]
        config = None
    else:
        steps = args.steps or (2 if args.quick else 12)
        over = common + ["--grpo.steps", str(steps)]
        if args.quick:
            over += ["--model.tiny.vocab_size", "500", "--model.tiny.hidden_size", "64", "--model.tiny.num_hidden_layers",
                     "1", "--sft.steps", "2", "--ctcvr.encoder", "hashed", "--reward.encoder", "hashed",
                     "--ctcvr.variants", "2", "--ctcvr.impressions", "2", "--ctcvr.epochs", "1",
                     "--rollout.prompts_per_step", "2", "--rollout.max_new_tokens", "12", "--rollout.engine", "hf"]
        config = str(ROOT / "configs" / "tiny_cpu.yaml")
    cfg = load_config(config, over + extra)
    t0 = time.time()
    trainer = Trainer(cfg)
    trainer.run()
    wall = time.time() - t0
    if trainer.rank != 0:
        return None
    res = summarize(work / "bench", 0 if args.quick else args.warmup)
    res["info"] = dict(provenance(), rollout_engine=trainer.rollout.name, world_size=trainer.world,
                       rollout_engine_start_s=round(trainer.rollout_init_s, 1),
                       policy=f"qwen3-{args.shape}-shaped, random weights, real tokenizer" if args.gpu else "tiny default",
                       steps=steps, warmup=args.warmup, wall_s=round(wall, 1), overrides=over[len(common):] + extra)
    print(json.dumps(res, indent=2))
    write_json(args.out or ROOT / "benchmarks" / "out" / f"train_{'gpu' if args.gpu else 'cpu'}.json", res)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
