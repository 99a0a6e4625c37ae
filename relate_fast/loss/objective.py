"""The GRPO objective per token (RELATE eq. 6) and the per-token weights of each loss type: the
only place the method's math is written. Pure functions on [N] vectors, shared by both backends."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict

import torch

__all__ = ["LOSS_TYPES", "LossType", "LOSS_REGISTRY", "register_loss_type", "token_weights", "token_terms",
           "objective_metrics"]


@dataclass(frozen=True)
class LossType:
    """How a loss type reduces the per-token terms: loss = Σ per[b, t]·c[b, t] with c = weights(m, L, n)
    (m: the float mask, L: max_completion_length, n: num_items). `token_normalised`: c divides by a token
    count, so micro-batches of one optimizer step add up to the batch's loss only through one global
    count (the trainer passes it as num_items); otherwise each micro-batch's loss scales by its share
    of the rows."""
    name: str
    weights: Callable
    token_normalised: bool


LOSS_REGISTRY: Dict[str, LossType] = {}


def register_loss_type(name: str, *, token_normalised: bool):
    """Decorator: registers ``weights(m [B, T] float, max_completion_length, num_items) -> c [B, T]``."""
    def deco(fn):
        if name in LOSS_REGISTRY:
            raise ValueError(f"loss type {name!r} is already registered")
        LOSS_REGISTRY[name] = LossType(name, fn, token_normalised)
        return fn
    return deco


@register_loss_type("grpo", token_normalised=False)
def _grpo(m, max_completion_length, num_items):
    """Mean over sequences of the per-sequence token mean."""
    return m / (m.shape[0] * m.sum(dim=1, keepdim=True).clamp(min=1.0))


@register_loss_type("bnpo", token_normalised=True)
def _bnpo(m, max_completion_length, num_items):
    """Token mean over the batch."""
    return m / m.sum().clamp(min=1.0)


@register_loss_type("dr_grpo", token_normalised=False)
def _dr_grpo(m, max_completion_length, num_items):
    """Sum over tokens / (B · max_completion_length), a constant denominator."""
    B, T = m.shape
    return m / (B * (T if max_completion_length is None else max_completion_length))


@register_loss_type("dapo", token_normalised=True)
def _dapo(m, max_completion_length, num_items):
    """Sum over tokens / num_items (the global token count; default the local mask sum)."""
    n = m.sum().clamp(min=1.0) if num_items is None else torch.as_tensor(num_items, dtype=torch.float32, device=m.device)
    return m / n


@register_loss_type("seq_sum", token_normalised=False)
def _seq_sum(m, max_completion_length, num_items):
    """The paper's eq. 6: sum over tokens, mean over sequences."""
    return m / m.shape[0]


LOSS_TYPES = tuple(LOSS_REGISTRY)


def token_weights(mask: torch.Tensor, loss_type: str, max_completion_length, num_items) -> torch.Tensor:
    """c[b, t] such that loss = Σ per[b, t]·c[b, t] for each reduction (m = mask)."""
    return LOSS_REGISTRY[loss_type].weights(mask.float(), max_completion_length, num_items)


def token_terms(logp, old, adv, ref, coef, beta: float, eps_low: float, eps_high: float, sampler=None,
                tis_cap=None):
    """Per-token loss contribution per·c, its derivative g = c·d per/d logp, and the metric inputs.

    The one place the objective (RELATE eq. 6) is written: ρ = exp(logp - old),
    per = -min(ρ·A, clip(ρ, 1-ε_low, 1+ε_high)·A) + β·k3, k3 = exp(ref-logp) - (ref-logp) - 1.

    With the sampler's log-probs (`sampler`: the engine that generated the tokens, whose numerics or
    weights may differ from the trainer's), A is weighted per token by the truncated importance weight
    w = min(exp(old - sampler), C) (C = `tis_cap`; old = logp detached when there is no old policy):
    the behaviour policy was the sampler's, not the trainer's old policy. w ≥ 0 scales both terms of
    the min alike, so the clip is unchanged. `tis_cap` None: w = 1 (the mismatch is measured, not
    corrected). Returns (per·c, g, ratio, k3, clip_low, clip_high, w, gap) with gap = old - sampler.
    """
    o = logp if old is None else old
    w = gap = None
    if sampler is not None:
        gap = o - sampler
        if tis_cap is not None:
            w = torch.exp(gap).clamp(max=tis_cap)
            adv = adv * w
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
    return (torch.where(live, per * coef, zero), torch.where(live, dper * coef, zero), ratio, k3, clip_low, clip_high,
            w, gap)


def objective_metrics(coef, ratio, k3, clip_low, clip_high, entropy, tis_w=None, gap=None,
                      tis_cap=None) -> Dict[str, torch.Tensor]:
    """Masked means over the tokens that count (c > 0), as detached tensors, without a host sync. With
    the sampler's log-probs: the trainer-sampler log-prob gap (mean and mean absolute) and, when the
    weights are applied, their mean, max and the share truncated at the cap."""
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
    if gap is not None:
        out["sampler_gap"], out["sampler_gap_abs"] = mean(gap), mean(gap.abs())
    if tis_w is not None:
        out["tis_weight_mean"] = mean(tis_w)
        out["tis_weight_max"] = (torch.where(m, tis_w, torch.zeros_like(tis_w)).max() if tis_w.numel()
                                 else torch.zeros((), device=coef.device))
        out["tis_truncated"] = mean((tis_w >= tis_cap).float())
    return out
