"""The paper's ablation: Model 1–4 and RELATE (Table 2) from one cold start, same steps and seeds.

    python -m relate_fast.ablation                                  # tiny CPU default, 3 seeds
    python -m relate_fast.ablation --seeds 0,1 --presets model1,relate --out runs/ablation
    python -m relate_fast.ablation --config configs/qwen3_8b_8gpu.yaml --launcher "torchrun --nproc_per_node 8"

1. one base run makes the cold start and the CTCVR model (<out>/_base);
2. every (preset, seed) run starts from that cold start and CTCVR model — a `relate_fast.train`
   subprocess each, skipped when its summary.json exists (the ablation resumes);
3. Table 3 (final-step structural quality, CTCVR, diversity, semantic quality; mean and 95% t-interval
   over seeds) -> <out>/table3.md, table3.json; Figure 3 (each reward's training curve per preset,
   mean over seeds) -> <out>/figure3.png.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Dict, List

from relate_fast.rewards.combine import PRESETS as _REWARD_PRESETS

#: the paper's five configurations (Table 3's rows): the reward presets, in their order
PRESETS = tuple(_REWARD_PRESETS)

#: Table 3's columns: (summary key, label, group)
COLUMNS = [
    ("format_pass_rate", "format pass", "structural quality"),
    ("length_pass_rate", "length pass", "structural quality"),
    ("ctcvr_model", "CTCVR (model)", "CTCVR"),
    ("ctcvr_sim", "CTCVR (simulator)", "CTCVR"),
    ("diversity", "diversity", "diversity"),
    ("component/relevance", "relevance", "semantic quality"),
    ("component/correctness", "correctness", "semantic quality"),
    ("compliance_rate", "compliance", "semantic quality"),
]

# two-sided 97.5% quantiles of Student's t for n - 1 degrees of freedom (n = 2..10)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def mean_ci(values: List[float]) -> Dict[str, float]:
    """Mean and 95% t-interval over seeds (half-width 0 with one seed)."""
    n = len(values)
    m = sum(values) / n
    if n < 2:
        return {"mean": m, "lo": m, "hi": m, "n": n}
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / (n - 1))
    h = _T975.get(n - 1, 1.96) * sd / math.sqrt(n)
    return {"mean": m, "lo": m - h, "hi": m + h, "n": n}


def _train(launcher: List[str], config: str, out: Path, name: str, extra: List[str], log: Path) -> None:
    cmd = launcher + ["-m", "relate_fast.train", "--config", config, "--run.out_dir", str(out), "--run.name", name,
                      "--run.progress", "false", *extra]
    print("+", " ".join(shlex.quote(c) for c in cmd), file=sys.stderr, flush=True)
    with open(log, "w") as f:
        res = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT)
    if res.returncode != 0:
        raise SystemExit(f"ablation: run {name} failed (exit {res.returncode}); see {log}")


def table3(out: Path, presets, seeds) -> dict:
    rows = {}
    baseline = None
    for p in presets:
        finals = []
        for s in seeds:
            summ = json.loads((out / f"{p}-seed{s}" / "summary.json").read_text())
            finals.append(summ["final"])
            baseline = baseline or summ["baseline"]
        rows[p] = {key: mean_ci([f[key] for f in finals]) for key, _, _ in COLUMNS if key in finals[0]}
        rows[p]["reward_own_preset"] = mean_ci([f["reward"] for f in finals])
    return {"presets": rows, "cold_start": {k: baseline[k] for k, _, _ in COLUMNS if k in baseline},
            "seeds": list(seeds)}


def table3_markdown(t: dict) -> str:
    head = "| preset | " + " | ".join(label for _, label, _ in COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 1)]
    cs = t["cold_start"]
    lines.append("| cold start | " + " | ".join(f"{cs[k]:.4f}" if k in cs else "" for k, _, _ in COLUMNS) + " |")
    for p, row in t["presets"].items():
        cells = []
        for k, _, _ in COLUMNS:
            c = row.get(k)
            cells.append("" if c is None else f"{c['mean']:.4f} [{c['lo']:.4f}, {c['hi']:.4f}]")
        lines.append(f"| {p} | " + " | ".join(cells) + " |")
    n = len(t["seeds"])
    return ("\n".join(lines) + f"\n\nFinal-step evaluation on the validation split; mean [95% t-interval] over "
            f"{n} seed{'s' if n > 1 else ''} ({', '.join(map(str, t['seeds']))}).\n")


def figure3(out: Path, presets, seeds, *, smooth: int = 5) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    curves: Dict[str, Dict[str, np.ndarray]] = {}
    for p in presets:
        runs = []
        for s in seeds:
            rows = [json.loads(l) for l in (out / f"{p}-seed{s}" / "metrics.jsonl").read_text().splitlines() if l]
            runs.append(rows)
        keys = [k for k in runs[0][0] if k.startswith("reward/") and k != "reward/total"]
        curves[p] = {k: np.mean([[r.get(k, np.nan) for r in run] for run in runs], axis=0) for k in keys}
    keys = sorted({k for c in curves.values() for k in c if not k.endswith("_token")})
    cols = 4
    nrows = (len(keys) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax, k in zip(axes.flat, keys):
        for i, p in enumerate(presets):
            y = curves[p].get(k)
            if y is None:
                continue
            y = np.convolve(y, np.ones(smooth) / smooth, mode="valid") if len(y) >= smooth else y
            ax.plot(np.arange(len(y)) + smooth, y, label=p, color=f"C{i}")
        ax.set_title(k.replace("reward/", ""), fontsize=10)
        ax.set_xlabel("GRPO step", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(keys):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    fig.suptitle(f"Training reward components per preset (mean over seeds {list(seeds)}; "
                 f"moving average of {smooth})", fontsize=11)
    fig.tight_layout()
    path = out / "figure3.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m relate_fast.ablation", description=__doc__.split("\n\n")[0])
    ap.add_argument("--config", default=str(Path(__file__).resolve().parents[1] / "configs" / "tiny_cpu.yaml"))
    ap.add_argument("--presets", default=",".join(PRESETS))
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--out", default="runs/ablation")
    ap.add_argument("--launcher", default=sys.executable, help="how to start a training run (e.g. 'torchrun "
                                                                   "--nproc_per_node 8')")
    args, extra = ap.parse_known_args(argv)
    presets = [p for p in args.presets.split(",") if p]
    bad = [p for p in presets if p not in PRESETS]
    if bad:
        ap.error(f"unknown preset(s) {bad}; known: {PRESETS}")
    seeds = [int(s) for s in args.seeds.split(",") if s != ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    launcher = shlex.split(args.launcher)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    base = out / "_base"
    if not (base / "summary.json").is_file():
        _train(launcher, args.config, out, "_base", ["--grpo.steps", "0", "--eval.enabled", "false", *extra],
               out / "_base.log")
    shared = ["--model.path", str(base / "cold_start"), "--sft.steps", "0", "--ctcvr.model", str(base / "ctcvr")]
    total = len(presets) * len(seeds)
    k = 0
    for p in presets:
        for s in seeds:
            k += 1
            name = f"{p}-seed{s}"
            if (out / name / "summary.json").is_file():
                continue
            print(f"[ablation] run {k}/{total}: {name}", file=sys.stderr, flush=True)
            _train(launcher, args.config, out, name, [*shared, "--reward.preset", p, "--run.seed", str(s), *extra],
                   out / f"{name}.log")
    t = table3(out, presets, seeds)
    (out / "table3.json").write_text(json.dumps(t, indent=2))
    md = table3_markdown(t)
    (out / "table3.md").write_text(md)
    fig = figure3(out, presets, seeds)
    print(md)
    print(f"wrote {out / 'table3.md'}, {out / 'table3.json'}, {fig}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
