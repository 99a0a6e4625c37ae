"""flash-attn 4 under transformers' packed path: the one adaptation a benchmark needs to run it at all.

transformers (5.17–5.19 here) hands `flash_attn_varlen_func` its `max_seqlen_q` / `max_seqlen_k` as 0-dim tensors
on the packed (position-ids) path, and verl's remove-padding path goes through the same call. flash-attn 2's
binding takes a tensor; flash-attn 4's CuTe-DSL binding refuses it ("Expected IntTuple, whose leaves are integers,
but got 158": seen on the H200, 2026-12-04, both in transformers' own packed Qwen3 and in verl's FSDP engine). The
upstream fix (transformers PR #48353, open) restores `.item()` where transformers computes the value; this does the
same at FA4's entry instead, so it also covers callers that pass their own tensor: any tensor becomes an int,
nothing else changes. Benchmarks that run FA4 say in their JSON that they applied it.
"""
from __future__ import annotations

import functools
import inspect
import sys

import torch

_INT_ARGS = ("max_seqlen_q", "max_seqlen_k")


def int_max_seqlen_for_fa4() -> bool:
    """Wraps flash_attn.cute's `flash_attn_varlen_func` (the package's and its interface module's name, which is
    where transformers and verl import it from) so that tensor max-seqlens arrive as ints. Idempotent; False when
    flash-attn 4 does not import (nothing patched: a verl worker that never runs FA4 is not stopped by it)."""
    try:
        import flash_attn.cute as fa4
    except Exception:  # noqa: BLE001 — not installed, or its import cannot reach CUDA here: nothing to adapt
        return False
    original = fa4.flash_attn_varlen_func
    if getattr(original, "_int_max_seqlen", False):
        return True
    signature = inspect.signature(original)

    @functools.wraps(original)
    def varlen(*args, **kwargs):
        bound = signature.bind_partial(*args, **kwargs)
        for name in _INT_ARGS:
            if isinstance(bound.arguments.get(name), torch.Tensor):
                bound.arguments[name] = int(bound.arguments[name])
        return original(*bound.args, **bound.kwargs)

    varlen._int_max_seqlen = True
    fa4.flash_attn_varlen_func = varlen
    interface = sys.modules.get("flash_attn.cute.interface")
    if interface is not None and getattr(interface, "flash_attn_varlen_func", None) is original:
        interface.flash_attn_varlen_func = varlen
    return True
