"""Triton kernel: log-prob of each target (and optionally the entropy) under
logits = hidden @ weight.T / temperature, in one pass over the vocabulary, never storing logits.

The grid is (token blocks × vocabulary splits): each program owns BLOCK_N tokens and one contiguous
slice of the vocabulary, so even a few thousand tokens fill the GPU (v1 had one program per token
block walking the whole vocabulary and left most SMs idle; benchmarks/NOTES_loss.md). It walks its
slice in BLOCK_V tiles; for each tile it forms the [BLOCK_N, BLOCK_V] logits with tl.dot over H
(bf16/fp16 operands, fp32 accumulation), folds them into an online log-sum-exp (running max m and
scaled sum s), picks the target's logit when it falls in the tile, and for the entropy keeps the
running Σ e^(z-m)·z. It writes those four numbers per token; a small torch step combines the
splits. Nothing vocabulary-sized is written. Programs are ordered token-block-fastest, so the
programs running together read the same weight slice (L2 reuse).

Under TRITON_INTERPRET=1 (CPU tests) operands are upcast to fp32 before tl.dot: the interpreter's
bf16 dot is broken (ENVIRONMENT notes); on a GPU they stay in their own dtype.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _logprobs_kernel(H_ptr, W_ptr, T_ptr, M_ptr, S_ptr, E_ptr, Z_ptr, N, V, HID, stride_hn, stride_wv, inv_temp,
                     V_PER_SPLIT, BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
                     WANT_ENTROPY: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)  # int64 offsets: N·H and V·H exceed 2**31 at real sizes
    split = tl.program_id(1).to(tl.int64)
    v_lo = split * V_PER_SPLIT
    v_hi = tl.minimum(v_lo + V_PER_SPLIT, V)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    row_ok = rows < N
    tgt = tl.load(T_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    m = tl.full([BLOCK_N], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    t = tl.zeros([BLOCK_N], tl.float32)  # Σ e^(z-m)·z, for the entropy
    z_tgt = tl.zeros([BLOCK_N], tl.float32)
    for v0 in range(v_lo, v_hi, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V).to(tl.int64)
        col_ok = cols < v_hi
        acc = tl.zeros([BLOCK_N, BLOCK_V], tl.float32)
        for k0 in range(0, HID, BLOCK_H):
            ks = k0 + tl.arange(0, BLOCK_H)
            k_ok = ks < HID
            h = tl.load(H_ptr + rows[:, None] * stride_hn + ks[None, :], mask=row_ok[:, None] & k_ok[None, :], other=0.0)
            w = tl.load(W_ptr + cols[:, None] * stride_wv + ks[None, :], mask=col_ok[:, None] & k_ok[None, :], other=0.0)
            if UPCAST:
                h = h.to(tl.float32)
                w = w.to(tl.float32)
            if IEEE:  # fp32 inputs: full precision, not the tf32 default
                acc = tl.dot(h, tl.trans(w), acc, input_precision="ieee")
            else:
                acc = tl.dot(h, tl.trans(w), acc)
        z = acc * inv_temp
        z = tl.where(col_ok[None, :], z, float("-inf"))
        m_new = tl.maximum(m, tl.max(z, axis=1))
        scale = tl.exp(m - m_new)
        e = tl.exp(z - m_new[:, None])
        s = s * scale + tl.sum(e, axis=1)
        if WANT_ENTROPY:
            t = t * scale + tl.sum(e * tl.where(col_ok[None, :], z, 0.0), axis=1)  # e = 0 off the vocabulary
        m = m_new
        z_tgt += tl.sum(tl.where(cols[None, :] == tgt[:, None], z, 0.0), axis=1)
    out = split * N + rows
    tl.store(M_ptr + out, m, mask=row_ok)
    tl.store(S_ptr + out, s, mask=row_ok)
    tl.store(Z_ptr + out, z_tgt, mask=row_ok)
    if WANT_ENTROPY:
        tl.store(E_ptr + out, t, mask=row_ok)


def logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
             return_entropy: bool = False, block_n: int = 128, block_v: int = 256, block_h: int = 64,
             splits: int | None = None, num_warps: int = 8, num_stages: int = 3):
    """hidden [N, H], weight [V, H] (same floating dtype), targets [N] int -> fp32 log-probs [N]
    (and entropy [N]). Arguments are checked by the caller (relate_fast.loss.fused_logprobs).
    splits: vocabulary slices (default: enough programs for ~4 waves on the device).
    Default tiles: the best of those tried on an H100 (benchmarks/NOTES_loss.md, logprobs v2)."""
    N, H = hidden.shape
    V = weight.shape[0]
    hidden = hidden.contiguous()
    weight = weight.contiguous()
    targets = targets.contiguous()
    dev = hidden.device
    if N == 0:
        empty = torch.empty(0, dtype=torch.float32, device=dev)
        return (empty, empty.clone()) if return_entropy else empty
    n_blocks = triton.cdiv(N, block_n)
    v_tiles = triton.cdiv(V, block_v)
    if splits is None:
        sms = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 4
        splits = triton.cdiv(4 * sms, n_blocks)
    splits = max(1, min(splits, v_tiles))
    v_per_split = triton.cdiv(v_tiles, splits) * block_v
    splits = triton.cdiv(V, v_per_split)  # no empty slice
    part = torch.empty(4 if return_entropy else 3, splits, N, dtype=torch.float32, device=dev)
    m, s, z = part[0], part[1], part[2]
    e = part[3] if return_entropy else s
    _logprobs_kernel[(n_blocks, splits)](
        hidden, weight, targets, m, s, e, z, N, V, H, hidden.stride(0), weight.stride(0), 1.0 / temperature,
        v_per_split, BLOCK_N=block_n, BLOCK_V=block_v, BLOCK_H=block_h, WANT_ENTROPY=return_entropy,
        UPCAST=INTERPRET, IEEE=INTERPRET or hidden.dtype == torch.float32,
        **({} if INTERPRET else {"num_warps": num_warps, "num_stages": num_stages}))
    # combine the slices: lse = M + log Σ S·e^(m - M); the target's logit lies in exactly one slice
    top = m.max(dim=0).values
    w = torch.exp(m - top)
    total = (s * w).sum(dim=0)
    lse = top + torch.log(total)
    lp = z.sum(dim=0) - lse
    if not return_entropy:
        return lp
    return lp, lse - (e * w).sum(dim=0) / total
