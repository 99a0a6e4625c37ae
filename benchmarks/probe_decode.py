"""Where does a vLLM decode step's time go? (issue 24, item 3)

bench_rollout.py --phases found 80 sequences x 128 new tokens of the 1.7B shape take 0.55 s on an
H200: ~4 ms per decode step, against ~1 ms to read the weights once. This probe asks whether the
step waits on the GPU or on the host:

- the time per decode step at several batch sizes (a host-bound step barely grows with the batch);
- one generate under torch.profiler: the GPU's busy time (kernel time summed) against the wall time,
  the top kernels and the top host operations.

Random weights (vLLM's dummy loader), so every response runs to the limit. The engine runs in this
process unless VLLM_ENABLE_V1_MULTIPROCESSING=1 is set (then the profile sees only the client).

    python benchmarks/probe_decode.py --shape 1.7b --out decode.json
    VLLM_ENABLE_V1_MULTIPROCESSING=1 python benchmarks/probe_decode.py --no-profile
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

from benchmarks.common import provenance, qwen3_folder, write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="1.7b")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--prompts", default="1,4,16,32", help="prompts per call (x n sequences)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    ap.add_argument("--execution", default="compiled", choices=("compiled", "cuda_graphs", "eager"))
    ap.add_argument("--no-profile", dest="profile", action="store_false")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "decode.json"))
    args = ap.parse_args(argv)
    import torch

    from relate_fast.data import sample_ads
    from relate_fast.models import prompt_ids
    from relate_fast.rollout.vllm_engine import VLLMEngine
    from transformers import AutoTokenizer

    folder = qwen3_folder(Path(tempfile.mkdtemp(prefix="probe_decode_")) / args.shape, args.shape, weights=False)
    tok = AutoTokenizer.from_pretrained(str(folder))
    rows = sample_ads("train", langs=["en"])
    t = time.perf_counter()
    engine = VLLMEngine(folder, tok, dtype="bfloat16" if torch.cuda.is_available() else "float32", seed=0, max_model_len=512 + args.max_new_tokens + 8,
                        gpu_memory_utilization=args.gpu_memory_utilization, execution=args.execution,
                        sleep=False, dummy_weights=True)
    engine.needs_weights = False  # dummy weights are fine for timing
    res = {"shape": args.shape, "n": args.n, "max_new_tokens": args.max_new_tokens, "execution": args.execution,
           "multiprocessing": os.environ.get("VLLM_ENABLE_V1_MULTIPROCESSING"), "start_s": round(time.perf_counter() - t, 1)}

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)

    def call(prompts, new):
        pids = [prompt_ids(tok, rows[i % len(rows)].prompt) for i in range(prompts)]
        sync()
        t = time.perf_counter()
        out = engine.generate(pids, args.n, max_new_tokens=new, temperature=1.0, seed=0)
        sync()
        return time.perf_counter() - t, sum(len(c) for g in out for c in g)

    res["per_batch"] = {}
    for p in [int(x) for x in args.prompts.split(",")]:
        call(p, args.max_new_tokens)  # warm-up
        full = statistics.median(call(p, args.max_new_tokens)[0] for _ in range(3))
        one = statistics.median(call(p, 1)[0] for _ in range(3))
        step_ms = (full - one) / (args.max_new_tokens - 1) * 1e3
        res["per_batch"][p * args.n] = {"generate_s": round(full, 4), "prefill_s": round(one, 4),
                                        "decode_step_ms": round(step_ms, 3)}
        print(f"batch {p * args.n:4}: generate {full:.3f} s, prefill+1 {one:.3f} s, decode step {step_ms:.2f} ms",
              flush=True)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        p = int(args.prompts.split(",")[-2 if "," in args.prompts else 0])
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            wall, _ = call(p, args.max_new_tokens)
        ev = prof.key_averages()
        gpu_us = sum(e.self_device_time_total for e in ev)
        res["profile"] = {"batch": p * args.n, "wall_s": round(wall, 4), "gpu_kernel_s": round(gpu_us / 1e6, 4),
                          "gpu_busy_share": round(gpu_us / 1e6 / wall, 3),
                          "top_gpu": [(e.key[:90], e.count, round(e.self_device_time_total / 1e3, 2))
                                      for e in sorted(ev, key=lambda e: -e.self_device_time_total)[:15]],
                          "top_cpu": [(e.key[:90], e.count, round(e.self_cpu_time_total / 1e3, 2))
                                      for e in sorted(ev, key=lambda e: -e.self_cpu_time_total)[:20]]}
        print(f"profile batch {p * args.n}: wall {wall:.3f} s (profiled), GPU kernels {gpu_us / 1e6:.3f} s")
        print(prof.key_averages().table(sort_by="self_cuda_time_total", row_limit=15, max_name_column_width=70))
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20, max_name_column_width=70))
    res["info"] = provenance()
    write_json(args.out, res)
    print(json.dumps({k: v for k, v in res.items() if k != "profile"}, indent=2))


if __name__ == "__main__":
    main()
