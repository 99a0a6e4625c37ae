"""Phase 3: the CTCVR reward model (ESMM), trained on click-simulator logs of the training prompts.

Without a live ad platform the impressions come from `relate_fast.sim`, whose ground truth the
policy never sees; `ctcvr.model` skips this phase with a model trained elsewhere.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from relate_fast.distributed import barrier

__all__ = ["train_ctcvr_phase"]


def train_ctcvr_phase(cfg, rows: Sequence, encoder, out: Path, *, rank: int, log: Callable) -> Path:
    """Simulates impressions of `rows`, trains the CTCVR model (and a text-blind baseline for the log
    line) on rank 0 and saves it to `out`; the other ranks wait."""
    from relate_fast.rewards.ctcvr import ImpressionTable, train_ctcvr
    from relate_fast.sim import simulate_log

    c = cfg.ctcvr
    if rank == 0:
        t = time.time()
        logs = simulate_log(rows, variants=c.variants, impressions=c.impressions, seed=cfg.run.seed)
        table = ImpressionTable.from_logs(logs)
        train, held = table.split(0.15, cfg.run.seed)
        model = train_ctcvr(train, encoder, epochs=c.epochs, seed=cfg.run.seed, progress=cfg.run.progress)
        blind = train_ctcvr(train, encoder, epochs=c.epochs, seed=cfg.run.seed, text_blind=True)
        model.info = {"held_out": model.evaluate(held), "text_blind_held_out": blind.evaluate(held),
                      "impressions": int(table.impressions.sum())}
        model.save(out)
        m, b = model.info["held_out"], model.info["text_blind_held_out"]
        log(f"CTCVR model: {model.info['impressions']} simulated impressions, held-out CTCVR AUC "
            f"{m['ctcvr_auc']:.3f} (text-blind {b['ctcvr_auc']:.3f}), {time.time() - t:.0f} s")
    barrier()
    return out
