"""Advantage estimators: pure functions from a step's rewards [B] (groups of G consecutive responses)
to the sentence-level advantages A_sent [B], in a registry (`grpo.advantage` picks one; the loss
adds α·r_tok per token). RELATE uses eq. 8, the group z-score.
"""
from __future__ import annotations

from typing import Callable, Dict

import torch

__all__ = ["group_advantages", "ADVANTAGE_ESTIMATORS", "register_advantage_estimator"]

#: name -> fn(rewards [B], group_size) -> advantages [B]
ADVANTAGE_ESTIMATORS: Dict[str, Callable[[torch.Tensor, int], torch.Tensor]] = {}


def register_advantage_estimator(name: str):
    """Decorator: registers ``fn(rewards, group_size) -> advantages`` under `name`."""
    def deco(fn):
        if name in ADVANTAGE_ESTIMATORS:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        ADVANTAGE_ESTIMATORS[name] = fn
        return fn
    return deco


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


@register_advantage_estimator("group_z")
def group_z(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """RELATE eq. 8 (and GRPO's): (r - group mean) / (group std + 1e-6)."""
    return group_advantages(rewards, group_size)


@register_advantage_estimator("group_center")
def group_center(rewards: torch.Tensor, group_size: int) -> torch.Tensor:
    """Dr. GRPO's: r - group mean, not divided by the group's std (no bias toward easy or hard groups)."""
    return group_advantages(rewards, group_size, scale=False)
