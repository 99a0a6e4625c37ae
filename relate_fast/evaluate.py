"""Evaluation: the paper's metrics (§4.1.2) of a policy, against a baseline, with bootstrap intervals.

    python -m relate_fast.evaluate --model runs/tiny_cpu/final --baseline runs/tiny_cpu/cold_start --split test

Generates for a dataset split (HF generate, or vLLM with --engine vllm) and reports, for the model and
the baseline: compliance rate (no blacklist hit after exemptions), diversity (the training formula,
eq. 4, over the evaluated texts), CTCVR by the learned model and by the click simulator (the
offline A/B test) and their relative lift (ΔCTCVR), relevance, correctness, length and format pass
rates, the preset's reward; plus a GSB comparison (good / same / bad per prompt) — by an LLM judge
when --judge-model is given, otherwise by the reward (said so in the report). Every metric and
every difference gets a 95% bootstrap interval over prompts (texts of one prompt move together).
Writes <out>/report.json, report.md, metrics.png and generations_{model,baseline}.jsonl (each text
with its per-text metrics, from which :func:`report_from_generations` recomputes the report).

The trainer's baseline and final evaluations use :func:`evaluate_texts` (means only).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import Dict, Optional, Sequence

import numpy as np

from relate_fast.rewards import RewardFunction

__all__ = ["text_metrics", "evaluate_texts", "evaluate_policy", "bootstrap_mean_ci", "bootstrap_diff_ci", "bootstrap_lift_ci",
           "gsb_by_reward", "report_from_generations", "main"]

#: per-text metrics summarised in reports: key -> label
REPORTED = {
    "reward": "reward (preset)", "compliance": "compliance rate", "diversity": "diversity (eq. 4)",
    "ctcvr_model": "CTCVR (learned model)", "ctcvr_sim": "CTCVR (click simulator)", "relevance": "relevance",
    "correctness": "correctness", "length_pass": "length pass rate", "format_pass": "format pass rate",
}


def text_metrics(rows: Sequence, texts: Sequence[str], token_ids: Optional[Sequence[Sequence[int]]], reward_cfg,
                 rewards: RewardFunction, *, group_size: int = 1, sim_seed: int = 0) -> Dict[str, np.ndarray]:
    """Per-text metrics of a set of generations: the reward function's own (n-gram counts over these
    texts only; `RewardFunction.evaluation_metrics`), the click simulator's CTCVR and the lengths."""
    from relate_fast.sim import ClickSimulator

    m = rewards.evaluation_metrics(rows, texts, token_ids, reward_cfg, group_size=group_size)
    m["ctcvr_sim"] = ClickSimulator(sim_seed).probabilities(rows, texts)["ctcvr"].astype(float)
    if token_ids is not None:
        m["response_tokens"] = np.array([len(t) for t in token_ids], dtype=float)
    return m


def evaluate_texts(rows, texts, token_ids, reward_cfg, rewards: RewardFunction, *, group_size: int = 1,
                   sim_seed: int = 0) -> dict:
    """Means of :func:`text_metrics` under the names the trainer's summary.json uses."""
    m = text_metrics(rows, texts, token_ids, reward_cfg, rewards, group_size=group_size, sim_seed=sim_seed)
    rename = {"compliance": "compliance_rate", "length_pass": "length_pass_rate", "format_pass": "format_pass_rate",
              "response_tokens": "response_tokens_mean"}
    res = {rename.get(k, k): float(np.mean(v)) for k, v in m.items() if k not in ("relevance", "correctness")}
    res["n_texts"] = len(texts)
    return res


def evaluate_policy(engine, tokenizer, rewards: RewardFunction, rows, prompt_ids, cfg, *, out_dir=None,
                    name: str = "eval", log=None) -> dict:
    """The trainer's baseline and final evaluations: `cfg.eval.samples` responses per prompt from the
    rollout engine (a fixed seed, so the two evaluations sample alike), scored by :func:`evaluate_texts`;
    with `out_dir`, eval_<name>.json and samples_<name>.jsonl are written there."""
    import torch

    from relate_fast.checkpoint import atomic_write_text

    with torch.no_grad():
        groups = engine.generate([prompt_ids(r) for r in rows], cfg.eval.samples,
                                 max_new_tokens=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature,
                                 top_p=cfg.rollout.top_p, seed=10**9 + 7)
    flat_rows = [r for r in rows for _ in range(cfg.eval.samples)]
    flat = [c for g in groups for c in g]
    texts = tokenizer.batch_decode(flat, skip_special_tokens=True)
    res = evaluate_texts(flat_rows, texts, flat, cfg.reward, rewards, group_size=cfg.eval.samples, sim_seed=cfg.run.seed)
    if out_dir is not None:
        atomic_write_text(Path(out_dir) / f"eval_{name}.json", json.dumps(res, indent=2))
        atomic_write_text(Path(out_dir) / f"samples_{name}.jsonl", "".join(
            json.dumps({"id": r.id, "text": t}, ensure_ascii=False) + "\n" for r, t in zip(flat_rows, texts)))
    if log is not None:
        log(f"eval {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in res.items() if isinstance(v, float)))
    return res


# --------------------------------------------------------------------------- bootstrap over prompts


def _per_prompt(values, groups):
    values = np.asarray(values, dtype=float)
    keys, inv = np.unique(np.asarray(groups), return_inverse=True)
    sums = np.bincount(inv, weights=values, minlength=len(keys))
    counts = np.bincount(inv, minlength=len(keys)).astype(float)
    return sums, counts


def _resample(n_groups: int, n_boot: int, seed: int):
    rng = np.random.default_rng(seed)
    return rng.integers(0, n_groups, size=(n_boot, n_groups))


def bootstrap_mean_ci(values, groups, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95) -> dict:
    """Mean and percentile bootstrap interval, resampling whole groups (prompts)."""
    sums, counts = _per_prompt(values, groups)
    idx = _resample(len(sums), n_boot, seed)
    boot = sums[idx].sum(1) / counts[idx].sum(1)
    a = (1 - level) / 2
    return {"mean": float(sums.sum() / counts.sum()), "lo": float(np.quantile(boot, a)),
            "hi": float(np.quantile(boot, 1 - a))}


def _paired(model_vals, base_vals, groups_m, groups_b, n_boot, seed):
    sm, cm = _per_prompt(model_vals, groups_m)
    sb, cb = _per_prompt(base_vals, groups_b)
    if len(sm) != len(sb):
        raise ValueError("model and baseline must be evaluated on the same prompts")
    idx = _resample(len(sm), n_boot, seed)
    return (sm.sum() / cm.sum(), sb.sum() / cb.sum(), sm[idx].sum(1) / cm[idx].sum(1), sb[idx].sum(1) / cb[idx].sum(1))


def bootstrap_diff_ci(model_vals, base_vals, groups_m, groups_b, *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """model − baseline, resampling prompts jointly (a paired bootstrap)."""
    m, b, bm, bb = _paired(model_vals, base_vals, groups_m, groups_b, n_boot, seed)
    d = bm - bb
    a = (1 - level) / 2
    return {"mean": float(m - b), "lo": float(np.quantile(d, a)), "hi": float(np.quantile(d, 1 - a))}


def bootstrap_lift_ci(model_vals, base_vals, groups_m, groups_b, *, n_boot: int = 2000, seed: int = 0,
                      level: float = 0.95) -> dict:
    """Relative lift model / baseline − 1 (ΔCTCVR), paired bootstrap."""
    m, b, bm, bb = _paired(model_vals, base_vals, groups_m, groups_b, n_boot, seed)
    lift = bm / np.maximum(bb, 1e-12) - 1
    a = (1 - level) / 2
    return {"mean": float(m / max(b, 1e-12) - 1), "lo": float(np.quantile(lift, a)),
            "hi": float(np.quantile(lift, 1 - a))}


# --------------------------------------------------------------------------- GSB


def gsb_by_reward(model_reward, base_reward, groups_m, groups_b, *, margin: float = 0.05) -> dict:
    """Good / same / bad per prompt from the mean reward of each side's texts (used when no judge is given)."""
    sm, cm = _per_prompt(model_reward, groups_m)
    sb, cb = _per_prompt(base_reward, groups_b)
    d = sm / cm - sb / cb
    return {"good": int((d > margin).sum()), "same": int((np.abs(d) <= margin).sum()), "bad": int((d < -margin).sum()),
            "by": f"reward (mean r_i per prompt, ties within ±{margin}); no LLM judge was given"}


GSB_PROMPT = {
    "zh": "比较两条广告哪条更好（准确、合规、吸引人）。\n搜索词：{query}\n落地页信息：{facts}\n广告A：{a}\n广告B：{b}\n只回答 A、B 或 相同。",
    "en": ("Which ad is better (accurate, compliant, appealing)?\nQuery: {query}\nLanding page: {facts}\nAd A: {a}\n"
           "Ad B: {b}\nAnswer only A, B or same."),
}


def parse_gsb(reply: str) -> Optional[str]:
    r = reply.strip().lower()
    if r.startswith(("same", "相同", "tie", "equal")):
        return "same"
    if r.startswith("a") and not r.startswith("ad b"):
        return "A"
    if r.startswith("b"):
        return "B"
    return None


def gsb_by_judge(generate, rows_by_prompt, model_text, base_text, *, seed: int = 0) -> dict:
    """Pairwise LLM judgement per prompt; positions are randomised against position bias."""
    rng = np.random.default_rng(seed)
    prompts, flips, ids = [], [], []
    for pid, row in rows_by_prompt.items():
        flip = bool(rng.integers(0, 2))
        a, b = (base_text[pid], model_text[pid]) if flip else (model_text[pid], base_text[pid])
        sep = "、" if row.lang == "zh" else "; "
        prompts.append(GSB_PROMPT[row.lang].format(query=row.query, facts=sep.join(row.facts), a=a.replace("\n", " "),
                                                   b=b.replace("\n", " ")))
        flips.append(flip)
        ids.append(pid)
    replies = generate(prompts)
    counts = {"good": 0, "same": 0, "bad": 0, "unparsed": 0}
    for reply, flip in zip(replies, flips):
        v = parse_gsb(reply)
        if v is None:
            counts["unparsed"] += 1
        elif v == "same":
            counts["same"] += 1
        else:
            model_won = (v == "A") != flip
            counts["good" if model_won else "bad"] += 1
    counts["by"] = "LLM judge"
    return counts


# --------------------------------------------------------------------------- report


def summarize(model_m: Dict[str, np.ndarray], base_m: Optional[Dict[str, np.ndarray]], groups_m, groups_b,
              *, n_boot: int = 2000, seed: int = 0) -> dict:
    rep = {"model": {}, "baseline": {}, "difference": {}, "lift": {}}
    for k in REPORTED:
        if k not in model_m:
            continue
        rep["model"][k] = bootstrap_mean_ci(model_m[k], groups_m, n_boot=n_boot, seed=seed)
        if base_m is not None and k in base_m:
            rep["baseline"][k] = bootstrap_mean_ci(base_m[k], groups_b, n_boot=n_boot, seed=seed)
            rep["difference"][k] = bootstrap_diff_ci(model_m[k], base_m[k], groups_m, groups_b, n_boot=n_boot, seed=seed)
    if base_m is not None:
        for k in ("ctcvr_model", "ctcvr_sim"):
            if k in model_m and k in base_m:
                rep["lift"][k] = bootstrap_lift_ci(model_m[k], base_m[k], groups_m, groups_b, n_boot=n_boot, seed=seed)
    return rep


def _write_generations(path: Path, rows, texts, metrics: Dict[str, np.ndarray]) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for i, (r, t) in enumerate(zip(rows, texts)):
            rec = {"id": r.id, "text": t, **{k: float(v[i]) for k, v in metrics.items()}}
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def _read_generations(path: Path):
    recs = [json.loads(l) for l in Path(path).read_text(encoding="utf-8").splitlines() if l.strip()]
    groups = [r["id"] for r in recs]
    keys = [k for k in recs[0] if k not in ("id", "text")]
    return {k: np.array([r[k] for r in recs], dtype=float) for k in keys}, groups


def report_from_generations(folder, *, n_boot: int = 2000, seed: int = 0) -> dict:
    """Recomputes a report's numbers from its saved generations files."""
    folder = Path(folder)
    mm, gm = _read_generations(folder / "generations_model.jsonl")
    base = folder / "generations_baseline.jsonl"
    bm, gb = _read_generations(base) if base.is_file() else (None, None)
    return summarize(mm, bm, gm, gb, n_boot=n_boot, seed=seed)


def report_markdown(rep: dict, info: dict) -> str:
    lines = [f"# Evaluation: {info['model']}" + (f" vs {info['baseline']}" if info.get("baseline") else ""),
             "", f"Split `{info['split']}`, {info['prompts']} prompts × {info['samples']} samples, engine "
             f"{info['engine']}, date {info['date']}. Values: mean [95% bootstrap interval over prompts].", ""]
    has_base = bool(rep["baseline"])
    head = "| metric | model |" + (" baseline | model − baseline |" if has_base else "")
    lines += [head, "|---|---|" + ("---|---|" if has_base else "")]

    def fmt(c):
        return f"{c['mean']:.4f} [{c['lo']:.4f}, {c['hi']:.4f}]"

    for k, label in REPORTED.items():
        if k not in rep["model"]:
            continue
        row = f"| {label} | {fmt(rep['model'][k])} |"
        if has_base and k in rep["baseline"]:
            row += f" {fmt(rep['baseline'][k])} | {fmt(rep['difference'][k])} |"
        lines.append(row)
    if rep["lift"]:
        lines += ["", "ΔCTCVR (relative lift over the baseline):", ""]
        for k, c in rep["lift"].items():
            lines.append(f"- {REPORTED[k]}: {100 * c['mean']:+.1f}% [{100 * c['lo']:+.1f}%, {100 * c['hi']:+.1f}%]")
    if rep.get("gsb"):
        g = rep["gsb"]
        lines += ["", f"GSB (per prompt, model vs baseline; by {g['by']}): good {g['good']}, same {g['same']}, "
                      f"bad {g['bad']}" + (f", unparsed {g['unparsed']}" if g.get("unparsed") else "")]
    lines += ["", "An interval of a difference that contains 0 is noise at this sample size."]
    return "\n".join(lines) + "\n"


def plot_report(rep: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in REPORTED if k in rep["difference"]] or [k for k in REPORTED if k in rep["model"]]
    src = rep["difference"] if rep["difference"] else rep["model"]
    fig, ax = plt.subplots(figsize=(8, 0.5 * len(keys) + 1.5))
    for i, k in enumerate(keys):
        c = src[k]
        ax.errorbar(c["mean"], i, xerr=[[c["mean"] - c["lo"]], [c["hi"] - c["mean"]]], fmt="o", capsize=4, color="C0")
    ax.axvline(0, color="grey", lw=0.8)
    ax.set_yticks(range(len(keys)))
    ax.set_yticklabels([REPORTED[k] for k in keys])
    ax.set_xlabel("model − baseline (95% bootstrap interval)" if rep["difference"] else "model (95% interval)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _generate(path, rows, samples, rollout_cfg, seed: int, dtype: str):
    """Each prompt's `samples` responses from the policy at `path`, by the engine of `rollout_cfg`."""
    from relate_fast.models import load_policy, prompt_ids
    from relate_fast.rollout import make_engine

    model, tok = load_policy(path, dtype=dtype)
    pids = [prompt_ids(tok, r.prompt) for r in rows]
    eng = make_engine(rollout_cfg, model_folder=path, tokenizer=tok, policy=model, dtype=dtype, seed=seed,
                      max_prompt_tokens=max(map(len, pids)))
    comps = eng.generate(pids, samples, max_new_tokens=rollout_cfg.max_new_tokens,
                         temperature=rollout_cfg.temperature, seed=seed)
    eng.close()
    flat = [c for g in comps for c in g]
    return model, tok, flat, tok.batch_decode(flat, skip_special_tokens=True)


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m relate_fast.evaluate", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="policy folder (a run's final/ or cold_start/, or any HF folder)")
    ap.add_argument("--baseline", default=None, help="baseline policy folder (e.g. the run's cold_start/)")
    ap.add_argument("--split", default="test", choices=("train", "validation", "test"))
    ap.add_argument("--data", default=None, help="ad dataset JSONL (default: the shipped sample)")
    ap.add_argument("--langs", default=None, help="comma-separated languages (default: the run's, else zh,en)")
    ap.add_argument("--prompts", type=int, default=0, help="evaluate the first N prompts (0 = all)")
    ap.add_argument("--samples", type=int, default=None, help="responses per prompt (default: the run's eval.samples)")
    ap.add_argument("--engine", default=None, choices=("hf", "vllm", "auto"),
                    help="rollout engine (default: the run's rollout.engine; hf for a folder of no run)")
    ap.add_argument("--temperature", type=float, default=None, help="(default: the run's rollout.temperature)")
    ap.add_argument("--max-new-tokens", type=int, default=None, help="(default: the run's rollout.max_new_tokens)")
    ap.add_argument("--preset", default=None, help="reward preset for the reward metric (default: the run's)")
    ap.add_argument("--ctcvr-model", default=None, help="CTCVR model folder (default: the run's <run>/ctcvr)")
    ap.add_argument("--encoder", default=None, help="embedding model (default: the CTCVR model's)")
    ap.add_argument("--judge-model", default=None, help="an instruction model folder for the GSB judgement")
    ap.add_argument("--out", default=None, help="report folder (default: <model>/../eval_<split>)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bootstrap", type=int, default=2000)
    return ap


def _gsb(results, rows, flat_rows, groups, judge_model, seed) -> dict:
    """Good/same/bad of the model against the baseline: by an LLM judge on each prompt's first response
    when `judge_model` is given, else by the reward."""
    if judge_model is None:
        return gsb_by_reward(results["model"][0]["reward"], results["baseline"][0]["reward"], groups, groups)
    from relate_fast.models import load_policy
    from relate_fast.rewards.judge import hf_generate_fn

    first = {}
    for side in ("model", "baseline"):
        first[side] = {}
        for r, t in zip(flat_rows, results[side][1]):
            first[side].setdefault(r.id, t)
    jm, jt = load_policy(judge_model)
    return gsb_by_judge(hf_generate_fn(jm, jt, max_new_tokens=4), {r.id: r for r in rows}, first["model"],
                        first["baseline"], seed=seed)


def main(argv=None) -> int:
    import datetime

    args = _parser().parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from relate_fast.config import Config, load_run_config
    from relate_fast.data.ads import load_ads
    from relate_fast.rewards.ctcvr import CTCVRModel
    from relate_fast.settings import check_fields
    from relate_fast.rewards.embedding import make_encoder

    for name in ("model", "baseline", "ctcvr_model", "judge_model"):
        p = getattr(args, name)
        if p is not None and not Path(p).exists():
            print(f"relate_fast.evaluate: --{name.replace('_', '-')} {p}: no such folder", file=sys.stderr)
            return 2
    # the run's own settings (its config.yaml), or the defaults for a folder of no run; flags override
    run_cfg = load_run_config(args.model)
    cfg = run_cfg or Config()
    pick = lambda flag, setting: setting if flag is None else flag  # noqa: E731
    reward_cfg = dataclasses.replace(cfg.reward, preset=pick(args.preset, cfg.reward.preset))
    rollout_cfg = dataclasses.replace(cfg.rollout, engine=pick(args.engine, cfg.rollout.engine if run_cfg else "hf"),
                                      temperature=pick(args.temperature, cfg.rollout.temperature),
                                      max_new_tokens=pick(args.max_new_tokens, cfg.rollout.max_new_tokens))
    samples = pick(args.samples, cfg.eval.samples)
    check_fields(reward_cfg, "reward.")
    check_fields(rollout_cfg, "rollout.")
    langs = args.langs.split(",") if args.langs else cfg.data.langs
    rows = load_ads(args.data, split=args.split, langs=langs)
    if args.prompts:
        rows = rows[:args.prompts]
    dtype = cfg.model.dtype
    ctcvr_path = args.ctcvr_model or next((str(p) for p in (Path(args.model).parent / "ctcvr",) if p.is_dir()), None)
    if ctcvr_path is None:
        print("relate_fast.evaluate: no CTCVR model: pass --ctcvr-model (python -m relate_fast.rewards.ctcvr train)",
              file=sys.stderr)
        return 2
    enc_name = args.encoder or json.loads((Path(ctcvr_path) / "config.json").read_text())["encoder"]
    encoder = make_encoder(enc_name)
    ctcvr = CTCVRModel.load(ctcvr_path, encoder=encoder)
    out = Path(args.out or Path(args.model).parent / f"eval_{args.split}")
    out.mkdir(parents=True, exist_ok=True)

    flat_rows = [r for r in rows for _ in range(samples)]
    groups = [r.id for r in flat_rows]
    results = {}
    for side, path in (("model", args.model), ("baseline", args.baseline)):
        if path is None:
            continue
        print(f"[evaluate] generating with {side} {path}: {len(rows)} prompts × {samples}", file=sys.stderr)
        model, tok, ids, texts = _generate(path, rows, samples, rollout_cfg, args.seed, dtype)
        rewards = RewardFunction.from_config(reward_cfg, tokenizer=tok, encoder=encoder, ctcvr=ctcvr,
                                             vocab_size=model.config.vocab_size)
        m = text_metrics(flat_rows, texts, ids, reward_cfg, rewards, group_size=samples, sim_seed=args.seed)
        _write_generations(out / f"generations_{side}.jsonl", flat_rows, texts, m)
        results[side] = (m, texts)
    rep = summarize(results["model"][0], results.get("baseline", (None,))[0], groups, groups,
                    n_boot=args.bootstrap, seed=args.seed)
    if "baseline" in results:
        rep["gsb"] = _gsb(results, rows, flat_rows, groups, args.judge_model, args.seed)
    info = {"model": str(args.model), "baseline": args.baseline and str(args.baseline), "split": args.split,
            "prompts": len(rows), "samples": samples, "engine": rollout_cfg.engine, "preset": reward_cfg.preset,
            "ctcvr_model": ctcvr_path, "encoder": enc_name, "seed": args.seed, "bootstrap": args.bootstrap,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    rep["info"] = info
    (out / "report.json").write_text(json.dumps(rep, indent=2))
    md = report_markdown(rep, info)
    (out / "report.md").write_text(md, encoding="utf-8")
    plot_report(rep, out / "metrics.png")
    print(md)
    print(f"wrote {out}/report.json, report.md, metrics.png, generations_*.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
