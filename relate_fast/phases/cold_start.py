"""Phase 2: the supervised cold start (SFT on the reference ads of the training split).

The result is saved as a Hugging Face folder: the rollout engine loads it, the policy starts from
it, and it is the reference policy of the KL term.
"""
from __future__ import annotations

import math
import random
from pathlib import Path
from typing import Callable, Sequence

import torch

from relate_fast.checkpoint import atomic_save_pretrained
from relate_fast.distributed import barrier, device
from relate_fast.batching import completion_hidden, pack, trunk_and_head
from relate_fast.models import load_policy, prompt_ids

__all__ = ["run_cold_start"]


def run_cold_start(cfg, rows: Sequence, base: Path, out: Path, *, rank: int, progress: Callable, log: Callable) -> Path:
    """Fine-tunes the policy at `base` for cfg.sft.steps steps and saves it (with its tokenizer) to
    `out`, atomically (a folder renamed into place). Every rank trains the same replica (same seed,
    same batches); rank 0 writes."""
    model, tok = load_policy(base, dtype=cfg.model.dtype, attn=cfg.model.attn_implementation, device=device(),
                             init=cfg.model.init, seed=cfg.run.seed)
    sft = cfg.sft
    if sft.steps > 0:
        with_ref = [r for r in rows if r.reference]
        if not with_ref:
            raise ValueError("sft.steps > 0 but no training prompt has a reference ad to fine-tune on")
        opt = torch.optim.AdamW(model.parameters(), lr=sft.lr, weight_decay=0.0)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min(1.0, (s + 1) / 10) * 0.5 * (1 + math.cos(math.pi * s / sft.steps)))
        rng = random.Random(cfg.run.seed + 1)
        model.train()
        bar = progress(range(sft.steps), desc="cold start (SFT)")
        for step in bar:
            batch = rng.sample(with_ref, min(sft.batch_size, len(with_ref)))
            p = [prompt_ids(tok, r.prompt) for r in batch]
            c = [tok.encode(r.reference, add_special_tokens=False) + [tok.eos_token_id] for r in batch]
            packed = pack(p, c, tok.pad_token_id)
            h = completion_hidden(model, packed)
            logits = torch.nn.functional.linear(h, trunk_and_head(model)[1]).float()
            loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), packed.targets.to(h.device).flatten(),
                                                     reduction="none")
            loss = (loss * packed.mask.to(h.device).flatten()).sum() / packed.mask.sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            if hasattr(bar, "set_postfix") and step % 10 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}")
        log(f"cold start: {sft.steps} steps, final SFT loss {loss.item():.3f}")
    if rank == 0:
        atomic_save_pretrained(out, model, tok)
    barrier()
    del model
    return out
