"""When does the GPU get its first work in a fused_grpo_loss call? The CPU's timeline from the call's
start to the launch of the logits GEMM on the epilogue path (Qwen3-8B head, 8,192 tokens; the GPU is
kept busy so that nothing waits on it), median of 20 calls, in microseconds. Each timed call stops
right after the GEMM's launch. Measured on an H100 on 2026-11-27: benchmarks/NOTES_loss.md.

    python benchmarks/probe_call_start.py
"""
from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relate_fast import fused_grpo_loss  # noqa: E402
from relate_fast.kernels import logits_gemm as lg  # noqa: E402
from relate_fast.loss import chunked  # noqa: E402

MARKS = ("pass entered", "stats entered", "target launch starts", "target launched", "GEMM launch starts",
         "GEMM launched")


class _Stop(Exception):
    pass


def _marking(fn, before, after=None, stop=False):
    def wrapped(*args, **kwargs):
        marks[before] = time.perf_counter()
        out = fn(*args, **kwargs)
        if after:
            marks[after] = time.perf_counter()
        if stop:
            raise _Stop()
        return out
    return wrapped


marks: dict = {}


def main():
    dev = torch.device("cuda")
    B, T, H, V = 16, 512, 4096, 151936
    hidden = (torch.randn(B, T, H, device=dev) * 0.5).bfloat16().requires_grad_()
    weight = (torch.randn(V, H, device=dev) / 64).bfloat16().requires_grad_()
    targets = torch.randint(0, V, (B, T), device=dev)
    mask = torch.rand(B, T, device=dev) > 0.1
    adv = torch.randn(B, device=dev)
    old = torch.randn(B, T, device=dev)
    for _ in range(3):  # compiled and warm
        fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old)[0].backward()
        hidden.grad = weight.grad = None
    torch.cuda.synchronize()
    chunked.chunked_forward = _marking(chunked.chunked_forward, "pass entered")
    chunked._EpilogueLogits.stats = _marking(chunked._EpilogueLogits.stats, "stats entered")
    lg.target_logits = _marking(lg.target_logits, "target launch starts", "target launched")
    lg.logits_stats = _marking(lg.logits_stats, "GEMM launch starts", "GEMM launched", stop=True)
    busy = torch.empty(8192, 8192, device=dev, dtype=torch.bfloat16)
    rows = []
    for i in range(25):
        for _ in range(3):
            torch.mm(busy, busy)
        marks.clear()
        t0 = time.perf_counter()
        try:
            fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old)
        except _Stop:
            pass
        if i >= 5:
            rows.append([(marks[k] - t0) * 1e6 for k in MARKS])
    torch.cuda.synchronize()
    for j, k in enumerate(MARKS):
        print(f"{k:22s} {statistics.median(r[j] for r in rows):7.0f} us after the call starts")


if __name__ == "__main__":
    main()
