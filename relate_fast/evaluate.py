"""Evaluation metrics of a set of generated ads (paper §4.1.2), shared by the trainer's baseline
and final evaluations.

    evaluate_texts(rows, texts, token_ids, reward_cfg, ctx) -> {"reward", "compliance_rate", "diversity",
                                                                 "ctcvr_model", "ctcvr_sim", ...}

- reward: mean r_i of the configured preset (n-gram counts over the evaluated texts only);
- compliance_rate: share of texts with no blacklist hit after exemptions;
- diversity: mean of the training formula (eq. 4, sentence level) over the evaluated texts;
- ctcvr_model: mean pCTCVR of the learned CTCVR model; ctcvr_sim: mean CTCVR of the click simulator
  (the offline A/B test), the texts shown as one pool (fatigue included).
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence

import numpy as np

from relate_fast.rewards import COMPONENTS, RewardContext, RewardFunction, RolloutBatch
from relate_fast.rewards.combine import NgramWindow

__all__ = ["evaluate_texts"]


def evaluate_texts(rows: Sequence, texts: Sequence[str], token_ids: Optional[Sequence[Sequence[int]]], reward_cfg,
                   ctx: RewardContext, *, group_size: int = 1, sim_seed: int = 0) -> dict:
    from relate_fast.matcher import NgramCounter
    from relate_fast.sim import ClickSimulator

    # a fresh n-gram window holding only the evaluated texts: evaluation never touches training's counts
    unit = ctx.ngrams.counter.unit if ctx.ngrams is not None else reward_cfg.ngram_unit
    if token_ids is None:
        unit = "char"
    counter = NgramCounter(reward_cfg.ngram_n_min, reward_cfg.ngram_n_max, count="responses", window=1, unit=unit)
    stop = ctx.ngrams.stop_ids if ctx.ngrams is not None else ()
    ngrams = NgramWindow(counter, min_share=reward_cfg.ngram_min_share, min_count=reward_cfg.ngram_min_count,
                         stop_ids=stop)
    eval_ctx = RewardContext(blacklist=ctx.blacklist, aligner=ctx.aligner, ngrams=ngrams, encoder=ctx.encoder,
                             ctcvr=ctx.ctcvr, judge=ctx.judge, num_threads=ctx.num_threads)
    fn = RewardFunction(copy.deepcopy(reward_cfg.component_specs()), eval_ctx)
    batch = RolloutBatch(list(rows), list(texts), token_ids, group_size=group_size)
    out = fn(batch)
    diversity = COMPONENTS["diversity"].fn(batch, eval_ctx)
    res = {"reward": float(out.sentence.mean()), "compliance_rate": float(out.compliant.mean()),
           "diversity": float(diversity.mean())}
    if ctx.ctcvr is not None:
        res["ctcvr_model"] = float(ctx.ctcvr.predict(rows, texts)["ctcvr"].mean())
    res["ctcvr_sim"] = float(ClickSimulator(sim_seed).probabilities(rows, texts)["ctcvr"].mean())
    for k, v in out.components.items():
        res[f"component/{k}"] = float(np.mean(v))
    if "format" in out.components:
        res["format_pass_rate"] = float(np.mean(out.components["format"] == 1.0))
    if "length" in out.components:
        res["length_pass_rate"] = float(np.mean(out.components["length"] == 1.0))
    if token_ids is not None:
        res["response_tokens_mean"] = float(np.mean([len(t) for t in token_ids]))
    res["n_texts"] = len(texts)
    return res
