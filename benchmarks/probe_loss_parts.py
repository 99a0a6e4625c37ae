"""Times each stage of one chunk of the fused GRPO loss on a GPU, to see where the time over the
three-product floor goes (benchmarks/NOTES_loss.md records the readings).

    python benchmarks/probe_loss_parts.py [--chunk 2048] [--H 4096] [--V 151936]

Stages of one chunk of C tokens: logits product with bf16 vs fp32 output, row_stats (one read of the
fp32 logits), row_dlogits (a read + a half-width write in place), dh product, dW product as a fresh
mm vs an accumulating addmm_, plus a device-to-device copy of the logits for the bandwidth ceiling.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_loss import timed  # noqa: E402
from relate_fast.kernels.grpo_loss import dlogits_buffer, row_dlogits, row_stats  # noqa: E402


def bench(fn, reps=20):
    """Median CUDA-event milliseconds (the timing loop of bench_loss.py)."""
    return timed(fn, torch.device("cuda"), reps=reps)[0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--chunk", type=int, default=2048)
    ap.add_argument("--H", type=int, default=4096)
    ap.add_argument("--V", type=int, default=151936)
    args = ap.parse_args()
    C, H, V = args.chunk, args.H, args.V
    dev = torch.device("cuda")
    g = torch.Generator(device=dev).manual_seed(0)
    h = (torch.randn(C, H, device=dev, generator=g) * 0.5).bfloat16()
    w = (torch.randn(V, H, device=dev, generator=g) / H**0.5).bfloat16()
    t = torch.randint(0, V, (C,), device=dev, generator=g)
    gl = torch.randn(C, device=dev, generator=g) * 1e-3
    z = torch.empty(C, V, device=dev)
    zc = torch.empty_like(z)
    gw = torch.zeros(V, H, device=dev, dtype=torch.bfloat16)
    gh = torch.empty(C, H, device=dev, dtype=torch.bfloat16)
    torch.mm(h, w.t(), out_dtype=torch.float32, out=z)
    lse, _, _ = row_stats(z, t, 1.0, False)
    dz16 = torch.randn(C, V, device=dev, generator=g).bfloat16()
    gb = C * V * 4 / 1e9
    r = {"C": C, "H": H, "V": V, "device": torch.cuda.get_device_name()}
    r["logits_bf16_out_ms"] = bench(lambda: torch.mm(h, w.t()))
    r["logits_fp32_out_ms"] = bench(lambda: torch.mm(h, w.t(), out_dtype=torch.float32, out=z))
    r["row_stats_ms"] = bench(lambda: row_stats(z, t, 1.0, False))
    r["row_stats_entropy_ms"] = bench(lambda: row_stats(z, t, 1.0, True))

    def dl():
        torch.mm(h, w.t(), out_dtype=torch.float32, out=z)  # restore z (dlogits overwrites it)
        row_dlogits(z, t, lse, gl, 1.0, dlogits_buffer(z, torch.bfloat16))
    r["logits_fp32_plus_dlogits_ms"] = bench(dl)
    r["dlogits_ms"] = r["logits_fp32_plus_dlogits_ms"] - r["logits_fp32_out_ms"]
    dz = dlogits_buffer(z, torch.bfloat16)
    r["dh_strided_ms"] = bench(lambda: torch.mm(dz, w, out=gh))
    r["dh_contiguous_ms"] = bench(lambda: torch.mm(dz16, w, out=gh))
    r["dw_mm_ms"] = bench(lambda: torch.mm(dz.t(), h, out=gw))
    r["dw_addmm_ms"] = bench(lambda: gw.addmm_(dz.t(), h))
    r["dw_addmm_contiguous_ms"] = bench(lambda: gw.addmm_(dz16.t(), h))
    r["copy_fp32_logits_ms"] = bench(lambda: zc.copy_(z))
    r["copy_GBps"] = 2 * gb / r["copy_fp32_logits_ms"] * 1e3
    r["row_stats_GBps"] = gb / r["row_stats_ms"] * 1e3
    r["dlogits_GBps"] = 1.5 * gb / r["dlogits_ms"] * 1e3
    flop = 2 * C * H * V
    for k in ("logits_bf16_out_ms", "logits_fp32_out_ms", "dh_strided_ms", "dw_mm_ms", "dw_addmm_ms"):
        r[k.replace("_ms", "_TFLOPs")] = flop / r[k] / 1e9
    three = r["logits_bf16_out_ms"] + r["dh_contiguous_ms"] + r["dw_mm_ms"]
    ours = r["logits_fp32_out_ms"] + r["row_stats_ms"] + r["dlogits_ms"] + r["dh_strided_ms"] + r["dw_addmm_ms"]
    r["chunk_floor_ms"], r["chunk_ours_ms"], r["chunk_ratio"] = three, ours, ours / three
    # tile sweep of the two row kernels (the defaults are BLOCK_V 2048, 8 warps)
    sweep = {}
    for bv in (1024, 2048, 4096, 8192):
        for nw in (4, 8, 16):
            if bv // (32 * nw) < 4:
                continue
            torch.mm(h, w.t(), out_dtype=torch.float32, out=z)  # fresh logits (dlogits wrote over them)
            st = bench(lambda: row_stats(z, t, 1.0, False, block_v=bv, num_warps=nw))
            buf = dlogits_buffer(z, torch.bfloat16)
            dlg = bench(lambda: row_dlogits(z, t, lse, gl, 1.0, buf, block_v=bv, num_warps=nw))
            sweep[f"{bv}x{nw}"] = [round(st, 3), round(dlg, 3)]
    r["row_kernel_sweep_ms_stats_dlogits"] = sweep
    print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in r.items()}, indent=1))


if __name__ == "__main__":
    main()
