"""RELATE's clipped GRPO objective with per-token KL and combined advantages, straight from the last
hidden states and the lm_head weight, never materialising the [tokens × vocab] logits.

Public contract (importable into other GRPO stacks; keep these signatures)::

    loss, metrics = fused_grpo_loss(hidden, weight, targets, mask, advantages, *, token_rewards=None,
                                    alpha=1.0, old_logprobs=None, ref_logprobs=None, beta=0.0,
                                    eps_low=0.2, eps_high=0.2, temperature=1.0, loss_type="grpo",
                                    max_completion_length=None, num_items=None)
    logprobs = fused_logprobs(hidden, weight, targets, *, temperature=1.0, return_entropy=False)
    adv = group_advantages(rewards, group_size, *, scale=True, eps=1e-6)

Algorithm: every loss type is a weighted sum of per-token terms, loss = Σ_t per[t]·c[t], with
weights c[t] known before the pass (`_token_weights`). So one pass over chunks of tokens does it all:

    z = h_chunk @ Wᵀ                      fp32 [C, V], the only vocabulary-sized buffer
    lse, z_tgt (, entropy)                row statistics of z/T            ─┐ the two "row ops": Triton
    logp = z_tgt - lse; per, g = dL/dlogp  `_token_terms`, on [C] vectors    │ kernels (relate_fast.kernels.
    dz = g·(onehot - softmax(z/T))/T       written over z                  ─┘ grpo_loss) or plain torch
    grad_h[chunk] = dz @ W;  grad_W += dzᵀ @ h_chunk

three matrix products per chunk, no recomputation in backward (backward only scales the gradients
it was handed). `recompute=True` instead keeps only lse and g from the forward pass and redoes the
logits in backward (four products; for callers that must not hold the gradients between the passes).

Backends: "triton" (the default on CUDA: cuBLAS products with fp32 output + the Triton row kernels;
under TRITON_INTERPRET=1 it also runs on CPU tensors, which is how CI tests it) and "torch" (the
default elsewhere: the same chunked algorithm with torch row ops). RELATE_FAST_BACKEND=torch|triton
overrides the default.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

import torch

__all__ = ["fused_grpo_loss", "fused_logprobs", "group_advantages", "non_finite_on_mask", "LOSS_TYPES", "BACKENDS"]

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "seq_sum")
BACKENDS = ("torch", "triton")

# fp32 logits of one chunk stay under these many bytes. The Triton backend writes dlogits over the
# logits in place, so this is its whole vocabulary-sized workspace (1.25 GiB: 2,048 tokens at
# Qwen3's 151,936 vocabulary; fewer, larger chunks mean fewer read-modify-writes of grad_W). The
# torch backend keeps a few temporaries of the same size, hence its smaller budget.
_CHUNK_BYTES = {"triton": 5 * 2**28, "torch": 2**28}
# grad_W is accumulated across chunks in fp32 when that buffer is small, else in the weight's own
# dtype (each chunk's product still accumulates in fp32; one rounding per chunk, not per token).
_FP32_GRAD_W_BYTES = 2**26


# --------------------------------------------------------------------------- advantages


def group_advantages(rewards: torch.Tensor, group_size: int, *, scale: bool = True, eps: float = 1e-6) -> torch.Tensor:
    """RELATE eq. 8: A_i = (r_i - mean_group(r)) / (std_group(r) + eps), unbiased std.

    rewards: [B] with B a multiple of group_size; consecutive group_size entries form one group.
    scale=False returns r_i - mean_group(r) (Dr. GRPO). A group of one has advantage 0.
    """
    if not isinstance(rewards, torch.Tensor):
        raise TypeError(f"rewards must be a torch.Tensor, got {type(rewards).__name__}")
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got {group_size!r}")
    if rewards.numel() % group_size != 0:
        raise ValueError(f"rewards has {rewards.numel()} entries, not a multiple of group_size={group_size}")
    r = rewards.view(-1, group_size).to(torch.float64 if rewards.dtype == torch.float64 else torch.float32)
    centred = r - r.mean(dim=1, keepdim=True)
    if scale:
        std = r.std(dim=1, keepdim=True, unbiased=True) if group_size > 1 else torch.zeros_like(r[:, :1])
        centred = centred / (std + eps)
    return centred.reshape(-1).to(rewards.dtype if rewards.is_floating_point() else torch.float32)


# --------------------------------------------------------------------------- validation


def _check_tensor(x, name, *, dims=None, shape=None, floating=None, device=None):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if dims is not None and x.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {tuple(x.shape)}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if floating is False and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer tensor, got dtype {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device}, expected {device} (the device of hidden)")


def _check_target_range(targets, V):
    # CPU only: on a GPU this check would cost a host sync per call (an out-of-range id there
    # fails in the gather instead).
    if targets.device.type == "cpu" and targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= V):
        raise ValueError(f"targets must lie in [0, {V}) (the rows of weight)")


def non_finite_on_mask(mask, **tensors):
    """(name, row, position) of the first named tensor with a NaN/inf where mask != 0, else None.
    Tensors are [B, T] or [B] (one value per row); None entries are skipped. One host sync."""
    counted = mask != 0
    present = [(name, x if x.dim() == 2 else x[:, None].expand_as(mask)) for name, x in tensors.items() if x is not None]
    if not present:
        return None
    bad = [(~torch.isfinite(x)) & counted for _, x in present]
    for (name, _), b, any_bad in zip(present, bad, torch.stack([b.any() for b in bad]).tolist()):
        if any_bad:
            row, pos = b.nonzero()[0].tolist()
            return name, row, pos
    return None


def _check_finite_on_mask(mask, **tensors):
    found = non_finite_on_mask(mask, **tensors)
    if found is not None:
        name, row, pos = found
        raise ValueError(f"{name} has a non-finite value on a counted token (row {row}, position {pos})")


def _token_weights(mask: torch.Tensor, loss_type: str, max_completion_length, num_items) -> torch.Tensor:
    """c[b, t] such that loss = Σ per[b, t]·c[b, t] for each reduction (m = mask)."""
    m = mask.float()
    B, T = m.shape
    if loss_type == "grpo":  # mean over sequences of the per-sequence token mean
        return m / (B * m.sum(dim=1, keepdim=True).clamp(min=1.0))
    if loss_type == "bnpo":
        return m / m.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        L = T if max_completion_length is None else max_completion_length
        return m / (B * L)
    if loss_type == "dapo":
        n = m.sum().clamp(min=1.0) if num_items is None else torch.as_tensor(num_items, dtype=torch.float32, device=m.device)
        return m / n
    return m / B  # seq_sum: the paper's eq. 6


# --------------------------------------------------------------------------- per-token objective


def _token_terms(logp, old, adv, ref, coef, beta: float, eps_low: float, eps_high: float):
    """Per-token loss contribution per·c, its derivative g = c·d per/d logp, and the metric inputs.

    The one place the objective (RELATE eq. 6) is written: ρ = exp(logp - old),
    per = -min(ρ·A, clip(ρ, 1-ε_low, 1+ε_high)·A) + β·k3, k3 = exp(ref-logp) - (ref-logp) - 1.
    """
    o = logp if old is None else old
    ratio = torch.exp(logp - o)
    clip_high = (adv > 0) & (ratio > 1.0 + eps_high)
    clip_low = (adv < 0) & (ratio < 1.0 - eps_low)
    per = -torch.minimum(ratio * adv, ratio.clamp(1.0 - eps_low, 1.0 + eps_high) * adv)
    dper = torch.where(clip_high | clip_low, torch.zeros_like(ratio), -adv * ratio)
    k3 = None
    if beta != 0.0:
        delta = ref - logp
        e = torch.exp(delta)
        k3 = e - delta - 1.0
        per = per + beta * k3
        dper = dper + beta * (1.0 - e)
    live = coef != 0
    # padding may hold anything (an inf k3 against a garbage reference): where, not multiply
    zero = torch.zeros_like(per)
    return torch.where(live, per * coef, zero), torch.where(live, dper * coef, zero), ratio, k3, clip_low, clip_high


def _metrics(coef, ratio, k3, clip_low, clip_high, entropy) -> Dict[str, torch.Tensor]:
    """Masked means over the tokens that count (c > 0), as detached tensors, without a host sync."""
    m = coef > 0
    mf = m.float()
    mass = mf.sum().clamp(min=1.0)
    mean = lambda x: torch.where(m, x, torch.zeros_like(x)).sum() / mass  # noqa: E731
    out = {"kl": mean(k3) if k3 is not None else torch.zeros((), device=coef.device),
           "clip_ratio": mean((clip_low | clip_high).float()), "clip_low": mean(clip_low.float()),
           "clip_high": mean(clip_high.float()), "ratio_mean": mean(ratio),
           "ratio_max": torch.where(m, ratio, torch.full_like(ratio, -math.inf)).max()
           if ratio.numel() else torch.full((), -math.inf, device=coef.device)}
    if entropy is not None:
        out["entropy"] = mean(entropy)
    return out


# --------------------------------------------------------------------------- row ops (two backends)


class _TorchRows:
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


class _TritonRows:
    """The same through the Triton row kernels of relate_fast.kernels.grpo_loss (dlogits in place)."""

    @staticmethod
    def stats(z, tgt, inv_t, want_entropy):
        from relate_fast.kernels.grpo_loss import row_stats

        return row_stats(z, tgt, inv_t, want_entropy)

    @staticmethod
    def dlogits(z, tgt, lse, g, inv_t, dtype):
        from relate_fast.kernels.grpo_loss import dlogits_buffer, row_dlogits

        return row_dlogits(z, tgt, lse, g, inv_t, dlogits_buffer(z, dtype))


_ROWS = {"torch": _TorchRows, "triton": _TritonRows}


def _resolve_backend(backend: Optional[str], device: torch.device) -> str:
    if backend is None:
        backend = os.environ.get("RELATE_FAST_BACKEND") or ("triton" if device.type == "cuda" else "torch")
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}; got {backend!r}")
    if backend == "triton" and device.type != "cuda" and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise ValueError(f"backend='triton' needs CUDA tensors (hidden is on {device}) or TRITON_INTERPRET=1")
    return backend


# --------------------------------------------------------------------------- the chunked pass


def _chunk_rows(V: int, N: int, chunk_size: Optional[int], backend: str) -> int:
    """Tokens per chunk: the largest that fits the byte budget, then evened out over the chunks
    (N = 4,096 at V = 151,936 gives 2 × 2,048 rather than 2,176 + 1,920)."""
    if chunk_size is not None:
        return max(1, int(chunk_size))
    cap = max(1, _CHUNK_BYTES[backend] // (4 * max(V, 1)))
    n_chunks = max(1, -(-N // cap))
    rows = -(-N // n_chunks)
    return min(cap, -(-rows // 64) * 64) if rows > 64 else max(rows, 1)  # >= 1: an empty batch has no chunk


class _Products:
    """The three lm_head products of the chunked pass, in fp32 output where the row ops need it."""

    def __init__(self, weight: torch.Tensor, need_dw: bool, dw_dtype):
        self.weight = weight
        self.cuda = weight.device.type == "cuda"
        # cuBLAS takes 16-bit operands with an fp32 output directly; elsewhere use an fp32 copy
        self.w32 = weight if (self.cuda or weight.dtype == torch.float32) else weight.float()
        self.grad_w = None
        self.need_dw = need_dw
        self.dw_dtype = dw_dtype

    def logits(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if h.dtype == torch.float32 or not self.cuda:
            return torch.mm(h.float() if h.dtype != torch.float32 else h, self.w32.t(), out=out)
        return torch.mm(h, self.weight.t(), out_dtype=torch.float32, out=out)

    def grads(self, dz: torch.Tensor, h: torch.Tensor, grad_h_rows: Optional[torch.Tensor]):
        if grad_h_rows is not None:
            torch.mm(dz, self.weight, out=grad_h_rows)
        if self.need_dw:
            hh = h if h.dtype == self.dw_dtype else h.to(self.dw_dtype)
            dd = dz if dz.dtype == self.dw_dtype else dz.to(self.dw_dtype)
            if self.grad_w is None:
                self.grad_w = torch.mm(dd.t(), hh)
            else:
                self.grad_w.addmm_(dd.t(), hh)


def _dw_dtype(weight: torch.Tensor) -> torch.dtype:
    small = weight.numel() * 4 <= _FP32_GRAD_W_BYTES
    return torch.float32 if (small or weight.dtype == torch.float32) else weight.dtype


def _chunked_forward(hidden, weight, targets, coef, adv, old, ref, cfg, need_dh, need_dw):
    """One pass: per-token log-probs and objective terms, and (if asked) both gradients."""
    N, H = hidden.shape
    V = weight.shape[0]
    dev = hidden.device
    rows = _ROWS[cfg.backend]
    inv_t = 1.0 / cfg.temperature
    prod = _Products(weight, need_dw, _dw_dtype(weight))
    grad_h = torch.empty_like(hidden) if need_dh else None
    f32 = dict(dtype=torch.float32, device=dev)
    logp_all, g_all, lse_all = (torch.empty(N, **f32) for _ in range(3))
    ratio_all = torch.empty(N, **f32)
    k3_all = torch.empty(N, **f32) if cfg.beta != 0.0 else None
    ent_all = torch.empty(N, **f32) if cfg.want_entropy else None
    low_all = torch.empty(N, dtype=torch.bool, device=dev)
    high_all = torch.empty_like(low_all)
    loss = torch.zeros((), **f32)
    chunk = cfg.chunk
    zbuf = torch.empty(min(chunk, N), V, **f32) if N else None
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        h, tgt = hidden[s:e], targets[s:e]
        z = prod.logits(h, zbuf[: e - s])
        lse, z_tgt, ent = rows.stats(z, tgt, inv_t, cfg.want_entropy)
        logp = z_tgt - lse
        loss_tok, g, ratio, k3, low, high = _token_terms(
            logp, None if old is None else old[s:e], adv[s:e], None if ref is None else ref[s:e], coef[s:e],
            cfg.beta, cfg.eps_low, cfg.eps_high)
        loss += loss_tok.sum()
        logp_all[s:e], g_all[s:e], lse_all[s:e], ratio_all[s:e] = logp, g, lse, ratio
        low_all[s:e], high_all[s:e] = low, high
        if k3 is not None:
            k3_all[s:e] = k3
        if ent is not None:
            ent_all[s:e] = ent
        if need_dh or need_dw:
            dz = rows.dlogits(z, tgt, lse, g, inv_t, hidden.dtype)
            prod.grads(dz, h, grad_h[s:e] if need_dh else None)
            del dz
    metrics = _metrics(coef, ratio_all, k3_all, low_all, high_all, ent_all)
    grad_w = None
    if need_dw:
        grad_w = prod.grad_w if prod.grad_w is not None else torch.zeros_like(weight)
        grad_w = grad_w if grad_w.dtype == weight.dtype else grad_w.to(weight.dtype)
    return loss, logp_all, metrics, grad_h, grad_w, lse_all, g_all


def _chunked_grads(hidden, weight, targets, lse, g, cfg, need_dh, need_dw):
    """The recompute path: logits again, then dlogits from the saved lse and g, then the products."""
    N, _ = hidden.shape
    V = weight.shape[0]
    rows = _ROWS[cfg.backend]
    prod = _Products(weight, need_dw, _dw_dtype(weight))
    grad_h = torch.empty_like(hidden) if need_dh else None
    zbuf = torch.empty(min(cfg.chunk, N), V, dtype=torch.float32, device=hidden.device) if N else None
    for s in range(0, N, cfg.chunk):
        e = min(N, s + cfg.chunk)
        z = prod.logits(hidden[s:e], zbuf[: e - s])
        dz = rows.dlogits(z, targets[s:e], lse[s:e], g[s:e], 1.0 / cfg.temperature, hidden.dtype)
        prod.grads(dz, hidden[s:e], grad_h[s:e] if need_dh else None)
    grad_w = None
    if need_dw:
        grad_w = prod.grad_w if prod.grad_w is not None else torch.zeros_like(weight)
        grad_w = grad_w.to(weight.dtype)
    return grad_h, grad_w


@dataclass(frozen=True)
class _PassConfig:
    backend: str
    chunk: int
    beta: float
    eps_low: float
    eps_high: float
    temperature: float
    want_entropy: bool
    recompute: bool


class _FusedGRPO(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, coef, adv, old, ref, cfg: _PassConfig):
        need_dh, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        now = not cfg.recompute
        loss, logp, metrics, grad_h, grad_w, lse, g = _chunked_forward(
            hidden, weight, targets, coef, adv, old, ref, cfg, need_dh and now, need_dw and now)
        ctx.cfg, ctx.need = cfg, (need_dh, need_dw)
        ctx.consumed = False
        if cfg.recompute:
            ctx.save_for_backward(hidden, weight, targets, lse, g)
        else:
            ctx.grads = (grad_h, grad_w)  # not saved tensors: backward scales them in place, once
        ctx.mark_non_differentiable(logp, *metrics.values())
        ctx.metric_names = tuple(metrics)
        return (loss, logp, *metrics.values())

    @staticmethod
    def backward(ctx, grad_loss, *_unused):
        cfg = ctx.cfg
        need_dh, need_dw = ctx.need
        if cfg.recompute:
            hidden, weight, targets, lse, g = ctx.saved_tensors
            gh, gw = _chunked_grads(hidden, weight, targets, lse, g * grad_loss, cfg, need_dh, need_dw)
        else:
            if ctx.consumed:
                raise RuntimeError("fused_grpo_loss: backward twice through one forward needs recompute=True")
            ctx.consumed = True
            gh, gw = ctx.grads
            ctx.grads = None
            # in place: a scaled copy of grad_W would be another vocabulary × hidden buffer
            gh = gh.mul_(grad_loss.to(gh.dtype)) if gh is not None else None
            gw = gw.mul_(grad_loss.to(gw.dtype)) if gw is not None else None
        return gh, gw, None, None, None, None, None, None


# --------------------------------------------------------------------------- public functions


def fused_grpo_loss(hidden, weight, targets, mask, advantages, *, token_rewards=None, alpha=1.0,
                    old_logprobs=None, ref_logprobs=None, beta=0.0, eps_low=0.2, eps_high=0.2,
                    temperature=1.0, loss_type="grpo", max_completion_length=None, num_items=None,
                    return_entropy=False, chunk_size=None, backend=None,
                    recompute=False, check_finite=False) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Clipped GRPO objective (RELATE eq. 6) with A = advantages + alpha·token_rewards and β·k3 KL.

    Returns (loss, metrics); metrics holds detached tensors (no host sync): kl, clip_ratio,
    clip_low, clip_high, ratio_mean, ratio_max (masked over tokens), entropy when return_entropy.
    Gradients flow to hidden and weight (none to weight when it does not require grad).
    chunk_size: tokens per chunk (default: a chunk's fp32 logits stay within the backend's budget).
    backend: "triton" | "torch" (default: triton on CUDA, torch elsewhere; see the module notes).
    recompute: keep only per-token statistics from the forward pass and recompute the logits in
    backward (one more product), instead of computing the gradients during the forward pass.
    check_finite: refuse NaN/inf in advantages, token_rewards, old_logprobs and ref_logprobs on
    counted tokens (mask != 0) with a ValueError naming the argument; off by default because it
    costs a host sync (the trainer checks its whole batch once per step instead).
    An empty batch (B = 0 or T = 0) gives a zero loss whose gradients are zeros.
    """
    _check_tensor(hidden, "hidden", dims=(3,), floating=True)
    dev = hidden.device
    B, T, H = hidden.shape
    _check_tensor(weight, "weight", dims=(2,), floating=True, device=dev)
    if weight.shape[1] != H:
        raise ValueError(f"weight must have shape [V, {H}] (hidden size of hidden), got {tuple(weight.shape)}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight has dtype {weight.dtype} but hidden has {hidden.dtype}; cast one of them")
    _check_tensor(targets, "targets", shape=(B, T), floating=False, device=dev)
    _check_tensor(mask, "mask", shape=(B, T), device=dev)
    _check_tensor(advantages, "advantages", dims=(1, 2), device=dev)
    if advantages.dim() == 1 and advantages.shape[0] != B or advantages.dim() == 2 and tuple(advantages.shape) != (B, T):
        raise ValueError(f"advantages must have shape [{B}] or [{B}, {T}], got {tuple(advantages.shape)}")
    for name, x in (("token_rewards", token_rewards), ("old_logprobs", old_logprobs), ("ref_logprobs", ref_logprobs)):
        if x is not None:
            _check_tensor(x, name, shape=(B, T), floating=True, device=dev)
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_TYPES)}; got {loss_type!r}")
    if beta != 0.0 and ref_logprobs is None:
        raise ValueError("beta != 0 needs ref_logprobs (the reference policy's log-probs of targets)")
    if not (temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if eps_low < 0 or eps_high < 0 or eps_low >= 1:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low}, eps_high={eps_high}")
    if max_completion_length is not None and max_completion_length <= 0:
        raise ValueError(f"max_completion_length must be > 0, got {max_completion_length!r}")
    backend = _resolve_backend(backend, dev)
    V = weight.shape[0]
    _check_target_range(targets, V)
    if check_finite:
        _check_finite_on_mask(mask, advantages=advantages, token_rewards=token_rewards, old_logprobs=old_logprobs,
                              ref_logprobs=ref_logprobs if beta != 0.0 else None)
    names = ("kl", "clip_ratio", "clip_low", "clip_high", "ratio_mean", "ratio_max") + (
        ("entropy",) if return_entropy else ())
    if B * T == 0:  # nothing counts: zero loss, zero gradients (graph kept so backward() works)
        zero = hidden.sum() * 0.0 + (weight.sum() * 0.0 if weight.requires_grad else 0.0)
        return zero.float(), {k: torch.zeros((), device=dev) for k in names}

    adv = advantages.float()
    adv = adv[:, None].expand(B, T) if adv.dim() == 1 else adv
    if token_rewards is not None:
        adv = adv + alpha * token_rewards.float()
    coef = _token_weights(mask, loss_type, max_completion_length, num_items)
    N = B * T
    flat = lambda x: None if x is None else x.reshape(N).float()  # noqa: E731
    cfg = _PassConfig(backend=backend, chunk=_chunk_rows(V, N, chunk_size, backend), beta=float(beta),
                      eps_low=float(eps_low), eps_high=float(eps_high), temperature=float(temperature),
                      want_entropy=bool(return_entropy), recompute=bool(recompute))
    out = _FusedGRPO.apply(hidden.reshape(N, H), weight, targets.reshape(N).long(), coef.reshape(N),
                           adv.reshape(N), flat(old_logprobs), flat(ref_logprobs) if beta != 0.0 else None, cfg)
    return out[0], dict(zip(names, out[2:]))


@torch.no_grad()
def fused_logprobs(hidden, weight, targets, *, temperature=1.0, return_entropy=False, chunk_size=None,
                   backend=None):
    """Log-probs of targets under logits = hidden @ weight.T / temperature, fp32, shape of targets;
    with return_entropy also the entropy of each position. One pass, no grad (old/reference log-probs).
    backend: as for fused_grpo_loss."""
    _check_tensor(hidden, "hidden", dims=(2, 3), floating=True)
    dev = hidden.device
    H = hidden.shape[-1]
    _check_tensor(weight, "weight", dims=(2,), floating=True, device=dev)
    if weight.shape[1] != H:
        raise ValueError(f"weight must have shape [V, {H}] (hidden size of hidden), got {tuple(weight.shape)}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight has dtype {weight.dtype} but hidden has {hidden.dtype}; cast one of them")
    _check_tensor(targets, "targets", shape=hidden.shape[:-1], floating=False, device=dev)
    if not (temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    backend = _resolve_backend(backend, dev)
    V = weight.shape[0]
    _check_target_range(targets, V)
    h = hidden.reshape(-1, H)
    t = targets.reshape(-1).long()
    N = h.shape[0]
    # RELATE_FAST_LOGPROBS=split selects the single-kernel variant (kernels/logprobs.py: logits
    # tiles in registers, vocabulary split across programs) for comparison in bench_loss.py.
    if backend == "triton" and dev.type == "cuda" and os.environ.get("RELATE_FAST_LOGPROBS") == "split":
        from relate_fast.kernels.logprobs import logprobs as split_logprobs

        res = split_logprobs(h, weight, t, temperature, return_entropy)
        res = res if return_entropy else (res,)
        out = tuple(x.reshape(targets.shape) for x in res)
        return out if return_entropy else out[0]
    rows = _ROWS[backend]
    prod = _Products(weight, False, None)
    out = torch.empty(N, dtype=torch.float32, device=dev)
    ent = torch.empty(N, dtype=torch.float32, device=dev) if return_entropy else None
    chunk = _chunk_rows(V, N, chunk_size, backend)
    zbuf = torch.empty(min(chunk, N), V, dtype=torch.float32, device=dev) if N else None
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        z = prod.logits(h[s:e], zbuf[: e - s])
        lse, z_tgt, en = rows.stats(z, t[s:e], 1.0 / temperature, return_entropy)
        out[s:e] = z_tgt - lse
        if return_entropy:
            ent[s:e] = en
    out = out.reshape(targets.shape)
    return (out, ent.reshape(targets.shape)) if return_entropy else out
