"""The two "row ops" of the chunked pass, per backend: row statistics (log-sum-exp, target logit,
entropy) of a chunk of fp32 logits, and dlogits. Plain torch on any device, or the Triton kernels of
relate_fast.kernels.grpo_loss (dlogits written over the logits in place)."""
from __future__ import annotations

import os
from typing import Optional

import torch

__all__ = ["BACKENDS", "TorchRows", "TritonRows", "ROWS", "configure", "resolve_backend", "resolve_logits_path"]

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


# Process-wide defaults, set by `configure` (the trainer: grpo.loss_backend, grpo.logits_path). Which one
# a call uses: its own backend= argument, else the environment variable (RELATE_FAST_BACKEND,
# RELATE_FAST_LOGITS: an override for a run or a benchmark), else these, else auto.
_CONFIGURED = {"backend": None, "logits": "auto"}


def configure(*, backend: Optional[str] = None, logits: str = "auto") -> None:
    """The loss's defaults in this process: `backend` "torch" | "triton" | None (auto: triton on CUDA,
    torch elsewhere); `logits` "auto" | "epilogue" | "fp32" (how the triton backend gets a chunk's logits)."""
    if backend not in (None,) + BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)} or None (auto); got {backend!r}")
    if logits not in LOGITS_CHOICES:
        raise ValueError(f"logits must be one of {', '.join(LOGITS_CHOICES)}; got {logits!r}")
    _CONFIGURED.update(backend=backend, logits=logits)


def resolve_backend(backend: Optional[str], device: torch.device) -> str:
    if backend is None:
        backend = (os.environ.get("RELATE_FAST_BACKEND") or _CONFIGURED["backend"]
                   or ("triton" if device.type == "cuda" else "torch"))
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise ValueError(f"backend='triton' needs CUDA tensors (hidden is on {device}) or TRITON_INTERPRET=1")
    return backend


# The logits path: "auto" (the default: the epilogue GEMM on a Hopper GPU where the operands suit
# it, else fp32 logits), "epilogue" (insist, also under the interpreter: an error says why it cannot
# run) or "fp32" (the cuBLAS + row kernels path, the reference). On an H100 the epilogue path measured
# 1.03-1.06x the floor against 1.13-1.20x (benchmarks/RESULTS.md, issue 18).
LOGITS_CHOICES = ("auto", "epilogue", "fp32")


def _epilogue_blocker(hidden: torch.Tensor, weight: torch.Tensor) -> Optional[str]:
    """Why the epilogue GEMM cannot take these operands, or None when it can."""
    from relate_fast.kernels import logits_gemm

    if not logits_gemm.available(hidden.device):
        return "it needs a Hopper GPU (or TRITON_INTERPRET=1) and Triton's tensor descriptors"
    if hidden.dtype != torch.bfloat16 or weight.dtype != hidden.dtype:  # fp16: P's range (logits_gemm)
        return f"it takes bf16 operands, got {hidden.dtype} and {weight.dtype}"
    H, V = hidden.shape[-1], weight.shape[0]
    if H % 8 or V % 8:
        return f"hidden size ({H}) and vocabulary ({V}) must be multiples of 8 (16-byte rows)"
    if hidden.stride(-1) != 1 or weight.stride(-1) != 1 or weight.stride(0) != H:
        return "hidden and weight must be contiguous along the hidden dimension"
    if hidden.data_ptr() % 16 or weight.data_ptr() % 16:
        return "hidden and weight must start on 16-byte boundaries (tensor descriptors)"
    return None


def resolve_logits_path(backend: str, hidden: torch.Tensor, weight: torch.Tensor) -> str:
    """"epilogue" or "fp32" (relate_fast.loss.chunked.LOGITS_PATHS) for this call."""
    choice = os.environ.get("RELATE_FAST_LOGITS") or _CONFIGURED["logits"]
    if choice not in LOGITS_CHOICES:
        raise ValueError(f"RELATE_FAST_LOGITS must be one of {', '.join(LOGITS_CHOICES)}; got {choice!r}")
    if choice == "fp32" or (choice == "auto" and hidden.device.type != "cuda"):
        return "fp32"  # the interpreter runs the epilogue only when asked (its tests ask)
    why = "it runs on the triton backend only" if backend != "triton" else _epilogue_blocker(hidden, weight)
    if why is None:
        return "epilogue"
    if choice == "epilogue":
        raise ValueError(f"the epilogue logits path (grpo.logits_path or RELATE_FAST_LOGITS) cannot run here: {why}")
    return "fp32"
