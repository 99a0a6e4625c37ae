"""Packed sequences for the policy's forward and backward: no pad token is ever computed.

The trainer concatenates the [prompt | completion] tokens of a micro-batch's rows into one sequence
of N real tokens (`grpo.PackedLayout`), with position ids that restart at 0 for each row and the
cumulative lengths ``cu_seqlens`` = [0, l_0, l_0 + l_1, ...]. Everything in a decoder layer but the
attention is per token, so only the attention must know where a row ends: it is causal within each
row and blind across rows (varlen attention, as flash-attn's ``flash_attn_varlen_func``).

transformers routes the variable-length arguments (``cu_seq_lens_q/k``, ``max_length_q/k``) to the
attention function of the model's ``attn_implementation``. flash_attention_2 takes them natively;
for the rest this module registers one more implementation, ``VARLEN_ATTN`` ("relate_varlen"):

- with those arguments (a packed call): PyTorch's own varlen attention on CUDA
  (``torch.nn.attention.varlen.varlen_attn``, FlashAttention kernels inside PyTorch, torch >= 2.10:
  nothing to install), and on the CPU or where it is missing an exact reference (SDPA per row);
- without them (generation, evaluation, the padded path): exactly the ``sdpa`` implementation, with
  the same masks (the mask builder of "sdpa" is registered under this name too).

So a model loaded with ``attn_implementation="relate_varlen"`` behaves as an sdpa model everywhere
except in a packed call. A packed call passes ``attention_mask=PACKED_MASKS`` (the per-layer-type
mask dict with no mask: transformers then builds no [N, N] mask) — `packed_forward_kwargs` makes the
whole set of keyword arguments.
"""
from __future__ import annotations

import functools
import inspect
from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["VARLEN_ATTN", "register", "packed_forward_kwargs", "varlen_attention", "attention_backend",
           "supports_packing"]

VARLEN_ATTN = "relate_varlen"
# implementations that take the variable-length arguments (flash_attention_2 natively)
PACKING_IMPLEMENTATIONS = (VARLEN_ATTN, "flash_attention_2", "flash_attention_3")


def supports_packing(attn_implementation: str) -> bool:
    return attn_implementation in PACKING_IMPLEMENTATIONS


def packed_forward_kwargs(cu_seqlens: torch.Tensor, max_len: int) -> dict:
    """Keyword arguments of a decoder's forward for one packed sequence: no mask built (a mask per
    layer type, each None), and the rows' boundaries for the attention."""
    return {"attention_mask": {"full_attention": None, "sliding_attention": None},
            "cu_seq_lens_q": cu_seqlens, "cu_seq_lens_k": cu_seqlens, "max_length_q": max_len, "max_length_k": max_len}


@functools.lru_cache(maxsize=None)
def _torch_varlen():
    """(varlen_attn, how it is told 'causal', whether it takes fewer K/V heads, whether it takes a
    scale) or None; read once, not on every layer's call."""
    try:
        from torch.nn.attention.varlen import varlen_attn
    except ImportError:
        return None
    params = inspect.signature(varlen_attn).parameters
    causal = "is_causal" if "is_causal" in params else "window_size"  # torch 2.10: is_causal; later: window (-1, 0)
    return varlen_attn, causal, "enable_gqa" in params, "scale" in params


def attention_backend(device: torch.device) -> str:
    """Which kernel a packed call runs on `device`: "torch_varlen" (CUDA) or "reference" (SDPA per row)."""
    return "torch_varlen" if device.type == "cuda" and _torch_varlen() is not None else "reference"


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens: torch.Tensor, max_len: int,
                     *, scale: Optional[float] = None, backend: Optional[str] = None) -> torch.Tensor:
    """Causal attention within each packed row. q [N, Hq, D], k/v [N, Hkv, D] (Hq a multiple of Hkv),
    cu_seqlens [R + 1] int32/int64 on q's device; returns [N, Hq, D]."""
    backend = backend or attention_backend(q.device)
    groups = q.shape[1] // k.shape[1]
    if backend == "torch_varlen":
        fn, causal, gqa, takes_scale = _torch_varlen()
        kw = {"is_causal": True} if causal == "is_causal" else {"window_size": (-1, 0)}
        if scale is not None and takes_scale:
            kw["scale"] = scale
        elif scale is not None and abs(scale - q.shape[-1] ** -0.5) > 1e-12:
            raise ValueError("this torch's varlen_attn takes no scale; the model's is not 1/sqrt(head_dim)")
        if groups > 1:
            if gqa:
                kw["enable_gqa"] = True
            else:
                k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        cu = cu_seqlens.to(torch.int32)
        return fn(q, k, v, cu, cu, max_len, max_len, **kw)
    if backend != "reference":
        raise ValueError(f"varlen attention backend must be torch_varlen or reference, got {backend!r}")
    # The reference: SDPA on each row alone (exact; for the CPU and the tests). Its boundaries are
    # read on the host, which is a sync on a GPU: the GPU path never comes here.
    bounds = cu_seqlens.tolist()
    out = torch.empty_like(q)
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b > a:
            qi, ki, vi = (x[a:b].transpose(0, 1) for x in (q, k, v))  # [H, L, D]
            if groups > 1:
                ki, vi = ki.repeat_interleave(groups, 0), vi.repeat_interleave(groups, 0)
            out[a:b] = F.scaled_dot_product_attention(qi, ki, vi, is_causal=True, scale=scale).transpose(0, 1)
    return out


def _attention_forward(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, **kwargs):
    """transformers' attention-function signature: query [B, Hq, T, D], key/value [B, Hkv, T, D];
    returns ([B, T, Hq, D], None)."""
    cu = kwargs.get("cu_seq_lens_q")
    if cu is None:  # not a packed call: the sdpa implementation, unchanged
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    if query.shape[0] != 1:
        raise ValueError(f"a packed call holds one sequence of rows (batch 1), got batch {query.shape[0]}")
    if dropout:
        raise ValueError("varlen attention: dropout is not supported (the policy trains without it)")
    max_len = kwargs.get("max_length_q")
    max_len = int(max_len) if max_len is not None else int(query.shape[2])
    out = varlen_attention(query[0].transpose(0, 1), key[0].transpose(0, 1), value[0].transpose(0, 1), cu, max_len,
                           scale=scaling)
    return out.unsqueeze(0), None


_registered = False


def register() -> str:
    """Registers VARLEN_ATTN with transformers (idempotent); returns its name."""
    global _registered
    if not _registered:
        from transformers import AttentionInterface
        from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

        AttentionInterface.register(VARLEN_ATTN, _attention_forward)
        AttentionMaskInterface.register(VARLEN_ATTN, sdpa_mask)
        _registered = True
    return VARLEN_ATTN
