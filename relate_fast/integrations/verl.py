"""RELATE in verl (written against verl 0.9.1's `verl/trainer/ppo/core_algos.py`).

    import relate_fast.integrations.verl as relate_verl
    relate_verl.register()          # adds the policy loss "relate" and the estimator "relate_grpo"
    # then in the verl config:  actor_rollout_ref.actor.policy_loss.loss_mode=relate
    #                           algorithm.adv_estimator=relate_grpo

- ``relate_grpo_advantage`` keeps token-level rewards, which verl's GRPO estimator sums away. verl
  passes one [B, T] ``token_level_rewards`` tensor; the convention here: the sentence reward r_i sits
  on the last response token (where verl's reward managers put it) and every other entry is RELATE's
  token reward r_tok[i, t] (the matcher's −λ·mask). Then A[i, t] = (r_i − mean_g) / (std_g + ε) +
  α·r_tok[i, t] (eq. 7–9; α from ``algorithm.relate_alpha``, default 1). A token reward on the very
  last token is read as part of r_i — harmless in RELATE, where the last token is EOS and never flagged.
- ``relate_policy_loss`` is eq. 6 on per-token advantages: −min(ρA, clip(ρ, 1−ε_low, 1+ε_high)A),
  aggregated with verl's ``agg_loss`` modes. It has no dual clip (verl's vanilla loss applies one,
  ``clip_ratio_c`` = 3, to negative advantages): with dual clip off the two are equal (tests).

The policy-loss interface of verl takes log-probabilities that verl's actor has already computed,
so inside verl the [tokens × vocab] logits are verl's business (its ``use_fused_kernels`` option);
what this module adds is RELATE's objective and token-level credit assignment. For the fused
hidden-state loss itself, call :func:`relate_fast.fused_grpo_loss` from a custom actor.

- ``use_fused_logprobs()`` swaps the kernel under verl's own fused-kernel forward
  (``actor_rollout_ref.model.use_fused_kernels=True`` with ``fused_kernel_options.impl_backend=triton``:
  verl's ``linear_cross_entropy``) for relate_fast's chunked pass with a backward
  (:func:`relate_fast.loss.fused_logprobs_with_grad`), so that any verl policy loss, "relate" or verl's own,
  gets its log-probs from our kernels; entropy comes back for metrics, without gradient (verl's
  ``entropy_coeff`` must be 0, its default: a non-zero one is an error in the backward).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np
import torch

__all__ = ["relate_grpo_advantage", "relate_policy_loss", "agg_loss", "register", "linear_cross_entropy",
           "use_fused_logprobs"]


def _masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1)


def agg_loss(loss_mat: torch.Tensor, loss_mask: torch.Tensor, loss_agg_mode: str, *, dp_size: int = 1,
             batch_num_tokens=None, global_batch_size=None, loss_scale_factor=None) -> torch.Tensor:
    """verl's aggregation modes (token-mean, token-sum, seq-mean-token-sum, seq-mean-token-sum-norm,
    seq-mean-token-mean), same arguments; used when verl itself is not importable."""
    mask = loss_mask.to(loss_mat.dtype)
    if loss_agg_mode == "token-mean":
        n = mask.sum() if batch_num_tokens is None else batch_num_tokens
        return (loss_mat * mask).sum() / n * dp_size
    if loss_agg_mode == "token-sum":
        return (loss_mat * mask).sum() * dp_size
    if loss_agg_mode in ("seq-mean-token-sum", "seq-mean-token-sum-norm"):
        seq = (loss_mat * mask).sum(-1)
        seq_mask = (mask.sum(-1) > 0).to(loss_mat.dtype)
        g = seq_mask.sum() if global_batch_size is None else global_batch_size
        loss = (seq * seq_mask).sum() / g * dp_size
        if loss_agg_mode == "seq-mean-token-sum-norm":
            loss = loss / (loss_mask.shape[-1] if loss_scale_factor is None else loss_scale_factor)
        return loss
    if loss_agg_mode == "seq-mean-token-mean":
        count = mask.sum(-1)
        seq = (loss_mat * mask).sum(-1) / (count + 1e-8)
        seq_mask = (count > 0).to(loss_mat.dtype)
        g = seq_mask.sum() if global_batch_size is None else global_batch_size
        return (seq * seq_mask).sum() / g * dp_size
    raise ValueError(f"unknown loss_agg_mode {loss_agg_mode!r}")


def _cfg_get(config, key, default):
    if config is None:
        return default
    if hasattr(config, "get"):
        v = config.get(key, default)
    else:
        v = getattr(config, key, default)
    return default if v is None else v


def relate_grpo_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index: np.ndarray,
                          epsilon: float = 1e-6, norm_adv_by_std_in_grpo: bool = True, config: Optional[Any] = None):
    """verl advantage estimator: GRPO on the sentence reward plus α·r_tok per token. Returns (advantages, returns)."""
    mask = response_mask.to(token_level_rewards.dtype)
    B, T = token_level_rewards.shape
    lengths = response_mask.long().sum(-1)
    last = (lengths - 1).clamp(min=0)
    rows = torch.arange(B, device=token_level_rewards.device)
    sentence = token_level_rewards[rows, last] * (lengths > 0)
    token = token_level_rewards * mask
    token[rows, last] = 0.0
    with torch.no_grad():
        adv = torch.zeros_like(sentence)
        groups: dict = {}
        for i in range(B):
            groups.setdefault(index[i], []).append(i)
        for members in groups.values():
            s = sentence[members]
            if len(members) == 1:  # verl: mean 0, std 1 for a group of one
                mean, std = torch.zeros((), dtype=s.dtype), torch.ones((), dtype=s.dtype)
            else:
                mean, std = s.mean(), s.std()
            adv[members] = (s - mean) / (std + epsilon) if norm_adv_by_std_in_grpo else s - mean
        alpha = float(_cfg_get(config, "relate_alpha", 1.0))
        advantages = (adv[:, None] + alpha * token) * mask
    return advantages, advantages


def relate_policy_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                       response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config: Optional[Any] = None,
                       rollout_is_weights: Optional[torch.Tensor] = None):
    """verl policy loss: RELATE eq. 6 (clip-higher, no dual clip) with per-token advantages."""
    eps = float(_cfg_get(config, "clip_ratio", 0.2))
    eps_low = float(_cfg_get(config, "clip_ratio_low", eps))
    eps_high = float(_cfg_get(config, "clip_ratio_high", eps))
    log_ratio = torch.clamp(log_prob - old_log_prob, -20.0, 20.0)  # verl's stability clamp
    ratio = torch.exp(log_ratio)
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1 - eps_low, 1 + eps_high)
    per_token = torch.maximum(loss1, loss2)
    if rollout_is_weights is not None:
        per_token = per_token * rollout_is_weights
    batch_info = dict(_cfg_get(config, "global_batch_info", {}) or {})
    try:
        from verl.trainer.ppo.core_algos import agg_loss as verl_agg
    except ImportError:
        verl_agg = agg_loss
    loss = verl_agg(loss_mat=per_token, loss_mask=response_mask, loss_agg_mode=loss_agg_mode, **batch_info)
    metrics = {"actor/pg_clipfrac": _masked_mean(torch.gt(loss2, loss1).float(), response_mask).item(),
               "actor/ppo_kl": _masked_mean(-log_ratio, response_mask).item()}
    return loss, metrics


def register() -> None:
    """Registers "relate" (policy loss) and "relate_grpo" (advantage estimator) in verl's registries."""
    try:
        from verl.trainer.ppo.core_algos import register_adv_est, register_policy_loss
    except ImportError as e:
        raise ImportError("relate_fast.integrations.verl.register() needs verl (tested against 0.9.1's core_algos); "
                          "the functions themselves work without it") from e
    register_policy_loss("relate")(relate_policy_loss)
    register_adv_est("relate_grpo")(relate_grpo_advantage)


_VERL_LCE = "verl.utils.kernel.linear_cross_entropy"
# Tokens per chunk of logits under verl's forward: the workspace is one chunk (1,024 x Qwen3's 151,936 vocabulary
# in bf16: 0.31 GiB, against 1.2 GiB at the loss's own default), which at verl's usual micro-batches (~9k tokens and
# up) is no more than verl's own Triton kernel keeps. Measured at Qwen3-1.7B's head on an H200 (RESULTS.md, commit
# e418f88): 1.05-1.11x the time of the default chunk, still 2.3x faster than verl's kernel.
LOGPROBS_CHUNK_TOKENS = 1024


def linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, temperature: float = 1.0,
                         reduction: str = "none", dist_process_group=None, *,
                         chunk_size: Optional[int] = LOGPROBS_CHUNK_TOKENS):
    """verl 0.9.1's ``linear_cross_entropy`` (same arguments, same results: log-probs and entropy of labels under
    hidden @ weight.T / temperature, flat over the tokens, fp32), by relate_fast's chunked pass. Only what verl's
    fused-kernel forward asks for: reduction "none", no tensor-parallel vocabulary (dist_process_group None).
    chunk_size: tokens per chunk of logits (None: the loss's own default, about 1.25 GB of logits)."""
    if reduction != "none":
        raise NotImplementedError(f"linear_cross_entropy: reduction {reduction!r}; verl's forward asks for 'none'")
    if dist_process_group is not None:
        raise NotImplementedError("linear_cross_entropy: a vocabulary split over a process group is not implemented")
    from relate_fast.loss import fused_logprobs_with_grad

    logp, ent = fused_logprobs_with_grad(hidden, weight, labels, temperature=float(temperature), return_entropy=True,
                                         chunk_size=chunk_size)
    return logp.reshape(-1), ent.reshape(-1)


def use_fused_logprobs(chunk_size: Optional[int] = LOGPROBS_CHUNK_TOKENS) -> None:
    """Makes verl's fused-kernel forward (its Triton backend) take log-probs from relate_fast's kernels, in this
    process: verl's forward imports ``linear_cross_entropy`` from its module at each call, so replacing the module's
    attribute is enough. chunk_size: tokens per chunk of logits, the workspace (LOGPROBS_CHUNK_TOKENS; None: the
    loss's own default, about 1.25 GB of logits)."""
    import importlib
    import functools

    try:
        module = importlib.import_module(_VERL_LCE)
    except ImportError as e:
        raise ImportError(f"use_fused_logprobs() needs verl ({_VERL_LCE}; tested against 0.9.1)") from e
    module.linear_cross_entropy = functools.partial(linear_cross_entropy, chunk_size=chunk_size)
