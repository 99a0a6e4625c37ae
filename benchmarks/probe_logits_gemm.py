"""Probe of one chunk of the loss at Qwen3-8B's head (H = 4096, V = 151,936, bf16) on a GPU: the fp32
path's stages (cuBLAS logits in fp32, row statistics, dlogits) against the epilogue GEMM of
relate_fast.kernels.logits_gemm (each tile config), plus the backward's weight-sized rescale.

    python benchmarks/probe_logits_gemm.py --out probe.json

Times: CUDA events, the variants interleaved rep by rep, median of --reps. Correctness: lse and the
target logit of every config against torch's fp32-output product on the same bf16 operands.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from relate_fast.kernels import logits_gemm as lg  # noqa: E402
from relate_fast.kernels.grpo_loss import dlogits_buffer, row_dlogits, row_stats  # noqa: E402


def interleaved(fns: dict, reps: int, warmup: int = 2) -> dict:
    for f in fns.values():
        for _ in range(warmup):
            f()
    torch.cuda.synchronize()
    ts = {k: [] for k in fns}
    for _ in range(reps):
        for k, f in fns.items():
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            f()
            b.record()
            torch.cuda.synchronize()
            ts[k].append(a.elapsed_time(b))
    return {k: sorted(v)[len(v) // 2] for k, v in ts.items()}


def profile_call(N: int, H: int, V: int, path: str) -> list:
    """Per-kernel GPU time of one fused_grpo_loss forward+backward at N tokens (torch.profiler, the
    third of three calls), grouped by kernel name: where the time over the floor goes."""
    import os

    from relate_fast import fused_grpo_loss

    os.environ["RELATE_FAST_LOGITS"] = path
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(1)
    hidden = (torch.randn(N // 512, 512, H, device=dev, generator=g) * 0.5).to(torch.bfloat16).requires_grad_()
    weight = (torch.randn(V, H, device=dev, generator=g) / H**0.5).to(torch.bfloat16).requires_grad_()
    targets = torch.randint(0, V, (N // 512, 512), device=dev, generator=g)
    mask = torch.rand(N // 512, 512, device=dev, generator=g) > 0.1
    adv = torch.randn(N // 512, device=dev, generator=g)
    # old near the current log-probs, as in training: few clipped tokens (random old values would zero
    # half the rows of dlogits, which makes the gradient products unrealistically fast)
    from relate_fast import fused_logprobs

    old = fused_logprobs(hidden.detach(), weight.detach(), targets) + 0.05 * torch.randn(
        N // 512, 512, device=dev, generator=g)

    def call():
        hidden.grad = weight.grad = None
        fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old)[0].backward()

    def ev_ms(f, n=7):  # median wall time of f by CUDA events, the GPU idle before each
        ts = []
        for _ in range(n):
            torch.cuda.synchronize()
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            f()
            b.record()
            torch.cuda.synchronize()
            ts.append(a.elapsed_time(b))
        return sorted(ts)[n // 2]

    for _ in range(2):
        call()
    # the call's wall time, to set beside the sum of its kernels
    rows = [("(wall time of the call by CUDA events, median of 7)", 7, ev_ms(call))]

    def fwd_only():  # the gradients are computed in the forward pass: this is the call less its backward
        hidden.grad = weight.grad = None
        fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old)

    tiny = [x[:1, :16] for x in (hidden.detach(), targets, mask, old)]
    th = tiny[0].clone().requires_grad_()

    def tiny_call():
        th.grad = weight.grad = None
        fused_grpo_loss(th, weight, tiny[1], tiny[2], adv[:1], old_logprobs=tiny[3])[0].backward()
    rows.append(("(wall: forward only, ms)", 1, ev_ms(fwd_only)))
    # the CPU's time from the call to the launch of its first product (the GPU idles until then)
    from relate_fast.loss import chunked

    launched = []
    stage_cls = chunked.LOGITS_PATHS[path]
    orig = stage_cls.stats

    def stats_timed(self, *a, **k):
        launched.append(time.perf_counter())
        return orig(self, *a, **k)
    stage_cls.stats = stats_timed
    pre = []
    for _ in range(5):
        hidden.grad = weight.grad = None
        torch.cuda.synchronize()
        launched.clear()
        t0 = time.perf_counter()
        loss = fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old)[0]
        pre.append((launched[0] - t0) * 1e3)
        loss.backward()
    stage_cls.stats = orig
    rows.append(("(CPU: call start -> first product launched, ms, median of 5)", 1, sorted(pre)[2]))
    x = torch.zeros((), device=dev)
    syncs = []
    for _ in range(20):  # what reading one scalar back costs with the GPU idle (the backward's sync)
        x.add_(1.0)
        t0 = time.perf_counter()
        float(x)
        syncs.append((time.perf_counter() - t0) * 1e3)
    rows.append(("(CPU: one scalar read back from an idle GPU, ms, median of 20)", 1, sorted(syncs)[10]))
    rows.append(("(wall: a 16-token call, forward+backward, ms)", 1, ev_ms(tiny_call)))
    # the CPU's own time by op in the 16-token call (a second profiler session: the first one's
    # start-up cost lands on whatever op comes first)
    for attempt in range(2):
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as cprof:
            tiny_call()
            torch.cuda.synchronize()
    for e in sorted(cprof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:10]:
        rows.append((f"(CPU self in the 16-token call: {e.key[:50]})", e.count, e.self_cpu_time_total / 1000))
    import cProfile
    import io
    import pstats

    pr = cProfile.Profile()
    pr.enable()
    for _ in range(5):
        tiny_call()
    torch.cuda.synchronize()
    pr.disable()
    buf = io.StringIO()
    pstats.Stats(pr, stream=buf).sort_stats("tottime").print_stats(8)
    print(f"-- cProfile of five 16-token calls, path {path}:\n" + "\n".join(buf.getvalue().splitlines()[6:20]), flush=True)
    for attempt in range(3):  # the last of three: profiler start-up and first-call costs left out
        hidden.grad = weight.grad = None
        loss = fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old)[0]
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as bprof:
            loss.backward()
        t_b = (time.perf_counter() - t0) * 1e3
    rows.append(("(CPU: backward after the forward finished, profiled, ms)", 1, t_b))
    for e in sorted(bprof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:8]:
        rows.append((f"(CPU self in backward: {e.key[:50]})", e.count, e.self_cpu_time_total / 1000))
    hidden.grad = weight.grad = None
    loss = fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old)[0]
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    loss.backward()
    rows.append(("(CPU: backward after the forward finished, ms)", 1, (time.perf_counter() - t0) * 1e3))
    hidden.grad = weight.grad = None
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old)
    rows.append(("(CPU: forward call returns after, ms)", 1, (time.perf_counter() - t0) * 1e3))
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        call()
        torch.cuda.synchronize()
    # idle gaps on the GPU between consecutive kernels, largest first, with the kernels around them
    spans = sorted((k.time_range.start, k.time_range.end, k.name) for k in prof.events()
                   if getattr(k, "device_type", None) is not None and "CUDA" in str(k.device_type))
    gaps = sorted(((b[0] - a[1]) / 1000, a[2][:40], b[2][:40]) for a, b in zip(spans, spans[1:]))[::-1]
    for ms, before, after in gaps[:6]:
        rows.append((f"(gap after {before} / before {after})", 1, ms))
    rows.append(("(kernels span first start to last end, ms)", 1, (spans[-1][1] - spans[0][0]) / 1000 if spans else 0))
    head = len(rows)
    for e in prof.key_averages():
        t = getattr(e, "device_time_total", None) or getattr(e, "cuda_time_total", 0)
        if t > 0:
            rows.append((e.key[:90], e.count, t / 1000))
    return rows[:head] + sorted(rows[head:], key=lambda r: -r[2])


def launch_costs(H: int = 4096, V: int = 151936, C: int = 4096, n: int = 50) -> dict:
    """The CPU's microseconds per piece of the epilogue path's launches, with the GPU kept busy (so no
    piece waits on it): at the start of a call the GPU idles for as long as these take."""
    dev = torch.device("cuda")
    h = torch.randn(C, H, device=dev).bfloat16()
    W = (torch.randn(V, H, device=dev) / H**0.5).bfloat16()
    tgt = torch.randint(0, V, (C,), device=dev)
    p = torch.empty(C, V, device=dev, dtype=torch.bfloat16)
    zt = lg.target_logits(h, W, tgt, 1.0)
    BM, BN, BK = lg.CONFIGS[lg.DEFAULT_CONFIG["stats_and_probs"]][:3]
    pieces = {
        "torch.empty [C, n_vt] fp32": lambda: torch.empty(C, V // 256, device=dev),
        "TensorDescriptor.from_tensor": lambda: lg.TensorDescriptor.from_tensor(h, [BM, BK]),
        "get_device_properties": lambda: torch.cuda.get_device_properties(dev).multi_processor_count,
        "target_logits (launch)": lambda: lg.target_logits(h, W, tgt, 1.0),
        "logits_stats with P (launch)": lambda: lg.logits_stats(h, W, 1.0, False, p_out=p, ref=zt),
        "logits_stats, stats only (launch)": lambda: lg.logits_stats(h, W, 1.0, False),
        "cuBLAS mm (launch)": lambda: torch.mm(h, W.t(), out=p),
    }
    res = {}
    for name, f in pieces.items():
        f()
        torch.cuda.synchronize()
        busy = torch.empty(8192, 8192, device=dev, dtype=torch.bfloat16)
        for _ in range(6):  # ~tens of ms of queued work: the launches below never wait
            torch.mm(busy, busy)
        ts = []
        for _ in range(n):
            t0 = time.perf_counter()
            f()
            ts.append((time.perf_counter() - t0) * 1e6)
        torch.cuda.synchronize()
        res[name] = sorted(ts)[n // 2]
        print(f"  launch {name}: {res[name]:.1f} us", flush=True)
    return res


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chunks", default="2048,4096")
    ap.add_argument("--configs", default=",".join(lg.CONFIGS))
    ap.add_argument("--reps", type=int, default=15)
    ap.add_argument("--launch-only", action="store_true", help="only the CPU cost of the launches")
    ap.add_argument("--profile", type=int, default=0, help="also profile one loss call at this many tokens")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "probe_logits_gemm.json"))
    args = ap.parse_args()
    from benchmarks.common import provenance

    dev = torch.device("cuda")
    H, V = 4096, 151936
    g = torch.Generator(device=dev).manual_seed(0)
    W = (torch.randn(V, H, device=dev, generator=g) / H**0.5).to(torch.bfloat16)
    out = {"info": {**provenance(), "device": torch.cuda.get_device_name(), "H": H, "V": V}, "chunks": {}}
    print("== CPU cost of launches (median us)", flush=True)
    out["launch_us"] = launch_costs(H, V)
    if args.launch_only:
        print(json.dumps(out["launch_us"]))
        return
    for C in [int(c) for c in args.chunks.split(",")]:
        h = (torch.randn(C, H, device=dev, generator=g) * 0.5).to(torch.bfloat16)
        tgt = torch.randint(0, V, (C,), device=dev, generator=g)
        gv = torch.randn(C, device=dev, generator=g)
        z32 = torch.empty(C, V, device=dev)
        zb = torch.empty(C, V, device=dev, dtype=torch.bfloat16)
        pb = torch.empty(C, V, device=dev, dtype=torch.bfloat16)
        ref = torch.mm(h, W.t(), out_dtype=torch.float32)
        ref_lse = torch.logsumexp(ref.double(), 1)
        ref_zt = ref.gather(1, tgt[:, None]).squeeze(1).double()
        del ref
        res = {"flops_one_product": 2 * C * H * V}
        fns = {
            "cublas_bf16_out": lambda: torch.mm(h, W.t(), out=zb),
            "cublas_fp32_out": lambda: torch.mm(h, W.t(), out_dtype=torch.float32, out=z32),
            "fp32_path_stats": lambda: row_stats(torch.mm(h, W.t(), out_dtype=torch.float32, out=z32), tgt, 1.0, False),
            "epi_target_logits": lambda: lg.target_logits(h, W, tgt, 1.0),
        }
        for cfg in args.configs.split(","):
            try:  # a config that fails to compile or is wrong is reported, not fatal
                lg.logits_stats(h, W, 1.0, False, config=cfg)  # compiles the variant without P too
                zt = lg.target_logits(h, W, tgt, 1.0)
                lse, _, _ = lg.combine_stats(*lg.logits_stats(h, W, 1.0, False, p_out=pb, ref=zt, config=cfg))
                torch.cuda.synchronize()
                res[f"err_lse_{cfg}"] = ((lse.double() - ref_lse).abs().max()).item()
                res[f"err_zt_{cfg}"] = ((zt.double() - ref_zt).abs().max()).item()
                fns[f"epi_stats_{cfg}"] = lambda cfg=cfg: lg.combine_stats(*lg.logits_stats(h, W, 1.0, False,
                                                                                              config=cfg))
                fns[f"epi_stats_p_{cfg}"] = lambda cfg=cfg: lg.combine_stats(*lg.logits_stats(
                    h, W, 1.0, False, p_out=pb, ref=zt, config=cfg))
            except Exception as e:
                res[f"error_{cfg}"] = f"{type(e).__name__}: {str(e)[:300]}"
                print(f"# C={C} {cfg}: {res[f'error_{cfg}']}", flush=True)
        res.update(interleaved(fns, args.reps))
        # what stands between the statistics and the gradient products on each path (inputs from a real
        # forward): the fp32 path's dlogits pass; the epilogue path's per-row finish and rows scaling
        lse32, _, _ = row_stats(torch.mm(h, W.t(), out_dtype=torch.float32, out=z32), tgt, 1.0, False)
        cfg0 = next((c for c in args.configs.split(",") if f"epi_stats_p_{c}" in res), None)
        dl = {"fp32_path_dlogits": lambda: row_dlogits(z32, tgt, lse32, gv, 1.0, dlogits_buffer(z32, torch.bfloat16))}
        if cfg0:
            zt = lg.target_logits(h, W, tgt, 1.0)
            mp, sp, _ = lg.logits_stats(h, W, 1.0, False, p_out=pb, ref=zt, config=cfg0)
            lse_p, _, top = lg.combine_stats(mp, sp, None)
            dl["epi_finish_rows"] = lambda: lg.finish_rows(pb, mp, zt, top, lse_p, gv, tgt, 1.0, h, config=cfg0)
            s_rows = torch.randn(C, device=dev, generator=g)
            dl["epi_dh_product_fp32_out_scaled"] = lambda: torch.mm(pb, W, out_dtype=torch.float32).mul_(
                s_rows[:, None]).to(torch.bfloat16)
        dz = torch.randn(C, V, device=dev, generator=g).to(torch.bfloat16)
        gw = torch.empty_like(W)
        dl["dh_product"] = lambda: torch.mm(dz, W)
        dl["dw_product"] = lambda: torch.mm(dz.t(), h, out=gw)
        dl["dw_addmm"] = lambda: gw.addmm_(dz.t(), h)
        dl["weight_rescale"] = lambda: gw.mul_(1.0)
        res.update(interleaved(dl, args.reps))
        for k in list(res):
            if k.startswith(("cublas", "epi_stats")) and isinstance(res[k], float):
                res[k.replace("_out", "") + "_TFLOPs" if k.startswith("cublas") else k + "_TFLOPs"] = \
                    res["flops_one_product"] / res[k] / 1e9
        out["chunks"][C] = res
        print(f"== C = {C}", flush=True)
        for k, v in res.items():
            print(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}", flush=True)
        z32 = pb = zb = dz = gw = None  # not del: the lambdas above close over them
        torch.cuda.empty_cache()
    if args.profile:
        W = None
        torch.cuda.empty_cache()
        out["profile"] = {}
        for path in ("fp32", "epilogue"):
            rows = profile_call(args.profile, H, V, path)
            out["profile"][path] = rows
            kern = [r for r in rows if not r[0].startswith("(")]
            print(f"== profile N = {args.profile}, path {path}: {sum(r[2] for r in kern):.2f} ms of kernels", flush=True)
            for name, count, ms in [r for r in rows if r[0].startswith("(")] + kern[:8]:
                print(f"  {ms:8.3f} ms  x{count:<3d} {name}", flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
