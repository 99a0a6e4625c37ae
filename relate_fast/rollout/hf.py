"""Rollouts by Hugging Face ``generate``: on the policy module itself (no weight copy to push), or, in
rollout.mode one_step_off (where it may sample while the policy learns), on its own copy of it, whose
weights change only when they are pushed."""
from __future__ import annotations

from typing import List, Sequence

import copy

import torch

from relate_fast.rollout.base import RolloutEngine


class HFEngine(RolloutEngine):
    name = "hf"

    def __init__(self, model, tokenizer, *, batch_prompts: int = 64, own_copy: bool = False):
        self.model, self.tokenizer, self.batch_prompts = model, tokenizer, batch_prompts
        self.own_copy = own_copy
        if own_copy:  # the copy is made by the first push: from the policy as the trainer wraps and fuses it
            self.model, self.needs_weights = None, True

    @torch.no_grad()
    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, *, max_new_tokens: int, temperature: float,
                 top_p: float = 1.0, seed: int = 0, logprobs: bool = False) -> List[List[List[int]]]:
        if self.model is None:
            raise RuntimeError("the HF engine samples from its own copy of the policy: ensure_weights(model) first")
        model, eos, pad = self.model, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        self.last_logprobs = [] if logprobs else None
        was_training = model.training
        model.eval()
        device = next(model.parameters()).device
        gen = torch.Generator(device="cpu").manual_seed(seed)
        out: List[List[List[int]]] = []
        try:
            for start in range(0, len(prompt_ids), self.batch_prompts):
                chunk = prompt_ids[start:start + self.batch_prompts]
                width = max(len(p) for p in chunk)
                ids = torch.full((len(chunk), width), pad, dtype=torch.long)
                mask = torch.zeros_like(ids)
                for i, p in enumerate(chunk):  # left padding: every prompt ends where generation starts
                    ids[i, width - len(p):] = torch.tensor(p)
                    mask[i, width - len(p):] = 1
                torch.manual_seed(int(torch.randint(0, 2**31 - 1, (1,), generator=gen)))
                sampling = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if temperature > 0 \
                    else dict(do_sample=False)
                # greedy with n > 1 repeats the prompt rows (HF refuses num_return_sequences without sampling)
                rep = dict(num_return_sequences=n) if temperature > 0 else {}
                if temperature <= 0:
                    ids, mask = ids.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
                res = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), **sampling, **rep,
                                     max_new_tokens=max_new_tokens, pad_token_id=pad, eos_token_id=eos,
                                     output_scores=logprobs, return_dict_in_generate=logprobs)
                seqs = res.sequences if logprobs else res
                comp = seqs[:, width:].cpu().tolist()
                if logprobs:  # the scores are the logits as sampled from (temperature and top-p applied)
                    steps = torch.stack([torch.log_softmax(sc.float(), dim=-1) for sc in res.scores], dim=1)
                    lps = steps.gather(2, seqs[:, width:width + steps.shape[1], None].to(steps.device)).squeeze(2).cpu()
                for i in range(len(chunk)):
                    group, group_lp = [], []
                    for j, seq in enumerate(comp[i * n:(i + 1) * n]):
                        if eos in seq:
                            seq = seq[:seq.index(eos) + 1]
                        group.append(seq)
                        if logprobs:
                            group_lp.append(lps[i * n + j, :len(seq)].tolist())
                    out.append(group)
                    if logprobs:
                        self.last_logprobs.append(group_lp)
        finally:
            model.train(was_training)
        return out

    def push_weights(self, model) -> None:
        if not self.own_copy:
            self.model = model  # generate runs on the policy module itself
            return
        module = getattr(model, "module", model)  # the policy inside DeepSpeed's engine
        if self.model is None:
            self.model = copy.deepcopy(module).eval().requires_grad_(False)
        else:
            with torch.no_grad():
                for mine, theirs in zip(self.model.parameters(), module.parameters()):
                    mine.copy_(theirs)
