"""A verl policy loss for bench_vs_verl.py's `--verl-loss relate_checked`: RELATE's loss ("relate", what the
run trains with), plus verl's own vanilla loss on the same micro-batch, logged as
`actor/relate_minus_vanilla` (their difference) and `actor/vanilla_pg_loss`. On policy (one update per batch)
the ratios are 1 up to bf16 noise, where verl's dual clip never acts, so the difference is that noise.

Where a group's rewards are all equal every advantage is 0 and both losses are 0 whatever the code (the fixed
workload on random weights scores every response -2.0), so the check also runs both losses on the micro-batch's
own log-probs, old log-probs and mask with probe advantages (seeded, one per sequence, as GRPO's): the losses'
difference and their gradients' distance with respect to the log-probs, logged as `actor/probe_relate_minus_vanilla`,
`actor/probe_vanilla_pg_loss` and `actor/probe_grad_rel_diff`. The probe runs on a detached copy of the log-probs:
it adds nothing to the step's gradient.
Imported in verl's processes through VERL_USE_EXTERNAL_MODULES (with relate_fast.integrations.verl_plugin)."""
from __future__ import annotations

import torch

from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla, register_policy_loss

from relate_fast.integrations.verl import relate_policy_loss


def probe_advantages(response_mask: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """One standard-normal advantage per sequence (rows of the micro-batch), broadcast over its tokens."""
    g = torch.Generator().manual_seed(seed)
    per_row = torch.randn(response_mask.shape[0], 1, generator=g, dtype=torch.float32)
    return per_row.to(response_mask.device).expand(response_mask.shape).contiguous()


def probe(old_log_prob, log_prob, response_mask, loss_agg_mode, config, rollout_is_weights=None) -> dict:
    """Ours and verl's vanilla on the micro-batch's tensors with probe advantages: loss gap and gradient distance."""
    adv = probe_advantages(response_mask)
    with torch.enable_grad():
        lp = log_prob.detach().float().requires_grad_()
        old = old_log_prob.detach().float()
        ours, _ = relate_policy_loss(old, lp, adv, response_mask, loss_agg_mode, config, rollout_is_weights)
        (g_ours,) = torch.autograd.grad(ours, lp)
        theirs, _ = compute_policy_loss_vanilla(old, lp, adv, response_mask, loss_agg_mode, config, rollout_is_weights)
        (g_theirs,) = torch.autograd.grad(theirs, lp)
    return {"actor/probe_relate_minus_vanilla": float(ours - theirs), "actor/probe_vanilla_pg_loss": float(theirs),
            "actor/probe_grad_rel_diff": float((g_ours - g_theirs).norm() / g_theirs.norm().clamp_min(1e-30))}


@register_policy_loss("relate_checked")
def relate_checked_policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                               config=None, rollout_is_weights=None):
    loss, metrics = relate_policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                                       rollout_is_weights)
    with torch.no_grad():
        vanilla, _ = compute_policy_loss_vanilla(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode,
                                                 config, rollout_is_weights)
    metrics["actor/relate_minus_vanilla"] = float(loss.detach() - vanilla)
    metrics["actor/vanilla_pg_loss"] = float(vanilla)
    metrics.update(probe(old_log_prob, log_prob, response_mask, loss_agg_mode, config, rollout_is_weights))
    return loss, metrics
