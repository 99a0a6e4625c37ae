"""The logits product with the row statistics in its epilogue (issue 18): one persistent Triton GEMM
z = hidden @ weight.T whose epilogue, while each [BM, BN] tile of fp32 logits is still in registers,
writes per tile and row the tile's max m, Σ e^(z-m) and Σ e^(z-m)·z (entropy), and (for the
gradient) the tile itself as fp16 `z - m`. The target's logit is a row-wise dot product beside it.
A small combine over the tiles gives the log-sum-exp and the entropy; dlogits are then formed from
the fp16 tile-relative logits.

Against the cuBLAS path (fp32 logits out, then relate_fast.kernels.grpo_loss's row kernels reading
them twice) this removes the separate statistics pass (one fp32 read of the chunk) and halves the
bytes that the logits write and the dlogits read move (fp16 instead of fp32).

Why fp16 of `z - m_tile` and not bf16 of z: dlogits need p = e^(z - lse) to the precision of the
bf16 gradient they become. Rounding z itself to bf16 would cost |z|·2^-9 in the exponent (8 % on the
probability of a logit of 40). Relative to its own tile's max, the values near the max (the ones
that carry probability) are small in magnitude, and fp16 has 3 more mantissa bits than bf16: the
error of p_j is |z_j - m_tile|·2^-11 relative, at most ~2e-4·e^(m_tile - lse) absolute.

Tile order: M fastest, so the programs running at once work on the same weight tile columns and
read each [BN, K] slice of the 1.2 GB weight from device memory once (the hidden chunk, 16-32 MB,
stays in L2). Needs Hopper-style tensor descriptors (Triton >= 3.4); under TRITON_INTERPRET=1 the
same kernel runs on the CPU, which is how CI tests it.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # Triton < 3.4: no fused path (chunked.py keeps the cuBLAS + row kernels path)
    TensorDescriptor = None

__all__ = ["available", "logits_stats", "combine_stats", "dlogits_from_tiles", "CONFIGS", "DEFAULT_CONFIG"]

# (BM, BN, BK, num_warps, num_stages, flatten, subtile); benchmarks/probe_logits_gemm.py sweeps these.
# H100, 2026-11-27, C = 2,048 and 4,096 at the 8B head (benchmarks/NOTES_loss.md): the flattened loop
# with the epilogue in two halves is fastest with the fp16 logits stored (651 TFLOP/s against 617-631
# for the other three; cuBLAS's bf16 product 714 on that machine) and as fast as any for the
# statistics alone (678). 4 stages of 128x256x64 exceed shared memory.
CONFIGS = {
    "128x256x64w8s3": (128, 256, 64, 8, 3, False, False),
    "128x256x64w8s3f": (128, 256, 64, 8, 3, True, False),
    "128x256x64w8s3s": (128, 256, 64, 8, 3, False, True),
    "128x256x64w8s3fs": (128, 256, 64, 8, 3, True, True),
    "256x128x64w8s3f": (256, 128, 64, 8, 3, True, False),
    "128x128x64w4s4": (128, 128, 64, 4, 4, False, False),
}
DEFAULT_CONFIG = {"stats": "128x256x64w8s3fs", "stats_and_logits": "128x256x64w8s3fs"}


def available(device: torch.device) -> bool:
    """The fused path runs on Hopper or newer with tensor descriptors, or under the interpreter."""
    if TensorDescriptor is None:
        return False
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device)[0] >= 9
    import os

    return os.environ.get("TRITON_INTERPRET", "0") == "1"


# The chunk's row count C varies with every micro-batch width: not specialised on, so that one
# compiled kernel serves them all (NUM_PROGRAMS is the SM count whenever the vocabulary has more
# tiles than that, as every real one does; on an H100 new widths had cost compiles of 0.1-2.5 s)
@triton.jit(do_not_specialize=["C"])
def _logits_stats_kernel(h_desc, w_desc, z_desc, MP_ptr, SP_ptr, TP_ptr,
                         C, V, K, inv_temp, n_vt,
                         BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, NUM_PROGRAMS: tl.constexpr,
                         STORE_Z: tl.constexpr, WANT_ENTROPY: tl.constexpr, FLATTEN: tl.constexpr,
                         SUBTILE: tl.constexpr):
    num_m = tl.cdiv(C, BM)
    num_tiles = num_m * n_vt
    k_tiles = tl.cdiv(K, BK)
    # FLATTEN lets the compiler pipeline the next tile's loads under this tile's epilogue
    for tile in tl.range(tl.program_id(0), num_tiles, NUM_PROGRAMS, flatten=FLATTEN):
        pid_m = tile % num_m
        pid_n = tile // num_m
        om = pid_m * BM
        on = pid_n * BN
        acc = tl.zeros((BM, BN), dtype=tl.float32)
        for ki in range(k_tiles):
            a = h_desc.load([om, ki * BK])
            b = w_desc.load([on, ki * BK])
            acc = tl.dot(a, b.T, acc)
        acc = acc * inv_temp
        rows = om + tl.arange(0, BM)
        row_ok = rows < C
        part = rows.to(tl.int64) * n_vt + pid_n
        if SUBTILE:
            # two halves of BN/2 columns: fewer live registers, and the first half's store is in
            # flight while the second half is worked on
            a0, a1 = tl.split(tl.permute(tl.reshape(acc, (BM, 2, BN // 2)), (0, 2, 1)))
            c0 = on + tl.arange(0, BN // 2)
            c1 = c0 + BN // 2
            z0 = tl.where((c0 < V)[None, :], a0, float("-inf"))
            z1 = tl.where((c1 < V)[None, :], a1, float("-inf"))
            m = tl.maximum(tl.max(z0, axis=1), tl.max(z1, axis=1))
            d0 = z0 - m[:, None]
            if STORE_Z:
                z_desc.store([om, on], d0.to(tl.float16))
            e0 = tl.exp(d0)
            d1 = z1 - m[:, None]
            if STORE_Z:
                z_desc.store([om, on + BN // 2], d1.to(tl.float16))
            e1 = tl.exp(d1)
            tl.store(MP_ptr + part, m, mask=row_ok)
            tl.store(SP_ptr + part, tl.sum(e0, axis=1) + tl.sum(e1, axis=1), mask=row_ok)
            if WANT_ENTROPY:
                t0 = tl.sum(e0 * tl.where((c0 < V)[None, :], a0, 0.0), axis=1)
                t1 = tl.sum(e1 * tl.where((c1 < V)[None, :], a1, 0.0), axis=1)
                tl.store(TP_ptr + part, t0 + t1, mask=row_ok)
        else:
            cols = on + tl.arange(0, BN)
            col_ok = cols < V
            z = tl.where(col_ok[None, :], acc, float("-inf"))
            m = tl.max(z, axis=1)  # finite: every tile has at least one column < V
            d = z - m[:, None]
            e = tl.exp(d)  # 0 on the columns past V
            tl.store(MP_ptr + part, m, mask=row_ok)
            tl.store(SP_ptr + part, tl.sum(e, axis=1), mask=row_ok)
            if WANT_ENTROPY:
                tl.store(TP_ptr + part, tl.sum(e * tl.where(col_ok[None, :], acc, 0.0), axis=1), mask=row_ok)
            if STORE_Z:
                z_desc.store([om, on], d.to(tl.float16))  # rows >= C, cols >= V clipped


@triton.jit
def _dlogits_from_tiles_kernel(Z_ptr, D_ptr, MP_ptr, T_ptr, LSE_ptr, G_ptr, V, n_vt, inv_temp,
                               BN: tl.constexpr, BLOCK_V: tl.constexpr):
    # D_ptr is Z_ptr's memory seen as the gradient's 16-bit type: each element is read, then overwritten
    row = tl.program_id(0).to(tl.int64)
    zrow = Z_ptr + row * V
    drow = D_ptr + row * V
    g = tl.load(G_ptr + row)
    lse = tl.load(LSE_ptr + row)
    tgt = tl.load(T_ptr + row).to(tl.int64)
    gs = g * inv_temp
    if g == 0.0:  # padding or a clipped token: zeros, and its logits are never read
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            tl.store(drow + cols, tl.zeros([BLOCK_V], tl.float32).to(D_ptr.dtype.element_ty), mask=cols < V)
    else:
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            ok = cols < V
            zr = tl.load(zrow + cols, mask=ok, other=float("-inf")).to(tl.float32)
            mt = tl.load(MP_ptr + row * n_vt + cols // BN, mask=ok, other=0.0)
            dz = tl.where(cols == tgt, gs, 0.0) - gs * tl.exp(zr + mt - lse)
            tl.store(drow + cols, dz.to(D_ptr.dtype.element_ty), mask=ok)


def _num_programs(device: torch.device, tiles: int) -> int:
    if device.type == "cuda":
        return min(tiles, torch.cuda.get_device_properties(device).multi_processor_count)
    return min(tiles, 4)


def logits_stats(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, inv_temp: float,
                 want_entropy: bool, z_out: Optional[torch.Tensor] = None, config: Optional[str] = None):
    """hidden [C, K] and weight [V, K], both bf16 or both fp16, contiguous; targets [C] int64.

    Returns (tile_max, tile_sum, tile_ezsum or None, z_tgt): per row and vocabulary tile of BN
    columns the max m of the scaled logits z = hidden·weightᵀ·inv_temp, Σ e^(z-m), Σ e^(z-m)·z, and
    [C] the target's scaled logit. With z_out ([C, V] fp16, contiguous) also writes z - m there."""
    C, K = hidden.shape
    V = weight.shape[0]
    config = config or DEFAULT_CONFIG["stats" if z_out is None else "stats_and_logits"]
    BM, BN, BK, warps, stages, flatten, subtile = CONFIGS[config]
    n_vt = triton.cdiv(V, BN)
    f32 = dict(dtype=torch.float32, device=hidden.device)
    mp = torch.empty(C, n_vt, **f32)
    sp = torch.empty(C, n_vt, **f32)
    tp = torch.empty(C, n_vt, **f32) if want_entropy else sp
    h_desc = TensorDescriptor.from_tensor(hidden, [BM, BK])
    w_desc = TensorDescriptor.from_tensor(weight, [BN, BK])
    z_desc = TensorDescriptor.from_tensor(z_out, [BM, BN // 2 if subtile else BN]) if z_out is not None else h_desc
    tiles = triton.cdiv(C, BM) * n_vt
    progs = _num_programs(hidden.device, tiles)
    opts = {"num_warps": warps, "num_stages": stages} if hidden.device.type == "cuda" else {}
    _logits_stats_kernel[(progs,)](h_desc, w_desc, z_desc, mp, sp, tp, C, V, K, inv_temp, n_vt,
                                   BM=BM, BN=BN, BK=BK, NUM_PROGRAMS=progs, STORE_Z=z_out is not None,
                                   WANT_ENTROPY=want_entropy, FLATTEN=flatten, SUBTILE=subtile, **opts)
    # The target's logit as a row-wise dot product beside the GEMM (C·K multiply-adds, 16 MB of weight
    # rows at C = 2,048), queued after it so that the GPU starts on the product at once: scanning
    # every tile for it cost a compare-select-sum per logit in the epilogue, and a branch around that
    # scan broke the flattened loop's compilation (Triton 3.6).
    zt = (hidden.float() * weight[targets].float()).sum(dim=1) * inv_temp
    return mp, sp, (tp if want_entropy else None), zt


def combine_stats(mp: torch.Tensor, sp: torch.Tensor, tp: Optional[torch.Tensor]):
    """(lse [C], entropy [C] or None) from the per-tile statistics of logits_stats."""
    top = mp.max(dim=1).values
    w = torch.exp(mp - top[:, None])
    total = (sp * w).sum(dim=1)
    lse = top + torch.log(total)
    ent = None if tp is None else lse - (tp * w).sum(dim=1) / total
    return lse, ent


def dlogits_from_tiles(z16: torch.Tensor, mp: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor,
                       g: torch.Tensor, inv_temp: float, dtype: torch.dtype, config: Optional[str] = None
                       ) -> torch.Tensor:
    """dL/d(raw logits) = g·(onehot - e^(z - lse))·inv_temp in `dtype` (bf16 or fp16), written over
    z16 (the fp16 `z - m_tile` of logits_stats); returns that view [C, V]."""
    C, V = z16.shape
    BN = CONFIGS[config or DEFAULT_CONFIG["stats_and_logits"]][1]
    dz = z16.view(dtype)
    if C:
        opts = {"num_warps": 8} if z16.device.type == "cuda" else {}
        _dlogits_from_tiles_kernel[(C,)](z16, dz, mp, targets, lse, g, V, mp.shape[1], inv_temp, BN=BN,
                                         BLOCK_V=max(BN, min(2048, triton.next_power_of_2(V))), **opts)
    return dz
