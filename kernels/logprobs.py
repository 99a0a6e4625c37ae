"""Triton kernel: log-prob of each target (and optionally the entropy) under
logits = hidden @ weight.T / temperature, in one pass over the vocabulary, never storing logits.

Each program owns BLOCK_N tokens. It walks the vocabulary in BLOCK_V tiles; for each tile it forms
the [BLOCK_N, BLOCK_V] logits with tl.dot over H (bf16/fp16 operands, fp32 accumulation), folds them
into an online log-sum-exp (running max m and scaled sum s), picks the target's logit when it falls
in the tile, and for the entropy keeps the running Σ e^(z-m)·z. Nothing vocabulary-sized is written.

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
def _logprobs_kernel(H_ptr, W_ptr, T_ptr, LP_ptr, ENT_ptr, N, V, HID, stride_hn, stride_wv, inv_temp,
                     BLOCK_N: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_H: tl.constexpr,
                     WANT_ENTROPY: tl.constexpr, UPCAST: tl.constexpr, IEEE: tl.constexpr):
    pid = tl.program_id(0).to(tl.int64)  # int64 offsets: N·H and V·H exceed 2**31 at real sizes
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N).to(tl.int64)
    row_ok = rows < N
    tgt = tl.load(T_ptr + rows, mask=row_ok, other=0).to(tl.int64)
    m = tl.full([BLOCK_N], float("-inf"), tl.float32)
    s = tl.zeros([BLOCK_N], tl.float32)
    t = tl.zeros([BLOCK_N], tl.float32)  # Σ e^(z-m)·z, for the entropy
    z_tgt = tl.zeros([BLOCK_N], tl.float32)
    for v0 in range(0, V, BLOCK_V):
        cols = v0 + tl.arange(0, BLOCK_V).to(tl.int64)
        col_ok = cols < V
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
    lse = m + tl.log(s)
    tl.store(LP_ptr + rows, z_tgt - lse, mask=row_ok)
    if WANT_ENTROPY:
        tl.store(ENT_ptr + rows, lse - t / s, mask=row_ok)


def logprobs(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor, temperature: float = 1.0,
             return_entropy: bool = False, block_n: int = 64, block_v: int = 128, block_h: int = 64):
    """hidden [N, H], weight [V, H] (same floating dtype), targets [N] int -> fp32 log-probs [N]
    (and entropy [N]). Arguments are checked by the caller (relate_fast.loss.fused_logprobs)."""
    N, H = hidden.shape
    V = weight.shape[0]
    hidden = hidden.contiguous()
    weight = weight.contiguous()
    targets = targets.contiguous()
    lp = torch.empty(N, dtype=torch.float32, device=hidden.device)
    ent = torch.empty(N, dtype=torch.float32, device=hidden.device) if return_entropy else lp
    if N == 0:
        return (lp, ent) if return_entropy else lp
    grid = (triton.cdiv(N, block_n),)
    _logprobs_kernel[grid](hidden, weight, targets, lp, ent, N, V, H, hidden.stride(0), weight.stride(0),
                           1.0 / temperature, BLOCK_N=block_n, BLOCK_V=block_v, BLOCK_H=block_h,
                           WANT_ENTROPY=return_entropy, UPCAST=INTERPRET,
                           IEEE=INTERPRET or hidden.dtype == torch.float32)
    return (lp, ent) if return_entropy else lp
