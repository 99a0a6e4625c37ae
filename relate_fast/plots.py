"""Reward curves per component from a run's metrics.jsonl (like the paper's Figure 3)."""
from __future__ import annotations

import json
from pathlib import Path
from typing import List


def read_metrics(path) -> List[dict]:
    return [json.loads(l) for l in Path(path).read_text().splitlines() if l.strip()]


def plot_rewards(metrics_path, out_dir, *, smooth: int = 5) -> List[Path]:
    """One figure with a panel per reward component (+ total, compliance, loss, KL); returns the files."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = read_metrics(metrics_path)
    if not rows:
        return []
    keys = [k for k in rows[0] if k.startswith("reward/")] + [
        k for k in ("compliance/evasion_share", "loss", "kl", "clip_ratio", "entropy") if k in rows[0]]
    steps = [r["step"] for r in rows]
    n = len(keys)
    cols = 4
    fig, axes = plt.subplots((n + cols - 1) // cols, cols, figsize=(4 * cols, 2.8 * ((n + cols - 1) // cols)),
                             squeeze=False)
    for ax, k in zip(axes.flat, keys):
        y = np.array([r.get(k, np.nan) for r in rows], dtype=float)
        ax.plot(steps, y, alpha=0.35, color="C0")
        if len(y) >= smooth:
            ax.plot(steps[smooth - 1:], np.convolve(y, np.ones(smooth) / smooth, mode="valid"), color="C0")
        ax.set_title(k.replace("reward/", ""), fontsize=10)
        ax.set_xlabel("GRPO step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "rewards.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return [path]
