"""Benchmark of the GRPO loss at Qwen3-8B head shapes (H=4096, V=151,936, bf16), forward+backward.

    python benchmarks/bench_loss.py                 # on a CUDA GPU: N = 4096, 8192, 16384 (32768 with --big)
    python benchmarks/bench_loss.py --quick         # CPU smoke run at tiny shapes (what CI runs)

In one run, on the same inputs (random, never zeros), it times forward+backward of:
- floor: the three lm_head matrix products alone (logits = h·Wᵀ, dh = dz·W, dW = dzᵀ·h), bf16, dz real
  dlogits of the batch (floor_random: dz random, as in the tables before 2026-11-27);
- naive: torch GRPO math on materialised fp32 logits, autograd backward;
- relate_fast: `fused_grpo_loss` (backend "triton" on CUDA) by its fp32 logits path (cuBLAS products +
  Triton row kernels: "ours") and, on Hopper, its epilogue path (the Triton logits GEMM with the row
  statistics in its epilogue: "ours_epilogue"), and its recompute path (`recompute=True`, four products);
- cce: log-probs from cut-cross-entropy's `linear_cross_entropy(reduction="none")` + the same torch
  GRPO math (package cut-cross-entropy; its default gradient filtering is left on);
- liger: liger-kernel's `LigerFusedLinearGRPOLoss` (per-sequence advantages only);
- verl_triton, verl_torch: verl 0.9.1's fused log-prob kernels (its `use_fused_kernels` path, Triton and chunked
  torch backends) + the same torch GRPO math: verl's own loss path at its best, when verl is importable;
and, without grad, `fused_logprobs` against one product.

Each implementation's rep follows one of the floor's, and its ratio is to the floor's median from those
interleaved reps. Correctness in the same run: loss and both gradients of each implementation against an fp32
reference on the same bf16 inputs (logits and products in IEEE fp32, chunked). Times: median of
CUDA-event timings after warm-up. Memory: peak allocated during forward+backward beyond the inputs,
minus the two gradients themselves. Prints a table and writes JSON (--out).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relate_fast import fused_grpo_loss, fused_logprobs  # noqa: E402

EPS = 0.2
# implementations timed with other settings than the fp32 reference (β > 0, [B, T] advantages, dapo):
# the same kernels on other inputs, so their errors against it would mean nothing
VARIANTS = ("ours_epilogue_beta", "ours_epilogue_tokens_dapo")


def grpo_from_logp(logp, old, adv, mask):
    """The objective both anchors share with us: loss_type grpo, β = 0, [B] advantages."""
    ratio = torch.exp(logp - old)
    a = adv[:, None]
    per = -torch.minimum(ratio * a, ratio.clamp(1 - EPS, 1 + EPS) * a)
    m = mask.float()
    return ((per * m).sum(1) / m.sum(1).clamp(min=1)).mean()


def naive_loss(hidden, weight, targets, mask, adv, old):
    logits = (hidden @ weight.t()).float()
    logp = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    return grpo_from_logp(logp, old, adv, mask)


def fp32_reference(hidden, weight, targets, mask, adv, old, chunk=1024):
    """Loss and gradients in IEEE fp32 from the (bf16) inputs, chunked so it fits; plain torch."""
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        B, T, H = hidden.shape
        h = hidden.detach().reshape(-1, H).float()
        w = weight.detach().float()
        t = targets.reshape(-1)
        logp = torch.empty(h.shape[0], device=h.device)
        for s in range(0, h.shape[0], chunk):
            z = h[s:s + chunk] @ w.t()
            logp[s:s + chunk] = z.gather(1, t[s:s + chunk, None]).squeeze(1) - torch.logsumexp(z, 1)
        lp = logp.view(B, T).requires_grad_(True)
        loss = grpo_from_logp(lp, old, adv, mask)
        loss.backward()
        gl = lp.grad.reshape(-1)
        gh = torch.empty_like(h)
        gw = torch.zeros_like(w)
        for s in range(0, h.shape[0], chunk):
            z = h[s:s + chunk] @ w.t()
            dz = -torch.softmax(z, 1) * gl[s:s + chunk, None]
            dz.scatter_add_(1, t[s:s + chunk, None], gl[s:s + chunk, None])
            gh[s:s + chunk] = dz @ w
            gw += dz.t() @ h[s:s + chunk]
        return loss.detach(), gh.view(B, T, H), gw
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev


def on_path(path, fn):
    """fn run with the loss's logits path forced (RELATE_FAST_LOGITS), the previous setting restored."""
    def run():
        before = os.environ.get("RELATE_FAST_LOGITS")
        os.environ["RELATE_FAST_LOGITS"] = path
        try:
            return fn()
        finally:
            if before is None:
                os.environ.pop("RELATE_FAST_LOGITS", None)
            else:
                os.environ["RELATE_FAST_LOGITS"] = before
    return run


def epilogue_available(device) -> bool:
    from relate_fast.kernels import logits_gemm

    return device.type == "cuda" and logits_gemm.available(device)


def timed(fn, device, reset=lambda: None, warmup=3, reps=10, partner=None):
    """Median milliseconds of fn, and its peak memory (GiB) above what was allocated before it. With
    partner (the floor), each rep of fn follows one of partner, and partner's median comes third:
    the ratio of the two is then free of the drift between measurements taken apart (7 % seen)."""
    if device.type != "cuda":
        ts = []
        for i in range(warmup + reps):
            reset()
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                ts.append((time.perf_counter() - t0) * 1e3)
        return sorted(ts)[len(ts) // 2], 0.0, None
    for _ in range(warmup):
        reset()
        fn()
        if partner is not None:
            partner()
    torch.cuda.synchronize()
    ts, tp, peak = [], [], 0.0

    def event_ms(f):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        f()
        b.record()
        torch.cuda.synchronize()
        return a.elapsed_time(b)
    for _ in range(reps):
        if partner is not None:
            tp.append(event_ms(partner))
        reset()  # frees last run's gradients before the baseline is read
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        ts.append(event_ms(fn))
        peak = max(peak, (torch.cuda.max_memory_allocated() - base) / 2**30)
    med = lambda x: sorted(x)[len(x) // 2] if x else None  # noqa: E731
    return med(ts), peak, med(tp)


def rel(a, b):
    return ((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30)).item()


def anchors():
    out = {}
    try:
        from cut_cross_entropy import linear_cross_entropy

        def cce(hidden, weight, targets, mask, adv, old):
            B, T, H = hidden.shape
            ce = linear_cross_entropy(hidden.reshape(-1, H), weight, targets.reshape(-1), reduction="none", impl="cce")
            return grpo_from_logp(-ce.float().view(B, T), old, adv, mask)
        out["cce"] = cce
    except ImportError as e:
        print(f"# cce anchor not available: {e}")
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearGRPOLoss

        liger_mod = LigerFusedLinearGRPOLoss(beta=0.0, use_ref_model=False, loss_type="grpo", epsilon_low=EPS,
                                             epsilon_high=EPS)

        def liger(hidden, weight, targets, mask, adv, old):
            return liger_mod(hidden, weight, targets, mask, adv, old_per_token_logps=old)[0]
        out["liger"] = liger
    except ImportError as e:
        print(f"# liger anchor not available: {e}")
    out.update(verl_anchors())
    return out


def verl_anchors() -> dict:
    """verl 0.9.1's own fused log-prob paths (`model.use_fused_kernels`: the log-probs from the hidden states without
    the logits), each followed by the same torch GRPO math — what verl's actor runs at its best, so that ours can be
    set against the loss path a verl user has: its Triton kernel (`impl_backend=triton`) and its chunked torch one."""
    out = {}
    try:  # verl imports much at package level; an anchor that cannot load is skipped, not fatal
        from verl.utils.experimental.torch_functional import FusedLinearForPPO

        chunked = FusedLinearForPPO(chunk_size=512, impl_backend="torch")

        def verl_torch(hidden, weight, targets, mask, adv, old):
            logp, _entropy = chunked(hidden, weight, targets, 1.0)
            return grpo_from_logp(logp.float(), old, adv, mask)
        out["verl_torch"] = verl_torch
        from verl.utils.kernel.linear_cross_entropy import linear_cross_entropy

        def verl_triton(hidden, weight, targets, mask, adv, old):
            logp, _entropy = linear_cross_entropy(hidden, weight, targets, 1.0, "none")
            return grpo_from_logp(logp.float().view(targets.shape), old, adv, mask)
        out["verl_triton"] = verl_triton
    except Exception as e:  # noqa: BLE001
        print(f"# verl anchors not available: {type(e).__name__}: {e}")
    return out


def realistic_dlogits(h2, weight, targets, device, g, chunk=1024):
    """[N, V] dlogits of the kind the loss produces, in the weight's dtype: g·(onehot - softmax(z)), with
    g ~ N(0, 1)/N per token (the grpo weights' scale)."""
    N, V = h2.shape[0], weight.shape[0]
    dz = torch.empty(N, V, device=device, dtype=weight.dtype)
    gv = torch.randn(N, device=device, generator=g) / N
    with torch.no_grad():
        for s in range(0, N, chunk):
            z = (h2[s:s + chunk] @ weight.t()).float()
            p = torch.softmax(z, dim=1).neg_()
            p.scatter_add_(1, targets[s:s + chunk, None], torch.ones_like(p[:, :1]))
            dz[s:s + chunk] = (p * gv[s:s + chunk, None]).to(weight.dtype)
    return dz


def bench(N, H, V, device, dtype, reps, skip=(), chunks=()):
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
    row = {"N": N, "B": B, "T": T}
    grads_GiB = (hidden.numel() + weight.numel()) * hidden.element_size() / 2**30

    def reset():
        hidden.grad = None
        weight.grad = None

    # floor: the three products with the shapes (and dtype) of the loss's own. A product's speed can
    # depend on its data (zeros ran 13 % faster than random values on an H200 here), so the floor
    # takes real dlogits of this batch; the random-operand floor of the earlier tables is kept as
    # floor_random (on an H100, 2026-11-27, the two agreed within 1-2 %).
    h2 = hidden.detach().reshape(N, H)
    dz = realistic_dlogits(h2, weight.detach(), targets.reshape(N), device, g)

    def floor():
        torch.mm(h2, weight.detach().t())
        torch.mm(dz, weight.detach())
        torch.mm(dz.t(), h2)
    row["floor_ms"], _, _ = timed(floor, device, reps=reps)
    dz_random = torch.randn(N, V, device=device, generator=g).to(dtype)
    row["floor_random_ms"], _, _ = timed(lambda: (torch.mm(h2, weight.detach().t()), torch.mm(dz_random, weight.detach()),
                                                  torch.mm(dz_random.t(), h2)), device, reps=reps)
    dz_random = None
    ref = fp32_reference(hidden, weight, targets, mask, adv, old)

    impls = {
        "ours": on_path("fp32", lambda: fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old)[0]),
        "ours_recompute": on_path("fp32", lambda: fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old,
                                                                  recompute=True)[0]),
        "naive": lambda: naive_loss(hidden, weight, targets, mask, adv, old),
    }
    if epilogue_available(device):
        impls["ours_epilogue"] = on_path("epilogue", lambda: fused_grpo_loss(hidden, weight, targets, mask, adv,
                                                                             old_logprobs=old)[0])
        impls["ours_epilogue_beta"] = on_path("epilogue", lambda: fused_grpo_loss(
            hidden, weight, targets, mask, adv, old_logprobs=old, ref_logprobs=old - 0.05, beta=0.04)[0])
        adv_bt = adv[:, None] + 0.1 * torch.randn(B, T, device=device, generator=g)  # [B, T] advantages
        impls["ours_epilogue_tokens_dapo"] = on_path("epilogue", lambda: fused_grpo_loss(
            hidden, weight, targets, mask, adv_bt, old_logprobs=old, ref_logprobs=old - 0.05, beta=0.04,
            loss_type="dapo", eps_high=0.28)[0])
    for c in chunks:  # the loss's workspace is one chunk of logits: fewer tokens per chunk, less memory
        path = "epilogue" if epilogue_available(device) else "fp32"
        impls[f"ours_{path}_chunk{c}"] = on_path(path, lambda c=c: fused_grpo_loss(
            hidden, weight, targets, mask, adv, old_logprobs=old, chunk_size=c)[0])
    if device.type == "cuda":
        impls.update({k: (lambda f=f: f(hidden, weight, targets, mask, adv, old)) for k, f in anchors().items()})
    for name, loss_fn in impls.items():
        if name in skip:
            continue

        def f():
            loss_fn().backward()
        try:
            ms, peak, floor_ms = timed(f, device, reset=reset, reps=reps, partner=floor)
            row[f"{name}_ms"] = ms
            row[f"{name}_extra_GiB"] = max(0.0, peak - grads_GiB)
            row[f"{name}_floor_ms"] = floor_ms or row["floor_ms"]  # the floor interleaved with it (GPU)
            row[f"{name}_vs_floor"] = ms / row[f"{name}_floor_ms"]
            reset()
            if name in VARIANTS:  # a different objective from the reference's: timed, not compared
                continue
            loss = loss_fn()
            loss.backward()
            row[f"{name}_err_loss"] = rel(loss.detach(), ref[0])
            row[f"{name}_err_grad_hidden"] = rel(hidden.grad, ref[1])
            row[f"{name}_err_grad_weight"] = rel(weight.grad, ref[2])
        except Exception as e:  # an anchor that fails (OOM, compile error) is reported, not fatal
            row[f"{name}_error"] = f"{type(e).__name__}: {str(e)[:200]}"
            print(f"# {name} at N={N}: {row[f'{name}_error']}", flush=True)
        reset()
        if device.type == "cuda":
            torch.cuda.empty_cache()
    row["ours_TFLOPs"] = 6 * N * H * V / row["ours_ms"] / 1e9 if "ours_ms" in row else None

    dz = None  # frees it (floor() closes over the name, so not del)
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with torch.no_grad():
        product = lambda: torch.mm(h2, weight.detach().t())  # noqa: E731
        row["one_product_ms"], _, _ = timed(product, device, reps=reps)
        row["logprobs_ms"], row["logprobs_extra_GiB"], prod_ms = timed(
            on_path("fp32", lambda: fused_logprobs(hidden, weight, targets)), device, reps=reps, partner=product)
        row["logprobs_vs_product"] = row["logprobs_ms"] / (prod_ms or row["one_product_ms"])
        lp = on_path("fp32", lambda: fused_logprobs(hidden, weight, targets))()
        if epilogue_available(device):
            lp_epi = on_path("epilogue", lambda: fused_logprobs(hidden, weight, targets))
            row["logprobs_epilogue_ms"], row["logprobs_epilogue_extra_GiB"], prod_ms = timed(
                lp_epi, device, reps=reps, partner=product)
            row["logprobs_epilogue_vs_product"] = row["logprobs_epilogue_ms"] / (prod_ms or row["one_product_ms"])
            lp_e = lp_epi()
        ref_lp = fused_logprobs(hidden.float(), weight.float(), targets, backend="torch") if device.type != "cuda" \
            else None
        if device.type == "cuda":
            prev = torch.backends.cuda.matmul.allow_tf32
            torch.backends.cuda.matmul.allow_tf32 = False
            ref_lp = fused_logprobs(hidden.detach().float(), weight.detach().float(), targets, backend="torch")
            torch.backends.cuda.matmul.allow_tf32 = prev
        row["logprobs_err"] = rel(lp, ref_lp)
        if epilogue_available(device):
            row["logprobs_epilogue_err"] = rel(lp_e, ref_lp)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny shapes on CPU")
    ap.add_argument("--big", action="store_true", help="also N = 32768")
    ap.add_argument("--sizes", type=str, default=None, help="comma-separated N values (overrides the defaults)")
    ap.add_argument("--skip", type=str, default="", help="comma-separated implementations to skip, e.g. liger,naive")
    ap.add_argument("--reps", type=int, default=None, help="timed repetitions per measurement (default 10, 3 quick)")
    ap.add_argument("--hidden", type=int, default=None, help="hidden size (default 4096, Qwen3-8B; 2048 is Qwen3-1.7B)")
    ap.add_argument("--chunks", type=str, default="",
                    help="comma-separated chunk sizes (tokens per chunk) to time ours at besides its default: the "
                         "loss's extra memory is one chunk's logits, so this is its time against its memory")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "loss.json"))
    args = ap.parse_args()
    if args.quick:
        device, dtype, H, V, Ns, reps = torch.device("cpu"), torch.float32, 64, 1000, [256, 512], 3
    else:
        if not torch.cuda.is_available():
            raise SystemExit("bench_loss.py needs a CUDA GPU (or --quick for the CPU smoke run)")
        device, dtype, H, V, reps = torch.device("cuda"), torch.bfloat16, 4096, 151936, 10
        Ns = [4096, 8192, 16384] + ([32768] if args.big else [])
    if args.sizes:
        Ns = [int(x) for x in args.sizes.split(",")]
    H = args.hidden or H
    reps = args.reps or reps
    from benchmarks.common import provenance

    info = {**provenance(), "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu", "torch": torch.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "H": H, "V": V,
            "dtype": str(dtype), "backend": "triton" if device.type == "cuda" else "torch"}
    print(json.dumps(info), flush=True)
    rows = []
    for N in Ns:
        r = bench(N, H, V, device, dtype, reps, skip=set(filter(None, args.skip.split(","))),
                  chunks=[int(c) for c in args.chunks.split(",") if c])
        rows.append(r)
        print(json.dumps({k: (float(f"{v:.4g}") if isinstance(v, float) else v) for k, v in r.items()}), flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"info": info, "rows": rows}, indent=1))
    print_table(rows)
    print(f"wrote {args.out}")


def print_table(rows):
    names = ["floor", "ours", "ours_epilogue", "ours_epilogue_beta", "ours_epilogue_tokens_dapo", "ours_recompute",
             "naive", "cce", "liger", "verl_triton", "verl_torch"]
    chunked = {m.group(1): int(m.group(2)) for r in rows for k in r if (m := re.match(r"(ours_\w+_chunk(\d+))_ms$", k))}
    names += sorted(chunked, key=chunked.get)
    print("\nforward+backward, ms (× floor) [extra GiB] {rel. err loss / grad_h / grad_W vs fp32}")
    for r in rows:
        cells = []
        for n in names:
            if f"{n}_ms" in r:
                c = f"{n} {r[f'{n}_ms']:.1f}"
                if n != "floor":
                    c += f" ({r[f'{n}_vs_floor']:.2f}x of {r[f'{n}_floor_ms']:.1f}) [{r[f'{n}_extra_GiB']:.2f}]"
                    if f"{n}_err_loss" in r:
                        c += " {%.1e/%.1e/%.1e}" % (r[f"{n}_err_loss"], r[f"{n}_err_grad_hidden"],
                                                    r[f"{n}_err_grad_weight"])
                cells.append(c)
            elif f"{n}_error" in r:
                cells.append(f"{n} FAILED")
        print(f"N={r['N']}: " + " | ".join(cells))
        lp = f"  logprobs {r['logprobs_ms']:.2f} ms = {r['logprobs_vs_product']:.2f}x one product " \
             f"({r['one_product_ms']:.2f} ms), err {r['logprobs_err']:.1e}"
        print(lp)
        if "logprobs_epilogue_ms" in r:
            print(f"  logprobs (epilogue) {r['logprobs_epilogue_ms']:.2f} ms = {r['logprobs_epilogue_vs_product']:.2f}x "
                  f"(interleaved with the product), err {r['logprobs_epilogue_err']:.1e}")


if __name__ == "__main__":
    main()
