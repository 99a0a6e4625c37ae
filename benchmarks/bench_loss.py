"""Benchmark of the GRPO loss at Qwen3-8B head shapes (H=4096, V=151,936, bf16), forward+backward.

    python benchmarks/bench_loss.py                 # on a CUDA GPU: N = 4096, 8192, 16384 (32768 with --big)
    python benchmarks/bench_loss.py --quick         # CPU smoke run at tiny shapes (what CI could run)

In one run, on the same inputs (random, never zeros), it times:
- floor: the three lm_head matrix products alone (logits = h·Wᵀ, dh = dz·W, dW = dzᵀ·h), bf16;
- naive: torch GRPO math on materialised fp32 logits, autograd backward;
- relate_fast: `fused_grpo_loss` (the implementation installed: at present the chunked torch path);
- fused_logprobs against one forward product.
It also checks the fused loss against the naive one on the same bf16 inputs (relative error of the
loss and of both gradients). Times: median of CUDA-event timings after warm-up; memory: peak
allocated beyond the inputs, minus the two gradients themselves. Prints a table and writes JSON.

Still to add with the Triton kernels (issue 3, part 2): the CCE and Liger anchors (carried wheels).
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relate_fast import fused_grpo_loss, fused_logprobs  # noqa: E402


def naive_loss(hidden, weight, targets, mask, adv, old):
    logits = (hidden @ weight.t()).float()
    logp = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    ratio = torch.exp(logp - old)
    per = -torch.minimum(ratio * adv[:, None], ratio.clamp(0.8, 1.2) * adv[:, None])
    m = mask.float()
    return ((per * m).sum(1) / m.sum(1).clamp(min=1)).mean()


def timed(fn, device, warmup=3, reps=10):
    if device.type != "cuda":
        import time
        ts = []
        for i in range(warmup + reps):
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                ts.append((time.perf_counter() - t0) * 1e3)
        return sorted(ts)[len(ts) // 2], 0.0
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    peak = (torch.cuda.max_memory_allocated() - base) / 2**30
    return sorted(ts)[len(ts) // 2], peak


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def bench(N, H, V, device, dtype, reps):
    g = torch.Generator(device=device).manual_seed(N)
    B = max(1, N // 512)
    T = N // B
    hidden = (torch.randn(B, T, H, device=device, generator=g) * 0.5).to(dtype).requires_grad_(True)
    weight = (torch.randn(V, H, device=device, generator=g) / H**0.5).to(dtype).requires_grad_(True)
    targets = torch.randint(0, V, (B, T), device=device, generator=g)
    mask = torch.rand(B, T, device=device, generator=g) > 0.1
    adv = torch.randn(B, device=device, generator=g)
    with torch.no_grad():
        old = fused_logprobs(hidden, weight, targets) + 0.05 * torch.randn(B, T, device=device, generator=g)
    h2, dz = hidden.detach().reshape(N, H), torch.randn(N, V, device=device, generator=g).to(dtype)

    def floor():
        torch.mm(h2, weight.detach().t())
        torch.mm(dz, weight.detach())
        torch.mm(dz.t(), h2)

    def run(loss_fn):
        def f():
            hidden.grad = None
            weight.grad = None
            loss_fn().backward()
        return f

    ours = lambda: fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old)[0]  # noqa: E731
    naive = lambda: naive_loss(hidden, weight, targets, mask, adv, old)  # noqa: E731
    row = {"N": N, "B": B, "T": T}
    row["floor_ms"], _ = timed(floor, device, reps=reps)
    del dz
    if device.type == "cuda":
        torch.cuda.empty_cache()
    row["ours_ms"], row["ours_extra_GiB"] = timed(run(ours), device, reps=reps)
    ours_grads = (hidden.grad.clone(), weight.grad.clone())
    ours_loss = ours().detach()
    try:
        row["naive_ms"], row["naive_extra_GiB"] = timed(run(naive), device, reps=reps)
        naive_loss_v = naive().detach()
        row["rel_err_loss"] = rel(ours_loss, naive_loss_v)
        row["rel_err_grad_hidden"] = rel(ours_grads[0], hidden.grad)
        row["rel_err_grad_weight"] = rel(ours_grads[1], weight.grad)
    except torch.OutOfMemoryError:
        row["naive_ms"] = None
    with torch.no_grad():
        row["logprobs_ms"], _ = timed(lambda: fused_logprobs(hidden, weight, targets), device, reps=reps)
        row["one_product_ms"], _ = timed(lambda: torch.mm(h2, weight.detach().t()), device, reps=reps)
    row["ours_vs_floor"] = row["ours_ms"] / row["floor_ms"]
    row["logprobs_vs_product"] = row["logprobs_ms"] / row["one_product_ms"]
    row["ours_TFLOPs"] = 6 * N * H * V / row["ours_ms"] / 1e9
    grads_GiB = (hidden.numel() + weight.numel()) * hidden.element_size() / 2**30
    for k in ("ours_extra_GiB", "naive_extra_GiB"):  # peak beyond inputs, minus the gradients themselves
        if row.get(k) is not None:
            row[k] = max(0.0, row[k] - grads_GiB)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes on CPU")
    ap.add_argument("--big", action="store_true", help="also N = 32768")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "loss.json"))
    args = ap.parse_args()
    if args.quick:
        device, dtype, H, V, Ns, reps = torch.device("cpu"), torch.float32, 64, 1000, [256, 512], 3
    else:
        if not torch.cuda.is_available():
            raise SystemExit("bench_loss.py needs a CUDA GPU (or --quick for the CPU smoke run)")
        device, dtype, H, V, reps = torch.device("cuda"), torch.bfloat16, 4096, 151936, 10
        Ns = [4096, 8192, 16384] + ([32768] if args.big else [])
    info = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "H": H, "V": V,
            "dtype": str(dtype), "implementation": "chunked torch (relate_fast.loss)"}
    print(json.dumps(info))
    rows = []
    for N in Ns:
        r = bench(N, H, V, device, dtype, reps)
        rows.append(r)
        print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
