"""The two "row ops" of the chunked pass, per backend: row statistics (log-sum-exp, target logit,
entropy) of a chunk of fp32 logits, and dlogits. Plain torch on any device, or the Triton kernels of
relate_fast.kernels.grpo_loss (dlogits written over the logits in place)."""
from __future__ import annotations

import os
from typing import Optional

import torch

__all__ = ["BACKENDS", "TorchRows", "TritonRows", "ROWS", "resolve_backend"]

BACKENDS = ("torch", "triton")


class TorchRows:
    """Row statistics and dlogits of a chunk of raw fp32 logits z, in plain torch (any device)."""

    @staticmethod
    def stats(z, tgt, inv_t, want_entropy):
        zs = z * inv_t if inv_t != 1.0 else z
        lse = torch.logsumexp(zs, dim=1)
        z_tgt = zs.gather(1, tgt[:, None]).squeeze(1)
        ent = None
        if want_entropy:
            ent = lse - (torch.exp(zs - lse[:, None]) * zs).sum(dim=1)
        return lse, z_tgt, ent

    @staticmethod
    def dlogits(z, tgt, lse, g, inv_t, dtype):
        gs = g * inv_t
        dz = (z * inv_t - lse[:, None]).exp_().mul_(-gs[:, None])
        dz.scatter_add_(1, tgt[:, None], gs[:, None])
        # rows with g = 0 (padding, clipped tokens) are exact zeros, whatever their logits hold
        return torch.where((g != 0)[:, None], dz, torch.zeros((), dtype=dz.dtype, device=dz.device)).to(dtype)


class TritonRows:
    """The same through the Triton row kernels of relate_fast.kernels.grpo_loss (dlogits in place)."""

    @staticmethod
    def stats(z, tgt, inv_t, want_entropy):
        from relate_fast.kernels.grpo_loss import row_stats

        return row_stats(z, tgt, inv_t, want_entropy)

    @staticmethod
    def dlogits(z, tgt, lse, g, inv_t, dtype):
        from relate_fast.kernels.grpo_loss import dlogits_buffer, row_dlogits

        return row_dlogits(z, tgt, lse, g, inv_t, dlogits_buffer(z, dtype))


ROWS = {"torch": TorchRows, "triton": TritonRows}


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    if backend is None:
        backend = os.environ.get("RELATE_FAST_BACKEND") or ("triton" if device.type == "cuda" else "torch")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise ValueError(f"backend='triton' needs CUDA tensors (hidden is on {device}) or TRITON_INTERPRET=1")
    return backend
