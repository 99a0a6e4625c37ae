"""The policy-update math of one GRPO step, independent of how the model is wrapped.

Sequences are laid out as ``[left-padded prompt | right-padded completion]`` so that the hidden
state at column ``P - 1 + t`` predicts completion token t for every row (P = prompt width). The
last hidden states of the completion columns go, with the lm_head weight, into the fused loss;
the [tokens × vocab] logits never exist.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from relate_fast.loss import fused_grpo_loss, fused_logprobs

__all__ = ["PackedBatch", "pack", "micro_batches", "trunk_and_head", "completion_hidden", "sequence_logprobs",
           "grpo_micro_loss"]


@dataclass
class PackedBatch:
    input_ids: torch.Tensor  # [B, P + C]
    attention_mask: torch.Tensor  # [B, P + C]
    position_ids: torch.Tensor  # [B, P + C]
    targets: torch.Tensor  # [B, C] completion ids (0 where padded)
    mask: torch.Tensor  # [B, C] float, 1 on completion tokens
    prompt_width: int
    prompt_lens: torch.Tensor  # [B] int64, always on the CPU: trimming never waits for the device
    completion_lens: torch.Tensor  # [B] int64, CPU

    def to(self, device) -> "PackedBatch":
        """The token tensors on `device` (the lengths stay on the CPU)."""
        return PackedBatch(self.input_ids.to(device), self.attention_mask.to(device), self.position_ids.to(device),
                           self.targets.to(device), self.mask.to(device), self.prompt_width, self.prompt_lens,
                           self.completion_lens)

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    @property
    def num_tokens(self) -> int:
        """Completion tokens (counted on the CPU: no device sync)."""
        return int(self.completion_lens.sum())

    def widths(self, idx) -> tuple:
        """(prompt width, completion width) of rows `idx` trimmed to their longest prompt and completion."""
        return int(self.prompt_lens[idx].max()), max(int(self.completion_lens[idx].max()), 1)

    def rows(self, idx: slice) -> "PackedBatch":
        """Rows `idx`, trimmed to their longest prompt and completion (less padding per micro-batch)."""
        P = self.prompt_width
        prompt_len, comp_len = self.widths(idx)
        cols = slice(P - prompt_len, P + comp_len)
        return PackedBatch(self.input_ids[idx, cols], self.attention_mask[idx, cols], self.position_ids[idx, cols],
                           self.targets[idx, :comp_len], self.mask[idx, :comp_len], prompt_len,
                           self.prompt_lens[idx], self.completion_lens[idx])


def pack(prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_id: int) -> PackedBatch:
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    B = len(prompts)
    P = max((len(p) for p in prompts), default=1)
    C = max(max((len(c) for c in completions), default=0), 1)
    ids = torch.full((B, P + C), pad_id, dtype=torch.long)
    am = torch.zeros((B, P + C), dtype=torch.long)
    targets = torch.zeros((B, C), dtype=torch.long)
    mask = torch.zeros((B, C), dtype=torch.float32)
    for i, (p, c) in enumerate(zip(prompts, completions)):
        ids[i, P - len(p):P] = torch.tensor(p, dtype=torch.long)
        am[i, P - len(p):P + len(c)] = 1
        if c:
            ids[i, P:P + len(c)] = torch.tensor(c, dtype=torch.long)
            targets[i, :len(c)] = torch.tensor(c, dtype=torch.long)
            mask[i, :len(c)] = 1
    pos = (am.cumsum(1) - 1).clamp(min=0)
    return PackedBatch(ids, am, pos, targets, mask, P, torch.tensor([len(p) for p in prompts], dtype=torch.long),
                       torch.tensor([len(c) for c in completions], dtype=torch.long))


def micro_batches(batch: PackedBatch, token_budget: int, count: Optional[int] = None) -> List[slice]:
    """Consecutive row ranges whose padded size (rows × width) stays within `token_budget` (≥ 1 row each).

    `count` asks for exactly that many ranges, rows spread evenly: under data parallel every rank must
    run the same number of backward passes per optimizer step, or DeepSpeed's gradient collectives
    pair up wrongly and the ranks hang. Ranks differ in padded width (their longest prompt), so their
    natural counts differ; the trainer passes the largest, which keeps every range within budget."""
    width = batch.input_ids.shape[1]
    rows = max(1, token_budget // max(width, 1))
    B = batch.input_ids.shape[0]
    if count is None:
        return [slice(i, min(i + rows, B)) for i in range(0, B, rows)]
    if not -(-B // rows) <= count <= B:
        raise ValueError(f"micro_batches: cannot split {B} rows into {count} ranges of at most {rows} rows "
                         f"({token_budget} tokens at width {width})")
    bounds = [B * k // count for k in range(count + 1)]
    return [slice(bounds[k], bounds[k + 1]) for k in range(count)]


def trunk_and_head(model):
    """(trunk, lm_head weight) of a causal LM: the trunk returns the last hidden states (after the final
    norm) that the fused loss multiplies by the lm_head weight. Unwraps DeepSpeed/DDP (`.module`)."""
    module = getattr(model, "module", model)
    return module.get_decoder() if hasattr(module, "get_decoder") else module.model, module.lm_head.weight


def completion_hidden(model, mb: PackedBatch) -> torch.Tensor:
    trunk, _ = trunk_and_head(model)
    dev = next(trunk.parameters()).device
    out = trunk(input_ids=mb.input_ids.to(dev), attention_mask=mb.attention_mask.to(dev),
                position_ids=mb.position_ids.to(dev), use_cache=False)
    h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    C = mb.targets.shape[1]
    return h[:, mb.prompt_width - 1:mb.prompt_width - 1 + C]


@torch.no_grad()
def sequence_logprobs(model, batch: PackedBatch, token_budget: int, *, temperature: float = 1.0,
                      return_entropy: bool = False):
    """Per-token log-probs [B, C] (fp32, on the model's device: the loss reads them there) of the
    completions under `model`, via fused_logprobs; zero where the mask is."""
    _, weight = trunk_and_head(model)
    lps, ents = [], []
    C = batch.targets.shape[1]
    for s in micro_batches(batch, token_budget):
        mb = batch.rows(s)
        h = completion_hidden(model, mb)
        res = fused_logprobs(h, weight, mb.targets.to(h.device), temperature=temperature, return_entropy=return_entropy)
        lp, ent = res if return_entropy else (res, None)
        pad = C - lp.shape[1]
        lps.append(torch.nn.functional.pad(lp.float(), (0, pad)))
        if ent is not None:
            ents.append(torch.nn.functional.pad(ent.float(), (0, pad)))
    mask = batch.mask.to(lps[0].device)
    lp = torch.cat(lps) * mask
    return (lp, torch.cat(ents) * mask) if return_entropy else lp


def grpo_micro_loss(model, batch: PackedBatch, s: slice, advantages: torch.Tensor, *, token_rewards=None,
                    alpha: float = 1.0, old_logprobs=None, ref_logprobs=None, beta: float = 0.0,
                    eps_low: float = 0.2, eps_high: float = 0.2, temperature: float = 1.0,
                    loss_type: str = "grpo", total_rows: int, total_tokens: float, max_completion_length: int):
    """Loss of rows `s`, scaled so that the micro-batch losses sum to the whole batch's loss."""
    mb = batch.rows(s)
    C = mb.targets.shape[1]
    h = completion_hidden(model, mb)
    _, weight = trunk_and_head(model)
    dev = h.device

    def cut(x):
        return None if x is None else x[s, :C].to(dev)

    kw = dict(token_rewards=cut(token_rewards), alpha=alpha, old_logprobs=cut(old_logprobs),
              ref_logprobs=cut(ref_logprobs), beta=beta, eps_low=eps_low, eps_high=eps_high,
              temperature=temperature, return_entropy=True)
    adv = advantages[s].to(dev)
    if loss_type in ("bnpo", "dapo"):
        # token-normalised: one global token count makes the micro-batch losses add up exactly
        loss, metrics = fused_grpo_loss(h, weight, mb.targets.to(dev), mb.mask.to(dev), adv, loss_type="dapo",
                                        num_items=total_tokens, **kw)
    else:
        loss, metrics = fused_grpo_loss(h, weight, mb.targets.to(dev), mb.mask.to(dev), adv, loss_type=loss_type,
                                        max_completion_length=max_completion_length, **kw)
        loss = loss * (mb.targets.shape[0] / total_rows)
    return loss, metrics, mb.num_tokens
