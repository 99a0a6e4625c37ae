"""Probe of the loss at a trainer's micro-batch shapes on a GPU: every call's time, per logits path,
as the width (tokens per micro-batch) changes from call to call, as it does in training. Shows
compiles (a slow first call at a new width) apart from the steady cost.

    python benchmarks/probe_widths.py --hidden 1024 --out widths.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--hidden", type=int, default=1024, help="H (1,024: Qwen3-0.6B)")
    ap.add_argument("--vocab", type=int, default=151936)
    ap.add_argument("--rows", type=int, default=8, help="sequences per micro-batch")
    ap.add_argument("--widths", default="150,188,163,171,150,188,201,163", help="completion lengths, call by call")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "probe_widths.json"))
    args = ap.parse_args()
    from benchmarks.common import provenance
    from relate_fast import fused_grpo_loss, fused_logprobs

    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    H, V, B = args.hidden, args.vocab, args.rows
    weight = (torch.randn(V, H, device=dev, generator=g) / H**0.5).to(torch.bfloat16).requires_grad_()
    out = {"info": {**provenance(), "device": torch.cuda.get_device_name(), "H": H, "V": V, "B": B}, "paths": {}}
    for path in ("epilogue", "fp32"):
        os.environ["RELATE_FAST_LOGITS"] = path
        calls = []
        for T in [int(t) for t in args.widths.split(",")]:
            hidden = (torch.randn(B, T, H, device=dev, generator=g) * 0.5).to(torch.bfloat16).requires_grad_()
            targets = torch.randint(0, V, (B, T), device=dev, generator=g)
            mask = torch.rand(B, T, device=dev, generator=g) > 0.1
            adv = torch.randn(B, device=dev, generator=g)
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            with torch.no_grad():
                old = fused_logprobs(hidden, weight, targets)
            torch.cuda.synchronize()
            t1 = time.perf_counter()
            loss, _ = fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old, return_entropy=True)
            (0.5 * loss).backward()  # a non-unit upstream gradient, as the trainer's scaled losses have
            torch.cuda.synchronize()
            t2 = time.perf_counter()
            weight.grad = None
            calls.append({"T": T, "logprobs_ms": (t1 - t0) * 1e3, "loss_ms": (t2 - t1) * 1e3})
            print(f"{path:9s} T={T:4d}  logprobs {calls[-1]['logprobs_ms']:8.1f} ms  loss fwd+bwd "
                  f"{calls[-1]['loss_ms']:8.1f} ms", flush=True)
        out["paths"][path] = calls
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
