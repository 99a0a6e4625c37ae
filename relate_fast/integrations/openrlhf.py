"""RELATE's fused loss for OpenRLHF: a drop-in for ``openrlhf.models.loss.PolicyLoss``.

OpenRLHF's actor step computes log-probs from the full logits and then calls
``PolicyLoss(log_probs, old_log_probs, advantages, action_mask) -> (loss, clip_ratio)``. The recipe
replaces both with one call on the last hidden states:

    from relate_fast.integrations.openrlhf import FusedPolicyLoss

    loss_fn = FusedPolicyLoss(clip_eps_low=0.2, clip_eps_high=0.28, token_level_loss=True)
    # in the actor's training step, instead of  log_probs = actor(seqs, ...); loss = actor_loss_fn(...):
    pos = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)   # Actor.forward's positions
    out = actor.model.model(input_ids=seqs, attention_mask=attention_mask, position_ids=pos)   # the HF trunk
    hidden = out.last_hidden_state[:, -num_actions - 1:-1]                         # states that predict the actions
    loss, clip_ratio = loss_fn(hidden, actor.model.lm_head.weight, seqs[:, -num_actions:], old_log_probs,
                               advantages, action_mask, token_rewards=r_tok)       # r_tok: RELATE's [B, T] rewards

Give the trunk the position ids OpenRLHF's ``Actor.forward`` gives it (counted from each row's first token):
RoPE sees only differences of positions, but in bf16 shifted positions round differently, and through 28 layers
that moved a near-on-policy loss by 20 % on an H200 (benchmarks/NOTES_verl.md). ``token_level_loss=True`` is OpenRLHF's token mean over the batch (our ``dapo`` with the batch's
token count); ``False`` is its mean over sequences of per-sequence means (our ``grpo``). OpenRLHF 0.11's actor
passes ``**loss_batch_info`` (the optimizer step's token or sequence count over all ranks) to its loss: pass the
same dictionary here. With
``beta`` > 0 and ``ref_log_probs`` the k3 KL is added inside the loss (OpenRLHF adds its KL to the
reward or the loss elsewhere; leave ``beta`` = 0 to keep OpenRLHF's own handling).
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from relate_fast.loss import fused_grpo_loss

__all__ = ["FusedPolicyLoss"]


class FusedPolicyLoss(nn.Module):
    def __init__(self, clip_eps_low: float = 0.2, clip_eps_high: float = 0.2, token_level_loss: bool = True,
                 *, alpha: float = 1.0, beta: float = 0.0, temperature: float = 1.0) -> None:
        super().__init__()
        self.clip_eps_low, self.clip_eps_high = clip_eps_low, clip_eps_high
        self.token_level_loss, self.alpha, self.beta, self.temperature = token_level_loss, alpha, beta, temperature

    def forward(self, hidden: torch.Tensor, weight: torch.Tensor, actions: torch.Tensor,
                old_log_probs: torch.Tensor, advantages: torch.Tensor, action_mask: Optional[torch.Tensor] = None,
                *, token_rewards: Optional[torch.Tensor] = None, ref_log_probs: Optional[torch.Tensor] = None,
                dp_size: int = 1, batch_num_tokens=None, global_batch_size=None):
        """Returns (loss, clip_ratio) like OpenRLHF's PolicyLoss; advantages [B] or [B, T]. `dp_size`,
        `batch_num_tokens` and `global_batch_size` are OpenRLHF's `loss_batch_info` (its `aggregate_loss`): the
        token or sequence count of the whole optimizer step over all ranks, so that a micro-batch's loss is its
        share of the step's mean; left out, the mean is over this micro-batch, as PolicyLoss's is then."""
        mask = torch.ones_like(actions, dtype=torch.float32) if action_mask is None else action_mask
        kw = dict(token_rewards=token_rewards, alpha=self.alpha, old_logprobs=old_log_probs,
                  ref_logprobs=ref_log_probs if self.beta else None, beta=self.beta, eps_low=self.clip_eps_low,
                  eps_high=self.clip_eps_high, temperature=self.temperature)
        if self.token_level_loss:
            n = (mask.sum().clamp(min=1) if batch_num_tokens is None
                 else torch.as_tensor(batch_num_tokens, device=hidden.device) / dp_size)
            loss, m = fused_grpo_loss(hidden, weight, actions, mask, advantages, loss_type="dapo", num_items=n, **kw)
        else:
            loss, m = fused_grpo_loss(hidden, weight, actions, mask, advantages, loss_type="grpo", **kw)
            if global_batch_size is not None:  # the rows' sum of means over the step's sequences, as theirs
                loss = loss * (actions.shape[0] * dp_size / torch.as_tensor(global_batch_size, device=loss.device))
        return loss, m["clip_ratio"]
