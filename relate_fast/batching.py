"""How a rollout batch becomes micro-batches and their losses: the policy-update math of one GRPO step,
independent of how the model is wrapped.

Sequences are laid out as ``[left-padded prompt | right-padded completion]`` so that the hidden
state at column ``P - 1 + t`` predicts completion token t for every row (P = prompt width). The
last hidden states of the completion columns go, with the lm_head weight, into the fused loss;
the [tokens × vocab] logits never exist.

Two layouts of a micro-batch (``grpo.layout``):

- padded: rows × the rows' widest [prompt | completion], the padding masked (every attention
  implementation takes it);
- packed: the rows' real tokens back to back in one sequence (`PackedLayout`), the attention told
  where each row ends (`relate_fast.varlen`): no pad token in the forward, the backward or the loss,
  and micro-batches filled by a budget of real tokens. Only the trunk's input and the hidden states
  it returns change: the per-token tensors of the loss ([B, C] advantages, token rewards, old and
  reference log-probs, loss weights) are gathered at the completion tokens, so both layouts compute
  the same loss from the same numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence

import torch

from relate_fast.loss import fused_grpo_loss, fused_grpo_loss_tokens, fused_logprobs
from relate_fast.loss.objective import LOSS_REGISTRY
from relate_fast.loss.objective import token_weights

__all__ = ["PackedBatch", "PackedLayout", "LAYOUTS", "resolve_layout", "pack", "micro_batches", "trunk_and_head",
           "completion_hidden", "packed_completion_hidden", "sequence_logprobs", "grpo_micro_loss",
           "packed_micro_loss", "loss_weights"]

LAYOUTS = ("auto", "packed", "padded")


def resolve_layout(requested: str, device) -> str:
    """auto: packed on CUDA (PyTorch's varlen attention or flash-attn), padded on the CPU, where the
    varlen attention is a per-row reference loop slower than one padded SDPA call."""
    if requested not in LAYOUTS:
        raise ValueError(f"grpo.layout must be one of {LAYOUTS}, got {requested!r}")
    if requested != "auto":
        return requested
    return "packed" if torch.device(device).type == "cuda" else "padded"


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

    def layout(self) -> "PackedLayout":
        """The rows' real tokens back to back (built once per batch: one host-to-device copy)."""
        if getattr(self, "_layout", None) is None:
            self._layout = PackedLayout.build(self)
        return self._layout

    def rows(self, idx: slice) -> "PackedBatch":
        """Rows `idx`, trimmed to their longest prompt and completion (less padding per micro-batch)."""
        P = self.prompt_width
        prompt_len, comp_len = self.widths(idx)
        cols = slice(P - prompt_len, P + comp_len)
        return PackedBatch(self.input_ids[idx, cols], self.attention_mask[idx, cols], self.position_ids[idx, cols],
                           self.targets[idx, :comp_len], self.mask[idx, :comp_len], prompt_len,
                           self.prompt_lens[idx], self.completion_lens[idx])


@dataclass
class PackedRows:
    """Rows r0..r1 of a `PackedLayout`: the trunk's input and where the completion tokens are."""

    ids: torch.Tensor  # [N] the rows' tokens back to back, device
    pos: torch.Tensor  # [N] position ids, restarting at 0 for each row
    cu_seqlens: torch.Tensor  # [R + 1] int32, device
    max_len: int
    completion_src: torch.Tensor  # [M] index into ids of the hidden state that predicts each completion token
    completion_index: torch.Tensor  # [M] index into the batch's flattened [B, C] per-token tensors
    completion_row: torch.Tensor  # [M] row of each completion token (index into [B] per-row tensors)
    num_tokens: int  # M, completion tokens (host)


@dataclass
class PackedLayout:
    """A batch's rows packed: each row's [prompt | completion] tokens back to back. The index tensors
    are made on the host from the lengths and moved once; a micro-batch of consecutive rows is then
    a slice of them (host integers, no device sync)."""

    ids: torch.Tensor  # [N_total]
    pos: torch.Tensor  # [N_total]
    cu: torch.Tensor  # [B + 1] int32, device
    cu_host: List[int]  # [B + 1]
    lengths: List[int]  # [B] prompt + completion tokens of each row
    completion_src: torch.Tensor  # [M_total] into ids
    completion_index: torch.Tensor  # [M_total] into the flattened [B, C]
    completion_row: torch.Tensor  # [M_total] into [B]
    completion_cu: List[int]  # [B + 1]

    @staticmethod
    def build(batch: PackedBatch) -> "PackedLayout":
        p, c = batch.prompt_lens.tolist(), batch.completion_lens.tolist()
        B, W = batch.input_ids.shape
        P, C = batch.prompt_width, batch.targets.shape[1]
        lengths = [a + b for a, b in zip(p, c)]
        cu_host = [0]
        comp_cu = [0]
        for n, k in zip(lengths, c):
            cu_host.append(cu_host[-1] + n)
            comp_cu.append(comp_cu[-1] + k)
        rows = torch.arange(B)
        lens = torch.tensor(lengths, dtype=torch.long)
        # source of each packed token in the padded [B, W] ids: row i, columns P - p_i .. P + c_i - 1
        row_of = torch.repeat_interleave(rows, lens)
        offset = torch.arange(int(lens.sum())) - torch.repeat_interleave(torch.tensor(cu_host[:-1]), lens)
        src = row_of * W + (P - torch.tensor(p)[row_of]) + offset
        clens = torch.tensor(c, dtype=torch.long)
        crow = torch.repeat_interleave(rows, clens)
        t = torch.arange(int(clens.sum())) - torch.repeat_interleave(torch.tensor(comp_cu[:-1]), clens)
        # the hidden state at a row's position p_i - 1 + t predicts its completion token t
        comp_src = torch.tensor(cu_host[:-1])[crow] + torch.tensor(p)[crow] - 1 + t
        comp_index = crow * C + t
        dev = batch.input_ids.device
        moved = _to_device([src, comp_src, comp_index, crow, torch.tensor(cu_host, dtype=torch.int32)], dev)
        src_d, comp_src_d, comp_index_d, crow_d, cu_d = moved
        return PackedLayout(ids=batch.input_ids.reshape(-1).index_select(0, src_d),
                            pos=batch.position_ids.reshape(-1).index_select(0, src_d), cu=cu_d, cu_host=cu_host,
                            lengths=lengths, completion_src=comp_src_d, completion_index=comp_index_d,
                            completion_row=crow_d, completion_cu=comp_cu)

    def rows(self, s: slice) -> PackedRows:
        r0, r1 = s.start, s.stop
        a, b = self.cu_host[r0], self.cu_host[r1]
        ca, cb = self.completion_cu[r0], self.completion_cu[r1]
        return PackedRows(ids=self.ids[a:b], pos=self.pos[a:b], cu_seqlens=self.cu[r0:r1 + 1] - a,
                          max_len=max(self.lengths[r0:r1], default=1), completion_src=self.completion_src[ca:cb] - a,
                          completion_index=self.completion_index[ca:cb], completion_row=self.completion_row[ca:cb],
                          num_tokens=cb - ca)


def _to_device(tensors: List[torch.Tensor], device) -> List[torch.Tensor]:
    """Host tensors to `device` in one copy (pinned on CUDA: the copy does not wait for the queue)."""
    if torch.device(device).type == "cpu":
        return tensors
    flat = torch.cat([t.to(torch.long).reshape(-1) for t in tensors])
    flat = flat.pin_memory().to(device, non_blocking=True)
    out, i = [], 0
    for t in tensors:
        out.append(flat[i:i + t.numel()].view(t.shape).to(t.dtype))
        i += t.numel()
    return out


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


def micro_batches(batch: PackedBatch, token_budget: int, count: Optional[int] = None, *,
                  packed: bool = False) -> List[slice]:
    """Consecutive row ranges within `token_budget` (≥ 1 row each): padded, rows × the batch's width;
    packed, the rows' real tokens (prompt + completion).

    `count` asks for exactly that many ranges: under data parallel every rank must run the same number
    of backward passes per optimizer step, or DeepSpeed's gradient collectives pair up wrongly and the
    ranks hang. Ranks differ in width and lengths, so their natural counts differ; the trainer passes
    the largest. Padded, the rows are then spread evenly (every range stays within budget); packed, the
    tokens are (each range about total / count tokens, within budget up to one row's length)."""
    B = batch.input_ids.shape[0]
    if packed:
        return _packed_ranges(batch.layout().lengths, token_budget, count)
    width = batch.input_ids.shape[1]
    rows = max(1, token_budget // max(width, 1))
    if count is None:
        return [slice(i, min(i + rows, B)) for i in range(0, B, rows)]
    if not -(-B // rows) <= count <= B:
        raise ValueError(f"micro_batches: cannot split {B} rows into {count} ranges of at most {rows} rows "
                         f"({token_budget} tokens at width {width})")
    bounds = [B * k // count for k in range(count + 1)]
    return [slice(bounds[k], bounds[k + 1]) for k in range(count)]


def _packed_ranges(lengths: Sequence[int], budget: int, count: Optional[int]) -> List[slice]:
    B = len(lengths)
    if count is None:
        out, start, used = [], 0, 0
        for i, n in enumerate(lengths):
            if i > start and used + n > budget:
                out.append(slice(start, i))
                start, used = i, 0
            used += n
        return out + [slice(start, B)] if B else out
    if not 1 <= count <= B:
        raise ValueError(f"micro_batches: cannot split {B} rows into {count} non-empty ranges")
    cum, total = [0], 0
    for n in lengths:
        total += n
        cum.append(total)
    bounds = [0]
    for k in range(1, count):  # the first row whose start reaches k/count of the tokens, ranges kept non-empty
        target = total * k / count
        i = next((j for j in range(bounds[-1] + 1, B) if cum[j] >= target), B)
        bounds.append(min(max(i, bounds[-1] + 1), B - (count - k)))
    bounds.append(B)
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


def packed_completion_hidden(model, rows: PackedRows) -> torch.Tensor:
    """[M, H] hidden states that predict the completion tokens of packed rows (one trunk call)."""
    from relate_fast.varlen import packed_forward_kwargs

    trunk, _ = trunk_and_head(model)
    out = trunk(input_ids=rows.ids[None], position_ids=rows.pos[None], use_cache=False,
                **packed_forward_kwargs(rows.cu_seqlens, rows.max_len))
    h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return h[0].index_select(0, rows.completion_src)


@torch.no_grad()
def sequence_logprobs(model, batch: PackedBatch, token_budget: int, *, temperature: float = 1.0,
                      return_entropy: bool = False, packed: bool = False):
    """Per-token log-probs [B, C] (fp32, on the model's device: the loss reads them there) of the
    completions under `model`, via fused_logprobs; zero where the mask is. `packed`: micro-batches
    in the packed layout (the same numbers, no padding computed)."""
    _, weight = trunk_and_head(model)
    if packed:
        return _packed_logprobs(model, weight, batch, token_budget, temperature, return_entropy)
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


def _packed_logprobs(model, weight, batch: PackedBatch, token_budget: int, temperature: float, return_entropy: bool):
    layout = batch.layout()
    B, C = batch.targets.shape
    targets = batch.targets.reshape(-1)
    lp = torch.zeros(B * C, dtype=torch.float32, device=layout.ids.device)
    ent = torch.zeros_like(lp) if return_entropy else None
    for s in micro_batches(batch, token_budget, packed=True):
        rows = layout.rows(s)
        h = packed_completion_hidden(model, rows)
        res = fused_logprobs(h, weight, targets.index_select(0, rows.completion_index), temperature=temperature,
                             return_entropy=return_entropy)
        lp_mb, ent_mb = res if return_entropy else (res, None)
        lp.index_copy_(0, rows.completion_index, lp_mb.float())
        if ent is not None:
            ent.index_copy_(0, rows.completion_index, ent_mb.float())
    lp = lp.view(B, C)
    return (lp, ent.view(B, C)) if return_entropy else lp


def loss_weights(mask: torch.Tensor, loss_type: str, *, total_tokens: float, max_completion_length: int) -> torch.Tensor:
    """[B, C] per-token weights c of an optimizer step's whole batch, loss = Σ per·c: what the padded
    path's per-micro-batch losses (each scaled as in `grpo_micro_loss`) add up to."""
    if LOSS_REGISTRY[loss_type].token_normalised:
        return token_weights(mask, "dapo", None, total_tokens)
    return token_weights(mask, loss_type, max_completion_length, None)


def packed_micro_loss(model, batch: PackedBatch, s: slice, advantages: torch.Tensor, coef: torch.Tensor, *,
                      token_rewards=None, alpha: float = 1.0, old_logprobs=None, ref_logprobs=None, beta: float = 0.0,
                      eps_low: float = 0.2, eps_high: float = 0.2, temperature: float = 1.0, sampler_logprobs=None,
                      tis_cap=None):
    """Loss of rows `s` in the packed layout: `coef` [B, C] is `loss_weights` of the whole batch, so the
    micro-batch losses sum to the batch's loss. Returns (loss, metrics, completion tokens)."""
    rows = batch.layout().rows(s)
    h = packed_completion_hidden(model, rows)
    _, weight = trunk_and_head(model)

    def pick(x):  # the completion tokens' values of a [B] per-row or [B, C] per-token tensor
        if x is None:
            return None
        if x.dim() == 1:
            return x.index_select(0, rows.completion_row)
        return x.reshape(-1).index_select(0, rows.completion_index)

    loss, metrics = fused_grpo_loss_tokens(
        h, weight, pick(batch.targets), pick(coef), pick(advantages), token_rewards=pick(token_rewards), alpha=alpha,
        old_logprobs=pick(old_logprobs), ref_logprobs=pick(ref_logprobs), beta=beta, eps_low=eps_low,
        eps_high=eps_high, temperature=temperature, return_entropy=True, sampler_logprobs=pick(sampler_logprobs),
        tis_cap=tis_cap)
    return loss, metrics, rows.num_tokens


def grpo_micro_loss(model, batch: PackedBatch, s: slice, advantages: torch.Tensor, *, token_rewards=None,
                    alpha: float = 1.0, old_logprobs=None, ref_logprobs=None, beta: float = 0.0,
                    eps_low: float = 0.2, eps_high: float = 0.2, temperature: float = 1.0,
                    loss_type: str = "grpo", total_rows: int, total_tokens: float, max_completion_length: int,
                    sampler_logprobs=None, tis_cap=None):
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
              temperature=temperature, return_entropy=True, sampler_logprobs=cut(sampler_logprobs), tis_cap=tis_cap)
    adv = (advantages[s] if advantages.dim() == 1 else advantages[s, :C]).to(dev)
    if LOSS_REGISTRY[loss_type].token_normalised:
        # token-normalised: one global token count makes the micro-batch losses add up exactly
        loss, metrics = fused_grpo_loss(h, weight, mb.targets.to(dev), mb.mask.to(dev), adv, loss_type="dapo",
                                        num_items=total_tokens, **kw)
    else:
        loss, metrics = fused_grpo_loss(h, weight, mb.targets.to(dev), mb.mask.to(dev), adv, loss_type=loss_type,
                                        max_completion_length=max_completion_length, **kw)
        loss = loss * (mb.targets.shape[0] / total_rows)
    return loss, metrics, mb.num_tokens
