"""Correctness by an LLM-as-judge: the prompt, a robust score parser, and generate functions.

The judge is any ``generate(prompts: list[str]) -> list[str]`` (greedy, short outputs). Two are
provided: :func:`vllm_generate_fn` (the rollout engine's vLLM ``LLM``, used when vLLM is installed)
and :func:`hf_generate_fn` (Hugging Face ``generate``, otherwise). The judge model is whatever the
user passes — in production a strong instruction model; nothing is downloaded here.
"""
from __future__ import annotations

import re
from typing import Callable, List, Optional, Sequence

import numpy as np

__all__ = ["JUDGE_PROMPT", "judge_prompt", "parse_judge_score", "LLMJudge", "hf_generate_fn", "vllm_generate_fn"]

JUDGE_PROMPT = {
    "zh": ("你是广告审核员。根据落地页信息判断广告是否准确：价格、时长、数量等事实必须与信息一致，不得编造。\n"
           "落地页信息：{facts}\n卖点：{points}\n广告：{ad}\n"
           "请只输出一行：评分：N（1=严重错误，5=完全准确）"),
    "en": ("You review search ads. Judge whether the ad is accurate against the landing page: prices, "
           "durations and counts must match it, and nothing may be invented.\nLanding page: {facts}\n"
           "Selling points: {points}\nAd: {ad}\nAnswer with one line only: Score: N (1 = badly wrong, "
           "5 = fully accurate)"),
}


def judge_prompt(row, text: str) -> str:
    sep = "、" if row.lang == "zh" else "; "
    return JUDGE_PROMPT[row.lang].format(facts=sep.join(row.facts), points=sep.join(row.selling_points),
                                         ad=text.replace("\n", " "))


_LABELLED = re.compile(r"(?:score|rating|评分|得分|分数)\s*[\"']?\s*[:：=]?\s*[\"']?\s*([1-5](?:\.\d+)?)\b",
                       re.IGNORECASE)
_OUT_OF = re.compile(r"\b([1-5](?:\.\d+)?)\s*(?:/|out of|分?\s*（?满分)\s*5\b", re.IGNORECASE)
_BARE = re.compile(r"(?<![\d.])([1-5])(?![\d.])")


def parse_judge_score(text: str) -> Optional[float]:
    """The judge's 1–5 score from its reply, or None when it gave none unambiguously.

    Accepts "Score: 4", "评分：4", '{"score": 4}', "4/5", "4 out of 5", "rating=3.5"; a reply with no
    label counts only when it holds exactly one standalone digit 1–5 ("4", "I'd say 4.").
    """
    if not isinstance(text, str):
        return None
    for pattern in (_LABELLED, _OUT_OF):
        m = pattern.search(text)
        if m:
            return float(m.group(1))
    bare = _BARE.findall(text)
    if len(bare) == 1:
        return float(bare[0])
    return None


class LLMJudge:
    """Scores ads for factual correctness in [0, 1] ((score - 1) / 4); unparseable replies get `fallback`."""

    def __init__(self, generate: Callable[[List[str]], List[str]], *, fallback: float = 0.0):
        if not callable(generate):
            raise TypeError("generate must be a callable: list of prompts -> list of replies")
        self.generate, self.fallback = generate, float(fallback)
        self.calls = self.unparsed = 0

    def score(self, rows: Sequence, texts: Sequence[str]) -> np.ndarray:
        prompts = [judge_prompt(r, t) for r, t in zip(rows, texts)]
        replies = self.generate(prompts)
        if len(replies) != len(prompts):
            raise RuntimeError(f"judge generate returned {len(replies)} replies for {len(prompts)} prompts")
        out = np.empty(len(prompts))
        for i, (reply, text) in enumerate(zip(replies, texts)):
            s = parse_judge_score(reply) if text.strip() else 1.0  # an empty ad states nothing false... or true
            if s is None:
                self.unparsed += 1
                out[i] = self.fallback
            else:
                out[i] = (s - 1.0) / 4.0
        self.calls += len(prompts)
        return out


def hf_generate_fn(model, tokenizer, *, max_new_tokens: int = 12, batch_size: int = 32, chat: bool = True):
    """Greedy Hugging Face generate as a judge backend (left padding, chat template when the tokenizer has one)."""
    import torch

    def generate(prompts: List[str]) -> List[str]:
        out = []
        tokenizer.padding_side = "left"
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        for i in range(0, len(prompts), batch_size):
            chunk = prompts[i:i + batch_size]
            if chat and getattr(tokenizer, "chat_template", None):
                chunk = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                       add_generation_prompt=True) for p in chunk]
            enc = tokenizer(chunk, return_tensors="pt", padding=True).to(model.device)
            with torch.no_grad():
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                                     pad_token_id=tokenizer.pad_token_id)
            out += tokenizer.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
        return out

    return generate


def vllm_generate_fn(llm, *, max_new_tokens: int = 12, chat: bool = True):
    """Greedy generation on a vLLM ``LLM`` (the rollout engine) as a judge backend."""
    from vllm import SamplingParams

    params = SamplingParams(temperature=0.0, max_tokens=max_new_tokens)

    def generate(prompts: List[str]) -> List[str]:
        if chat:
            outs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)
        else:
            outs = llm.generate(prompts, params, use_tqdm=False)
        return [o.outputs[0].text for o in outs]

    return generate
