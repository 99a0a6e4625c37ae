"""Triton row kernels of the fused GRPO loss: they turn one chunk of fp32 logits into log-sum-exp,
the target's logit (and entropy), and then into dlogits, written in place.

The chunked pass of relate_fast.loss works on `C` tokens at a time:

    z  = hidden[chunk] @ weight.T               cuBLAS, bf16 operands, fp32 out  [C, V] (the only vocab-sized buffer)
    lse, z_tgt, entropy = row_stats(z, ...)     this module: one read of z
    logp = z_tgt - lse; g = dL/dlogp            relate_fast.loss.objective.token_terms, on [C] vectors
    dz = g·(onehot - softmax(z))/T              this module: a second read of z, dz written over z in bf16
    grad_hidden[chunk] = dz @ weight            cuBLAS
    grad_weight       += dz.T @ hidden[chunk]   cuBLAS

so the only full passes are the three matrix products plus two reads and one half-width write of the
chunk's logits (benchmarks/NOTES_loss.md has the arithmetic and the measurements).

Why rows: the gradient of a row needs that row's log-sum-exp over the whole vocabulary, so logits
produced tile by tile must be kept (or recomputed with a fourth product) until it is known. This
module materialises one chunk in fp32 and streams over it twice (~10 bytes per logit). On Hopper
the loss instead uses relate_fast.kernels.logits_gemm, which keeps the statistics in the GEMM's
epilogue and the chunk as bf16 probabilities that the gradient products take as they are (2 bytes
per logit, no dlogits pass); this path is the fallback and the tests' reference.

In-place dlogits: for bf16/fp16 the kernel writes row r's dlogits into the first half of row r's
own fp32 storage (a [C, V] view with row stride 2V in 16-bit elements). Each row belongs to one
program walking left to right, and element j's 16-bit slot (byte 2j) lies at or before its fp32
value (byte 4j), so nothing is overwritten before it is read.

Numerics: one exp per logit in the online log-sum-exp (the branch-free update below), −inf start,
the target's logit read directly (no scan), and padded rows (g = 0) write zeros without touching
their logits, so garbage there can't make NaN.
"""
from __future__ import annotations


import torch
import triton
import triton.language as tl

from .launch import launch_opts, sm_count


@triton.jit
def _row_stats_kernel(Z_ptr, stride_z, T_ptr, LSE_ptr, ZT_ptr, ENT_ptr, V, inv_temp,
                      BLOCK_V: tl.constexpr, WANT_ENTROPY: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)  # int64: row * stride exceeds 2**31 at real sizes
    base = Z_ptr + row * stride_z
    # Each lane keeps its own running max m, Σe^(z-m) s and Σe^(z-m)·z t; lanes are combined once at
    # the end, so the loop has no cross-warp reductions and one exp per element:
    #   z > m:  s ← s·e^(m-z) + 1, t ← t·e^(m-z) + z, m ← z;   else  s ← s + e^(z-m), t ← t + e^(z-m)·z
    m = tl.full([BLOCK_V], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_V], tl.float32)
    t = tl.zeros([BLOCK_V], tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V)
        ok = cols < V
        z = tl.load(base + cols, mask=ok, other=float("-inf")).to(tl.float32) * inv_temp
        up = z > m
        lo = tl.where(up, m, z)
        hi = tl.where(up, z, m)
        # e = e^(lo-hi) ≤ 1; a lane's first element and masked lanes (z = -inf) give exactly 0, and
        # hi = -inf (a masked lane that has seen nothing) is replaced so that no -inf - -inf arises
        e = tl.exp(lo - tl.where(hi == float("-inf"), 0.0, hi))
        s = tl.where(up, s * e + 1.0, s + e)
        if WANT_ENTROPY:
            zs = tl.where(ok, z, 0.0)
            t = tl.where(up, t * e + zs, t + e * zs)
        m = tl.maximum(m, z)
    top = tl.max(m, axis=0)
    w = tl.exp(m - top)  # lanes that saw nothing: m = -inf, w = 0 (and s = 0)
    total = tl.sum(s * w, axis=0)
    lse = top + tl.log(total)
    tgt = tl.load(T_ptr + row).to(tl.int64)
    z_tgt = tl.load(base + tgt).to(tl.float32) * inv_temp
    tl.store(LSE_ptr + row, lse)
    tl.store(ZT_ptr + row, z_tgt)
    if WANT_ENTROPY:
        tl.store(ENT_ptr + row, lse - tl.sum(t * w, axis=0) / total)


@triton.jit
def _row_dlogits_kernel(Z_ptr, stride_z, DZ_ptr, stride_dz, T_ptr, LSE_ptr, G_ptr, V, inv_temp,
                        BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    zrow = Z_ptr + row * stride_z
    drow = DZ_ptr + row * stride_dz
    g = tl.load(G_ptr + row)
    lse = tl.load(LSE_ptr + row)
    tgt = tl.load(T_ptr + row).to(tl.int64)
    # dL/draw = dL/dz / T with dL/dz = g·(onehot - p); raw = h·Wᵀ is what the products see
    gs = g * inv_temp
    if g == 0.0:  # padding or a clipped token: zeros, and its logits are never read
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            tl.store(drow + cols, tl.zeros([BLOCK_V], tl.float32).to(DZ_ptr.dtype.element_ty), mask=cols < V)
    else:
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            ok = cols < V
            z = tl.load(zrow + cols, mask=ok, other=0.0).to(tl.float32) * inv_temp
            dz = tl.where(cols == tgt, gs, 0.0) - gs * tl.exp(z - lse)
            tl.store(drow + cols, dz.to(DZ_ptr.dtype.element_ty), mask=ok)


def _block_v(V: int) -> int:
    return max(16, min(2048, triton.next_power_of_2(V)))


def row_stats(z: torch.Tensor, targets: torch.Tensor, inv_temp: float, want_entropy: bool, *, block_v=None,
              num_warps=None):
    """z [C, V] fp32 raw logits (unit stride along V) -> (lse, z_tgt, entropy or None), fp32 [C],
    all of the scaled logits z·inv_temp. block_v / num_warps: tile overrides (benchmarks)."""
    C, V = z.shape
    lse = torch.empty(C, dtype=torch.float32, device=z.device)
    zt = torch.empty_like(lse)
    ent = torch.empty_like(lse) if want_entropy else lse
    if C:
        _row_stats_kernel[(C,)](z, z.stride(0), targets, lse, zt, ent, V, inv_temp, BLOCK_V=block_v or _block_v(V),
                                WANT_ENTROPY=want_entropy, **launch_opts(z.device, num_warps))
    return lse, zt, (ent if want_entropy else None)


def dlogits_buffer(z: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The [C, V] tensor of `dtype` that row_dlogits writes into: z itself for fp32, otherwise the first
    half of each fp32 row of z seen as 16-bit values (row stride 2V), so no second buffer is needed."""
    if dtype == torch.float32:
        return z
    if dtype not in (torch.bfloat16, torch.float16):
        raise TypeError(f"dlogits dtype must be float32, bfloat16 or float16, got {dtype}")
    C, V = z.shape
    return z.view(dtype)[:, :V]


def row_dlogits(z: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, g: torch.Tensor, inv_temp: float,
                out: torch.Tensor, *, block_v=None, num_warps=None) -> torch.Tensor:
    """dL/d(raw logits) = g·(onehot(target) - softmax(z·inv_temp))·inv_temp, written into `out` (from
    dlogits_buffer(z, dtype), which may alias z). Returns out."""
    C, V = z.shape
    if C:
        _row_dlogits_kernel[(C,)](z, z.stride(0), out, out.stride(0), targets, lse, g, V, inv_temp,
                                  BLOCK_V=block_v or _block_v(V), **launch_opts(z.device, num_warps))
    return out


# n is not specialised on, and the grid size is read at run time: one compiled kernel serves every
# size (a constexpr grid size made every new micro-batch width a ~0.1 s compile, seen on an H100)
@triton.jit(do_not_specialize=["n"])
def _scale_unless_one_kernel(X_ptr, S_ptr, n, BLOCK: tl.constexpr):
    s = tl.load(S_ptr).to(tl.float32)
    if s != 1.0:  # every program reads the scalar and leaves at once when there is nothing to do
        for start in range(tl.program_id(0) * BLOCK, n, tl.num_programs(0) * BLOCK):
            offs = start + tl.arange(0, BLOCK)
            ok = offs < n
            x = tl.load(X_ptr + offs, mask=ok)
            tl.store(X_ptr + offs, (x.to(tl.float32) * s).to(X_ptr.dtype.element_ty), mask=ok)


def scale_unless_one_(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x *= scale in place (x contiguous, scale a one-element tensor), without reading scale back to
    the host: on CUDA a persistent kernel reads it and returns at once when it is 1 (the upstream
    gradient of loss.backward()), so neither a pass over x nor a host sync is paid for it."""
    if x.device.type != "cuda":
        return x.mul_(scale.to(x.dtype)) if float(scale) != 1.0 else x
    n = x.numel()
    if n:
        block = 4096
        progs = min(triton.cdiv(n, block), 4 * sm_count(x.device))
        _scale_unless_one_kernel[(progs,)](x, scale.reshape(1), n, BLOCK=block, num_warps=8)
    return x
