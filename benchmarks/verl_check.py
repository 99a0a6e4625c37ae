"""A verl policy loss for bench_vs_verl.py's `--verl-loss relate_checked`: RELATE's loss ("relate", what the
run trains with), plus verl's own vanilla loss on the same micro-batch, logged as
`actor/relate_minus_vanilla` (their difference) and `actor/vanilla_pg_loss`. On policy (one update per batch)
the ratios are 1 up to bf16 noise, where verl's dual clip never acts, so the difference is that noise.
Imported in verl's processes through VERL_USE_EXTERNAL_MODULES (with relate_fast.integrations.verl_plugin)."""
from __future__ import annotations

import torch

from verl.trainer.ppo.core_algos import compute_policy_loss_vanilla, register_policy_loss

from relate_fast.integrations.verl import relate_policy_loss


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
    return loss, metrics
