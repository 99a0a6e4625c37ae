"""RELATE's clipped GRPO objective with per-token KL and combined advantages, straight from the last
hidden states and the lm_head weight, never materialising the [tokens × vocab] logits.

Public contract (see the project's DESIGN notes)::

    loss, metrics = fused_grpo_loss(hidden, weight, targets, mask, advantages, *, token_rewards=None,
                                    alpha=1.0, old_logprobs=None, ref_logprobs=None, beta=0.0,
                                    eps_low=0.2, eps_high=0.2, temperature=1.0, loss_type="grpo",
                                    max_completion_length=None, num_items=None)
    logprobs = fused_logprobs(hidden, weight, targets, *, temperature=1.0, return_entropy=False)
    adv = group_advantages(rewards, group_size, *, scale=True, eps=1e-6)

Implementation status: on CUDA, `fused_logprobs` runs the Triton kernel of
relate_fast.kernels.logprobs (1.4-1.65x one lm_head product on an H100; the target is 1.10x);
elsewhere, and for `fused_grpo_loss` on every device, the chunked torch path runs. The Triton
kernels of `fused_grpo_loss` are not written yet.

Algorithm: every loss type is a weighted sum of per-token terms, loss = Σ_t per[t]·c[t], with
weights c[t] known before the pass (see `_token_weights`). So each chunk of tokens computes its
logits (one chunk only), log-sum-exp, the target log-prob, the per-token objective and its
derivative dL/dlogp, turns that into dlogits in place, and immediately accumulates grad_hidden and
grad_weight: 3 matrix products per chunk in total, no recomputation in backward.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Optional, Tuple

import torch

__all__ = ["fused_grpo_loss", "fused_logprobs", "group_advantages", "LOSS_TYPES"]

LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "seq_sum")

# Logits of one chunk are at most this many bytes in fp32 (plus the same again for dlogits).
_CHUNK_BYTES = 256 * 2**20


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
    r = rewards.float().view(-1, group_size)
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


# --------------------------------------------------------------------------- the chunked pass


def _chunk_rows(V: int, N: int, chunk_size: Optional[int]) -> int:
    if chunk_size is not None:
        return max(1, chunk_size)
    return max(1, min(N, _CHUNK_BYTES // (4 * max(V, 1))))


def _logits(h: torch.Tensor, weight: torch.Tensor, temperature: float) -> torch.Tensor:
    # operands in their own dtype (bf16 products accumulate in fp32), result upcast once
    z = (h @ weight.t()).float()
    return z / temperature if temperature != 1.0 else z


class _FusedGRPO(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, coef, adv, old, ref, beta, eps_low, eps_high, temperature,
                chunk, want_entropy):
        N, H = hidden.shape
        V = weight.shape[0]
        need_dw = ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if ctx.needs_input_grad[0] else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_dw else None
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        logp_all = torch.empty(N, dtype=torch.float32, device=hidden.device)
        stats = torch.zeros(7, dtype=torch.float32, device=hidden.device)  # kl, clip, low, high, ratio, entropy, mass
        ratio_max = torch.full((), -math.inf, dtype=torch.float32, device=hidden.device)
        for s in range(0, N, chunk):
            e = min(N, s + chunk)
            h = hidden[s:e]
            z = _logits(h, weight, temperature)  # [C, V] fp32: the only vocab-sized buffer
            lse = torch.logsumexp(z, dim=1)
            tgt = targets[s:e]
            logp = z.gather(1, tgt[:, None]).squeeze(1) - lse
            logp_all[s:e] = logp
            a = adv[s:e]
            c = coef[s:e]
            o = logp if old is None else old[s:e]
            ratio = torch.exp(logp - o)
            clip_high = (a > 0) & (ratio > 1.0 + eps_high)
            clip_low = (a < 0) & (ratio < 1.0 - eps_low)
            clipped = clip_high | clip_low
            ratio_c = ratio.clamp(1.0 - eps_low, 1.0 + eps_high)
            per = -torch.minimum(ratio * a, ratio_c * a)
            dper = torch.where(clipped, torch.zeros_like(ratio), -a * ratio)  # d per / d logp
            m = (c > 0).float()
            if beta != 0.0:
                delta = ref[s:e] - logp
                k3 = torch.exp(delta) - delta - 1.0
                per = per + beta * k3
                dper = dper + beta * (1.0 - torch.exp(delta))
                stats[0] += torch.where(m > 0, k3, torch.zeros_like(k3)).sum()
            live = c != 0
            # padding may hold anything (inf k3 against a garbage reference): where, not multiply
            loss += torch.where(live, per * c, torch.zeros_like(per)).sum()
            stats[1] += (clipped.float() * m).sum()
            stats[2] += (clip_low.float() * m).sum()
            stats[3] += (clip_high.float() * m).sum()
            stats[4] += torch.where(m > 0, ratio, torch.zeros_like(ratio)).sum()
            stats[6] += m.sum()
            ratio_max = torch.maximum(ratio_max, torch.where(m > 0, ratio, torch.full_like(ratio, -math.inf)).max())
            # softmax in place of z, then dlogits = g·(onehot - softmax)/T, still in place
            z.sub_(lse[:, None]).exp_()
            if want_entropy:
                # H = lse - Σ p·z  (z the scaled logits) = -Σ p·log p
                zl = torch.log(z.clamp_min(1e-38))
                stats[5] += (-(z * zl).sum(dim=1) * m).sum()
                del zl
            g = torch.where(live, dper * c, torch.zeros_like(dper))  # dL/dlogp
            z.mul_(-g[:, None])
            z.scatter_add_(1, tgt[:, None], g[:, None])
            if temperature != 1.0:
                z.div_(temperature)
            dz = z.to(hidden.dtype)
            if grad_h is not None:
                grad_h[s:e] = dz @ weight
            if need_dw:
                grad_w += (dz.t() @ h).float()
            del z, dz
        ctx.save_for_backward(grad_h if grad_h is not None else torch.empty(0),
                              grad_w if grad_w is not None else torch.empty(0))
        ctx.weight_dtype = weight.dtype
        ctx.has_gh, ctx.has_gw = grad_h is not None, grad_w is not None
        mass = stats[6].clamp(min=1.0)
        metrics = torch.cat([stats[:6] / mass, ratio_max.reshape(1)])
        ctx.mark_non_differentiable(logp_all, metrics)
        return loss, logp_all, metrics

    @staticmethod
    def backward(ctx, grad_loss, _grad_logp, _grad_metrics):
        grad_h, grad_w = ctx.saved_tensors
        gh = grad_h * grad_loss.to(grad_h.dtype) if ctx.has_gh else None
        gw = (grad_w * grad_loss).to(ctx.weight_dtype) if ctx.has_gw else None
        return gh, gw, None, None, None, None, None, None, None, None, None, None, None


# --------------------------------------------------------------------------- public functions


def fused_grpo_loss(hidden, weight, targets, mask, advantages, *, token_rewards=None, alpha=1.0,
                    old_logprobs=None, ref_logprobs=None, beta=0.0, eps_low=0.2, eps_high=0.2,
                    temperature=1.0, loss_type="grpo", max_completion_length=None, num_items=None,
                    return_entropy=False, chunk_size=None) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Clipped GRPO objective (RELATE eq. 6) with A = advantages + alpha·token_rewards and β·k3 KL.

    Returns (loss, metrics); metrics holds detached tensors (no host sync): kl, clip_ratio,
    clip_low, clip_high, ratio_mean, ratio_max (masked over tokens), entropy when return_entropy.
    Gradients flow to hidden and weight (none to weight when it does not require grad).
    chunk_size: tokens per chunk (default: logits of a chunk stay under 256 MiB).
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
    V = weight.shape[0]
    _check_target_range(targets, V)

    adv = advantages.float()
    adv = adv[:, None].expand(B, T) if adv.dim() == 1 else adv
    if token_rewards is not None:
        adv = adv + alpha * token_rewards.float()
    coef = _token_weights(mask, loss_type, max_completion_length, num_items)
    N = B * T
    flat = lambda x: None if x is None else x.reshape(N).float()  # noqa: E731
    loss, _, m = _FusedGRPO.apply(
        hidden.reshape(N, H), weight, targets.reshape(N).long(), coef.reshape(N), adv.reshape(N),
        flat(old_logprobs), flat(ref_logprobs) if beta != 0.0 else None, float(beta), float(eps_low),
        float(eps_high), float(temperature), _chunk_rows(V, N, chunk_size), bool(return_entropy))
    metrics = {"kl": m[0], "clip_ratio": m[1], "clip_low": m[2], "clip_high": m[3], "ratio_mean": m[4],
               "ratio_max": m[6]}
    if return_entropy:
        metrics["entropy"] = m[5]
    return loss, metrics


@torch.no_grad()
def fused_logprobs(hidden, weight, targets, *, temperature=1.0, return_entropy=False, chunk_size=None):
    """Log-probs of targets under logits = hidden @ weight.T / temperature, fp32, shape of targets;
    with return_entropy also the entropy of each position. One pass, no grad (old/reference log-probs)."""
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
    V = weight.shape[0]
    _check_target_range(targets, V)
    h = hidden.reshape(-1, H)
    t = targets.reshape(-1).long()
    N = h.shape[0]
    # CUDA: the Triton kernel (one pass, logits never stored; faster than the chunked torch path at
    # every size measured, benchmarks/RESULTS.md). RELATE_FAST_TRITON_LOGPROBS=0 turns it off.
    if dev.type == "cuda" and chunk_size is None and os.environ.get("RELATE_FAST_TRITON_LOGPROBS", "1") != "0":
        from relate_fast.kernels.logprobs import logprobs as triton_logprobs

        res = triton_logprobs(h, weight, t, temperature, return_entropy)
        if return_entropy:
            return res[0].reshape(targets.shape), res[1].reshape(targets.shape)
        return res.reshape(targets.shape)
    out = torch.empty(N, dtype=torch.float32, device=dev)
    ent = torch.empty(N, dtype=torch.float32, device=dev) if return_entropy else None
    chunk = _chunk_rows(V, N, chunk_size)
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        z = _logits(h[s:e], weight, temperature)
        lse = torch.logsumexp(z, dim=1)
        out[s:e] = z.gather(1, t[s:e, None]).squeeze(1) - lse
        if return_entropy:
            p = torch.softmax(z, dim=1)
            ent[s:e] = lse - (p * z).sum(dim=1)
    out = out.reshape(targets.shape)
    return (out, ent.reshape(targets.shape)) if return_entropy else out
