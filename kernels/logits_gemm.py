"""The logits product with the row statistics in its epilogue (issue 18): one persistent Triton GEMM
z = hidden @ weight.T whose epilogue, while each [BM, BN] tile of fp32 logits is still in registers,
writes per tile and row the tile's max m, Σ e^(z-m) and Σ e^(z-m)·z (entropy), and (for the
gradient) the tile itself as bf16 probabilities relative to a per-row reference, P = e^(z - c).
A small combine over the tiles gives the log-sum-exp and the entropy.

Why P = e^(z - c) with one reference c per row: the gradient of the raw logits is then a per-row
scalar times P, dz = s·P' with s = -(g/T)·e^(c - lse) and P' = P less e^(lse - c) at the target (one
element per row, set by `finish_rows`), so the two gradient products take P' as it is, from cuBLAS:

    grad_h = s ⊙ (P' @ W)          the rows of an fp32 [C, H] product scaled, then rounded once
    grad_W += P'ᵀ @ (s ⊙ h)        the [C, H] hidden chunk scaled first

and no pass over the [C, V] chunk forms dlogits (0.9 ms per 4,096 tokens at Qwen3-8B's head on an
H100, at bandwidth). The price: s ⊙ h is rounded to bf16 before its product, where dlogits were
rounded once, so grad_W's error is ~1.2× the fp32 path's (2.9-3.1e-3 against 2.4-2.6e-3). The reference must be known before the GEMM, so it is the target's own logit
c = z_tgt, a row-wise dot product (`target_logits`) queued just before the GEMM. Then P ≤ 1/p_tgt:
no underflow where probability is (c ≤ lse), and overflow only for rows whose target is far less
likely than the top logit. The epilogue caps P at e^CAP, i.e. uses r_t = max(c, m_t - CAP) per tile,
and finish_rows brings such rare rows (top - z_tgt > CAP) to one reference c' = max(c, top - CAP)
by rescaling their tiles. CAP = 30 keeps the scaled hidden rows s ⊙ h well inside bf16's range (s ≥
(g/T)·e^(-CAP - ln V)). bf16 only: fp16's range (e^±11) is too short for P; fp16 and other dtypes
take the fp32 path (relate_fast.loss.rows.resolve_logits_path).

Tile order: M fastest, so the programs running at once work on the same weight tile columns and
read each [BN, K] slice of the 1.2 GB weight from device memory once (the hidden chunk, 16-32 MB,
stays in L2). Needs Hopper-style tensor descriptors (Triton >= 3.4); under TRITON_INTERPRET=1 the
same kernels run on the CPU (the GEMM then multiplies in fp32: the interpreter's bf16 dot product is
wrong, errors of 1e10 on a 16 × 16 product with Triton 3.9), which is how CI tests them.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from .launch import capability, interpreting, launch_opts, sm_count

try:
    from triton.tools.tensor_descriptor import TensorDescriptor
except ImportError:  # Triton < 3.4: no fused path (chunked.py keeps the cuBLAS + row kernels path)
    TensorDescriptor = None

__all__ = ["available", "target_logits", "logits_stats", "combine_stats", "finish_rows", "CAP", "CONFIGS",
           "DEFAULT_CONFIG"]

# (BM, BN, BK, num_warps, num_stages, flatten, subtile); benchmarks/probe_logits_gemm.py sweeps these.
# H100, 2026-11-27, C = 2,048 and 4,096 at the 8B head (benchmarks/NOTES_loss.md): the flattened loop
# with the epilogue in two halves is fastest with the logits tile stored (651 TFLOP/s against 617-631
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
DEFAULT_CONFIG = {"stats": "128x256x64w8s3fs", "stats_and_probs": "128x256x64w8s3fs"}
# P = e^(z - r) ≤ e^CAP (see the module's docstring)
CAP = 30.0


def available(device: torch.device) -> bool:
    """The fused path runs on Hopper or newer with tensor descriptors, or under the interpreter."""
    if TensorDescriptor is None:
        return False
    if device.type == "cuda":
        return capability(device)[0] >= 9
    return interpreting()


@triton.jit
def _target_logits_kernel(H_ptr, stride_h, W_ptr, stride_w, T_ptr, ZT_ptr, K, inv_temp, BLOCK_K: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    tgt = tl.load(T_ptr + row).to(tl.int64)
    acc = tl.zeros([BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        cols = k0 + tl.arange(0, BLOCK_K)
        ok = cols < K
        h = tl.load(H_ptr + row * stride_h + cols, mask=ok, other=0.0).to(tl.float32)
        w = tl.load(W_ptr + tgt * stride_w + cols, mask=ok, other=0.0).to(tl.float32)
        acc += h * w
    tl.store(ZT_ptr + row, tl.sum(acc, axis=0) * inv_temp)


# The chunk's row count C varies with every micro-batch width: not specialised on, so that one
# compiled kernel serves them all (NUM_PROGRAMS is the SM count whenever the vocabulary has more
# tiles than that, as every real one does; on an H100 new widths had cost compiles of 0.1-2.5 s)
@triton.jit(do_not_specialize=["C"])
def _logits_stats_kernel(h_desc, w_desc, p_desc, REF_ptr, MP_ptr, SP_ptr, TP_ptr,
                         C, V, K, inv_temp, n_vt,
                         BM: tl.constexpr, BN: tl.constexpr, BK: tl.constexpr, NUM_PROGRAMS: tl.constexpr,
                         STORE_P: tl.constexpr, WANT_ENTROPY: tl.constexpr, FLATTEN: tl.constexpr,
                         SUBTILE: tl.constexpr, CAP: tl.constexpr, DOT_F32: tl.constexpr):
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
            if DOT_F32:  # the interpreter (see the module's docstring)
                a = a.to(tl.float32)
                b = b.to(tl.float32)
            acc = tl.dot(a, b.T, acc)
        acc = acc * inv_temp
        rows = om + tl.arange(0, BM)
        row_ok = rows < C
        part = rows.to(tl.int64) * n_vt + pid_n
        if STORE_P:
            ref = tl.load(REF_ptr + rows, mask=row_ok, other=0.0)
        if SUBTILE:
            # two halves of BN/2 columns: fewer live registers, and the first half's store is in
            # flight while the second half is worked on
            a0, a1 = tl.split(tl.permute(tl.reshape(acc, (BM, 2, BN // 2)), (0, 2, 1)))
            c0 = on + tl.arange(0, BN // 2)
            c1 = c0 + BN // 2
            z0 = tl.where((c0 < V)[None, :], a0, float("-inf"))
            z1 = tl.where((c1 < V)[None, :], a1, float("-inf"))
            m = tl.maximum(tl.max(z0, axis=1), tl.max(z1, axis=1))
            e0 = tl.exp(z0 - m[:, None])
            if STORE_P:
                f = tl.exp(tl.minimum(m - ref, CAP))  # e^(m - r): P = e^(z - m)·e^(m - r)
                p_desc.store([om, on], (e0 * f[:, None]).to(tl.bfloat16))
            e1 = tl.exp(z1 - m[:, None])
            if STORE_P:
                p_desc.store([om, on + BN // 2], (e1 * f[:, None]).to(tl.bfloat16))
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
            e = tl.exp(z - m[:, None])  # 0 on the columns past V
            tl.store(MP_ptr + part, m, mask=row_ok)
            tl.store(SP_ptr + part, tl.sum(e, axis=1), mask=row_ok)
            if WANT_ENTROPY:
                tl.store(TP_ptr + part, tl.sum(e * tl.where(col_ok[None, :], acc, 0.0), axis=1), mask=row_ok)
            if STORE_P:  # rows >= C, cols >= V clipped by the descriptor
                f = tl.exp(tl.minimum(m - ref, CAP))
                p_desc.store([om, on], (e * f[:, None]).to(tl.bfloat16))


@triton.jit
def _combine_stats_kernel(MP_ptr, SP_ptr, TP_ptr, LSE_ptr, ENT_ptr, TOP_ptr, n_vt,
                          BLOCK: tl.constexpr, WANT_ENTROPY: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    ok = cols < n_vt
    m = tl.load(MP_ptr + row * n_vt + cols, mask=ok, other=float("-inf"))
    top = tl.max(m, axis=0)
    w = tl.exp(m - top)  # 0 past n_vt
    total = tl.sum(tl.load(SP_ptr + row * n_vt + cols, mask=ok, other=0.0) * w, axis=0)
    lse = top + tl.log(total)
    tl.store(LSE_ptr + row, lse)
    tl.store(TOP_ptr + row, top)
    if WANT_ENTROPY:
        t = tl.sum(tl.load(TP_ptr + row * n_vt + cols, mask=ok, other=0.0) * w, axis=0)
        tl.store(ENT_ptr + row, lse - t / total)


@triton.jit
def _finish_rows_kernel(P_ptr, MP_ptr, ZT_ptr, TOP_ptr, LSE_ptr, G_ptr, T_ptr, H_ptr, stride_h,
                        S_ptr, SH_ptr, V, K, n_vt, inv_temp, CAP: tl.constexpr, BN: tl.constexpr,
                        BLOCK_V: tl.constexpr, BLOCK_K: tl.constexpr, WANT_SH: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    prow = P_ptr + row * V
    c = tl.load(ZT_ptr + row)  # the reference the epilogue was given: the target's logit
    lse = tl.load(LSE_ptr + row)
    g = tl.load(G_ptr + row)
    cn = tl.maximum(c, tl.load(TOP_ptr + row) - CAP)  # the row's one reference c'
    s = tl.where(g == 0.0, 0.0, -g * inv_temp * tl.exp(cn - lse))
    if g == 0.0:  # padding or a clipped token: s = 0, and the row must be finite for 0·P to be 0
        finite = ((tl.abs(lse) < float("inf")) & (tl.abs(c) < float("inf"))).to(tl.int32)  # 0 for NaN too
        if finite == 0:
            for v0 in range(0, V, BLOCK_V):
                cols = v0 + tl.arange(0, BLOCK_V)
                tl.store(prow + cols, tl.zeros([BLOCK_V], tl.float32).to(tl.bfloat16), mask=cols < V)
    else:
        # the one-hot term folded into the target's element: s·P'_tgt = (g/T)·(1 - p_tgt)
        tgt = tl.load(T_ptr + row).to(tl.int64)
        p_tgt = tl.exp(c - cn) - tl.exp(lse - cn)
        if cn > c:  # a row whose top logit is more than CAP above its target's: one reference for all tiles
            for v0 in range(0, V, BLOCK_V):
                cols = v0 + tl.arange(0, BLOCK_V)
                ok = cols < V
                mt = tl.load(MP_ptr + row * n_vt + cols // BN, mask=ok, other=0.0)
                r = tl.maximum(c, mt - CAP)  # the reference the epilogue used for this tile
                p = tl.load(prow + cols, mask=ok, other=0.0).to(tl.float32) * tl.exp(r - cn)
                # the target's element in the same store: a second store to it from another thread of
                # this program would race with this one (no ordering between warps; seen on an H100)
                tl.store(prow + cols, tl.where(cols == tgt, p_tgt, p).to(tl.bfloat16), mask=ok)
        else:
            tl.store(prow + tgt, p_tgt.to(tl.bfloat16))
    tl.store(S_ptr + row, s)
    if WANT_SH:
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            ok = cols < K
            h = tl.load(H_ptr + row * stride_h + cols, mask=ok, other=0.0).to(tl.float32)
            sh = tl.where(s == 0.0, 0.0, h * s)  # a padded row's hidden may hold anything
            tl.store(SH_ptr + row * K + cols, sh.to(SH_ptr.dtype.element_ty), mask=ok)


def _num_programs(device: torch.device, tiles: int) -> int:
    return min(tiles, sm_count(device) if device.type == "cuda" else 4)


def target_logits(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, inv_temp: float
                  ) -> torch.Tensor:
    """[C] fp32: the target's scaled logit (hidden·weight[target])·inv_temp of each row, one launch."""
    C, K = hidden.shape
    zt = torch.empty(C, dtype=torch.float32, device=hidden.device)
    if C:
        _target_logits_kernel[(C,)](hidden, hidden.stride(0), weight, weight.stride(0), targets, zt, K, inv_temp,
                                    BLOCK_K=min(1024, triton.next_power_of_2(K)), **launch_opts(hidden.device, 4))
    return zt


def logits_stats(hidden: torch.Tensor, weight: torch.Tensor, inv_temp: float, want_entropy: bool,
                 p_out: Optional[torch.Tensor] = None, ref: Optional[torch.Tensor] = None,
                 config: Optional[str] = None):
    """hidden [C, K] and weight [V, K], both bf16 or both fp16, contiguous along K.

    Returns (tile_max, tile_sum, tile_ezsum or None): per row and vocabulary tile of BN columns the
    max m of the scaled logits z = hidden·weightᵀ·inv_temp, Σ e^(z-m) and Σ e^(z-m)·z. With p_out
    ([C, V] bf16, contiguous) and ref ([C] fp32, the row's reference c, finite) it also writes
    P = e^(z - max(c, m - CAP)) there."""
    C, K = hidden.shape
    V = weight.shape[0]
    store = p_out is not None
    if store and (ref is None or p_out.dtype != torch.bfloat16):
        raise ValueError("logits_stats: p_out must be bf16 and comes with ref")
    config = config or DEFAULT_CONFIG["stats_and_probs" if store else "stats"]
    BM, BN, BK, warps, stages, flatten, subtile = CONFIGS[config]
    n_vt = triton.cdiv(V, BN)
    f32 = dict(dtype=torch.float32, device=hidden.device)
    mp = torch.empty(C, n_vt, **f32)
    sp = torch.empty(C, n_vt, **f32)
    tp = torch.empty(C, n_vt, **f32) if want_entropy else sp
    h_desc = TensorDescriptor.from_tensor(hidden, [BM, BK])
    w_desc = TensorDescriptor.from_tensor(weight, [BN, BK])
    p_desc = TensorDescriptor.from_tensor(p_out, [BM, BN // 2 if subtile else BN]) if store else h_desc
    tiles = triton.cdiv(C, BM) * n_vt
    progs = _num_programs(hidden.device, tiles)
    cuda = hidden.device.type == "cuda"
    opts = {"num_warps": warps, "num_stages": stages} if cuda else {}
    _logits_stats_kernel[(progs,)](h_desc, w_desc, p_desc, ref if store else mp, mp, sp, tp, C, V, K, inv_temp,
                                   n_vt, BM=BM, BN=BN, BK=BK, NUM_PROGRAMS=progs, STORE_P=store,
                                   WANT_ENTROPY=want_entropy, FLATTEN=flatten, SUBTILE=subtile, CAP=CAP,
                                   DOT_F32=not cuda, **opts)
    return mp, sp, (tp if want_entropy else None)


def combine_stats(mp: torch.Tensor, sp: torch.Tensor, tp: Optional[torch.Tensor]):
    """(lse [C], entropy [C] or None, top [C]: the row's largest scaled logit) from the per-tile
    statistics of logits_stats, one launch."""
    C, n_vt = mp.shape
    lse = torch.empty(C, dtype=torch.float32, device=mp.device)
    top = torch.empty_like(lse)
    ent = torch.empty_like(lse) if tp is not None else lse
    if C:
        _combine_stats_kernel[(C,)](mp, sp, tp if tp is not None else sp, lse, ent, top, n_vt,
                                    BLOCK=triton.next_power_of_2(n_vt), WANT_ENTROPY=tp is not None,
                                    **launch_opts(mp.device, 4))
    return lse, (ent if tp is not None else None), top


def finish_rows(p: torch.Tensor, mp: torch.Tensor, z_tgt: torch.Tensor, top: torch.Tensor, lse: torch.Tensor,
                g: torch.Tensor, targets: torch.Tensor, inv_temp: float, hidden: Optional[torch.Tensor],
                config: Optional[str] = None):
    """Makes dz = s·P (dz = dL/d raw logits = g·(onehot - softmax)·inv_temp) in place, for P written
    by logits_stats with ref = z_tgt: each row of P on one reference, the one-hot term folded into
    its target element, rows with g = 0 finite. Returns (s [C] fp32, s ⊙ hidden [C, K] in hidden's
    dtype, or None without hidden)."""
    C, V = p.shape
    BN = CONFIGS[config or DEFAULT_CONFIG["stats_and_probs"]][1]
    s = torch.empty(C, dtype=torch.float32, device=p.device)
    sh = torch.empty_like(hidden) if hidden is not None else None
    K = hidden.shape[1] if hidden is not None else 1
    if C:
        _finish_rows_kernel[(C,)](p, mp, z_tgt, top, lse, g, targets, hidden if sh is not None else p,
                                  hidden.stride(0) if sh is not None else 0, s, sh if sh is not None else p,
                                  V, K, mp.shape[1], inv_temp, CAP=CAP, BN=BN, BLOCK_V=2048,
                                  BLOCK_K=min(1024, triton.next_power_of_2(K)), WANT_SH=sh is not None,
                                  **launch_opts(p.device, 4))
    return s, sh
