"""Where a GRPO step goes in each stack at its best: relate_fast, TRL 1.16 and verl 0.9.1 on one H200 at the
Qwen3-1.7B shape, on both workloads, as stacked bars (generation, then all but generation), from the same stamped
JSON as the tables in RESULTS.md.

    python benchmarks/plot_vs_peers.py              # writes docs/step_vs_peers.png

Each peer's bar is its best setting of its own comparison; ours is the run beside verl's (the later of the two
pairs). The ratios quoted in RESULTS.md and the README are each pair's own, from one run.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
OUT = ROOT / "docs" / "step_vs_peers.png"

# workload -> bar label -> (stamped JSON, side in its "best")
SOURCES = {
    "128-token responses": {"relate_fast": ("vs_verl_h200_1.7b_fixed_43dfae5.json", "ours"),
                            "TRL 1.16": ("vs_trl_h200_1.7b_fixed_f72f346.json", "trl"),
                            "verl 0.9.1": ("vs_verl_h200_1.7b_fixed_43dfae5.json", "verl")},
    "ad lengths": {"relate_fast": ("vs_verl_h200_1.7b_realistic_e418f88.json", "ours"),
                   "TRL 1.16": ("vs_trl_h200_1.7b_realistic_f72f346.json", "trl"),
                   "verl 0.9.1": ("vs_verl_h200_1.7b_realistic_e418f88.json", "verl")},
}


def step_parts(results: Path = RESULTS, sources: dict = SOURCES) -> dict:
    """workload -> label -> {generation_s, rest_s, tokens_per_second, source}: the step split as the JSON says."""
    parts = {}
    for workload, bars in sources.items():
        parts[workload] = {}
        for label, (name, side) in bars.items():
            best = json.loads((results / name).read_text())["best"].get(side)
            if not best:
                raise SystemExit(f"plot_vs_peers: {name} has no best result for {side!r}")
            parts[workload][label] = {"generation_s": best["generation_s"], "rest_s": best["step_s"] - best["generation_s"],
                                      "tokens_per_second": best["tokens_per_second"], "source": name}
    return parts


def plot(parts: dict, out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(parts), figsize=(5.2 * len(parts), 3.0))
    axes = axes if len(parts) > 1 else [axes]
    for ax, (workload, bars) in zip(axes, parts.items()):
        labels = list(bars)[::-1]  # ours on top
        gen = [bars[k]["generation_s"] for k in labels]
        rest = [bars[k]["rest_s"] for k in labels]
        ax.barh(labels, gen, color="#4c72b0", label="generation")
        ax.barh(labels, rest, left=gen, color="#dd8452", label="all but generation (update, sync, rewards)")
        for y, k in enumerate(labels):
            total = bars[k]["generation_s"] + bars[k]["rest_s"]
            ax.text(total + 0.05, y, f"{total:.2f} s, {bars[k]['tokens_per_second']:,.0f} tok/s", va="center", fontsize=8)
        ax.set_title(f"Qwen3-1.7B shape, {workload}", fontsize=10)
        ax.set_xlabel("seconds per GRPO step (16 prompts x 5)")
        ax.set_xlim(0, 1.55 * max(b["generation_s"] + b["rest_s"] for b in bars.values()))
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=2, fontsize=8, frameon=False)
    fig.suptitle("One H200, each stack at its best setting measured (benchmarks/RESULTS.md)", fontsize=10)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def main(argv=None) -> Path:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=OUT, help="the PNG to write")
    args = ap.parse_args(argv)
    out = plot(step_parts(), args.out)
    print(f"wrote {out}")
    return out


if __name__ == "__main__":
    main()
