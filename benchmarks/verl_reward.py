"""The reward of bench_vs_verl.py's verl side, as a verl `custom_reward_function`.

verl's naive reward manager calls `compute_score(data_source, solution_str, ground_truth, extra_info)`
once per response, with the response decoded (special tokens skipped). It scores it with relate_fast's
Model 1 preset (length in Qwen3 tokens + format) by the same `RewardFunction` the other sides use; the
token ids are the decoded text encoded again, so a response that ended with EOS counts one token fewer
than on our and TRL's sides (a reward difference, not a difference in the work timed). The parquet row's
`extra_info` names the prompt (`index`) and the policy folder whose tokenizer to use (`tokenizer`).
"""
from __future__ import annotations

import functools


@functools.lru_cache(maxsize=4)
def _scorer(tokenizer_dir: str):
    from transformers import AutoTokenizer

    from relate_fast.data import sample_ads
    from relate_fast.rewards import RewardConfig, RewardFunction

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    fn = RewardFunction.from_config(RewardConfig(preset="model1", encoder="hashed", monitor=False), tokenizer=tok)
    return tok, fn, sample_ads("train", langs=["en"])


def compute_score(data_source, solution_str, ground_truth, extra_info=None, **kwargs) -> float:
    from relate_fast.rewards import RolloutBatch

    tok, fn, rows = _scorer(extra_info["tokenizer"])
    ids = tok(solution_str, add_special_tokens=False)["input_ids"]
    batch = RolloutBatch([rows[int(extra_info["index"])]], [solution_str], [list(ids)], group_size=1)
    return float(fn(batch).sentence[0])
