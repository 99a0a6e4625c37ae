"""relate_fast's fused loss inside TRL's GRPOTrainer (tested with trl 1.16.0).

    from relate_fast.integrations.trl import RelateGRPOTrainer

    trainer = RelateGRPOTrainer(model=..., reward_funcs=..., args=GRPOConfig(...), train_dataset=...,
                                token_reward_fn=my_token_rewards, alpha=1.0)
    trainer.train()

Everything else is TRL's: generation, rewards, advantages, reference model, logging. Only the loss
changes: it is computed by :func:`relate_fast.fused_grpo_loss` from the policy's last hidden states
and the lm_head weight, so the [tokens × vocab] logits of the update never exist, and it accepts
RELATE's token-level rewards: ``token_reward_fn(completion_ids: list[list[int]], inputs) -> [B, T]``
(for instance :func:`relate_fast.matcher.token_rewards` on blacklist and n-gram hits) is added to
the advantages as A = advantages + α·r_tok before the clip.

TRL's config maps one to one: ``loss_type`` (grpo, bnpo, dr_grpo, dapo), ``epsilon`` /
``epsilon_high``, ``beta`` (k3 KL to ``ref_per_token_logps``), ``temperature``,
``max_completion_length`` (dr_grpo), ``num_items_in_batch`` (dapo's normaliser, rescaled exactly as
TRL does), and vLLM's importance-sampling correction (a positive per-token weight on the clipped
term, folded into per-token advantages). Options whose math the fused loss does not implement
(other loss types, sequence-level importance sampling, the entropy mask or bonus, the off-policy
mask, two-sided clipping, the KL bias correction, multimodal inputs) are refused at construction.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch

from relate_fast.loss import fused_grpo_loss

try:
    from trl import GRPOTrainer
except ImportError as e:  # pragma: no cover - the module is only useful with TRL installed
    raise ImportError("relate_fast.integrations.trl needs TRL (pip install trl==1.16.0)") from e

__all__ = ["RelateGRPOTrainer"]

SUPPORTED_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo")


def _unwrap(model):
    for attr in ("module", "base_model"):
        while hasattr(model, attr) and not hasattr(model, "lm_head"):
            model = getattr(model, attr)
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return model


class RelateGRPOTrainer(GRPOTrainer):
    """TRL's GRPOTrainer with relate_fast's fused loss and RELATE's token-level rewards."""

    def __init__(self, *args, token_reward_fn: Optional[Callable] = None, alpha: float = 1.0,
                 backend: Optional[str] = None, **kwargs):
        super().__init__(*args, **kwargs)
        a = self.args
        problems = []
        if self.loss_type not in SUPPORTED_LOSS_TYPES:
            problems.append(f"loss_type={self.loss_type!r} (supported: {SUPPORTED_LOSS_TYPES})")
        if self.importance_sampling_level != "token":
            problems.append("importance_sampling_level='sequence'")
        if self.top_entropy_quantile < 1.0:
            problems.append("top_entropy_quantile < 1")
        if self.off_policy_mask_threshold is not None:
            problems.append("off_policy_mask_threshold")
        if getattr(a, "delta", None) is not None:
            problems.append("delta (two-sided clipping)")
        if self.beta != 0.0 and getattr(a, "use_bias_correction_kl", False):
            problems.append("use_bias_correction_kl with beta != 0 (set use_bias_correction_kl=False)")
        if getattr(self, "_entropy_bonus_enabled", False):
            problems.append("an entropy bonus")
        if problems:
            raise ValueError("RelateGRPOTrainer: the fused loss does not implement " + ", ".join(problems))
        self.token_reward_fn, self.alpha, self.backend = token_reward_fn, float(alpha), backend

    # -- token-level rewards travel with the batch ---------------------------------------------------
    def _generate_and_score_completions(self, inputs):
        out = super()._generate_and_score_completions(inputs)
        if self.token_reward_fn is not None:
            ids, mask = out["completion_ids"], out["completion_mask"]
            seqs = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
            r = torch.as_tensor(self.token_reward_fn(seqs, out), dtype=torch.float32)
            if r.dim() != 2 or r.shape[0] != ids.shape[0] or r.shape[1] > ids.shape[1]:
                raise ValueError(f"token_reward_fn returned shape {tuple(r.shape)}; expected [{ids.shape[0]}, <= "
                                 f"{ids.shape[1]}]")
            out["token_rewards"] = torch.nn.functional.pad(r, (0, ids.shape[1] - r.shape[1])).to(ids.device)
        return out

    # -- the loss --------------------------------------------------------------------------------------
    def _last_hidden(self, model, input_ids, attention_mask, logits_to_keep):
        from relate_fast.batching import trunk_and_head

        trunk, head = trunk_and_head(_unwrap(model))
        with self.accelerator.autocast():
            h = trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).last_hidden_state
        # the state at position p predicts token p + 1: keep the ones that predict the completion
        return h[:, -logits_to_keep - 1:-1], head

    def _compute_loss(self, model, inputs):
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        T = completion_ids.size(1)
        mask = completion_mask if "tool_mask" not in inputs else completion_mask * inputs["tool_mask"]
        hidden, weight = self._last_hidden(model, input_ids, attention_mask, T)
        if hidden.dtype != weight.dtype:
            hidden = hidden.to(weight.dtype)

        advantages = inputs["advantages"]
        token_rewards = inputs.get("token_rewards")
        is_ratio = inputs.get("importance_sampling_ratio") if (
            self.use_vllm and self.vllm_importance_sampling_correction) else None
        if is_ratio is not None:
            # TRL multiplies the clipped term by a positive per-token weight w; since
            # -min(ρA, clip(ρ)A)·w = -min(ρ(Aw), clip(ρ)(Aw)), it becomes per-token advantages A·w.
            adv = advantages if advantages.dim() == 2 else advantages.unsqueeze(1).expand(-1, T)
            if token_rewards is not None:
                adv = adv + self.alpha * token_rewards
            advantages, token_rewards = adv * is_ratio.expand_as(adv), None

        mode = "train" if self.model.training else "eval"
        kw = dict(token_rewards=token_rewards, alpha=self.alpha, old_logprobs=inputs.get("old_per_token_logps"),
                  ref_logprobs=inputs.get("ref_per_token_logps") if self.beta != 0.0 else None, beta=self.beta,
                  eps_low=self.epsilon_low, eps_high=self.epsilon_high, temperature=self.temperature,
                  return_entropy=True, backend=self.backend)
        gas = self.current_gradient_accumulation_steps if mode == "train" else 1.0
        if self.loss_type == "dapo":
            # TRL's normaliser: num_items_in_batch spans the generation batch; rescaled to one accumulation window
            normalizer = inputs["num_items_in_batch"].clamp(min=1.0) / self.accelerator.num_processes
            if mode == "train":
                normalizer = normalizer * self.current_gradient_accumulation_steps / self.args.steps_per_generation
            loss, m = fused_grpo_loss(hidden, weight, completion_ids, mask, advantages, loss_type="dapo",
                                      num_items=normalizer, **kw)
        else:
            loss, m = fused_grpo_loss(hidden, weight, completion_ids, mask, advantages, loss_type=self.loss_type,
                                      max_completion_length=self.max_completion_length, **kw)
            loss = loss / gas

        gather = self.accelerator.gather
        if self.beta != 0.0:
            self._metrics[mode]["kl"].append(gather(m["kl"].reshape(1)).nanmean().item())
        self._metrics[mode]["entropy"].append(gather(m["entropy"].reshape(1)).nanmean().item())
        for key, name in (("clip_low", "clip_ratio/low_mean"), ("clip_high", "clip_ratio/high_mean"),
                          ("clip_ratio", "clip_ratio/region_mean")):
            self._metrics[mode][name].append(gather(m[key].reshape(1)).nanmean().item())
        return loss
