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

__all__ = ["JUDGE_PROMPT", "RELEVANCE_PROMPT", "ASPECTS", "judge_prompt", "parse_judge_score", "LLMJudge",
           "hf_generate_fn", "vllm_generate_fn", "judge_from_config"]

JUDGE_PROMPT = {
    "zh": ("你是广告审核员。根据落地页信息判断广告是否准确：价格、时长、数量等事实必须与信息一致，不得编造。\n"
           "落地页信息：{facts}\n卖点：{points}\n广告：{ad}\n"
           "请只输出一行：评分：N（1=严重错误，5=完全准确）"),
    "en": ("You review search ads. Judge whether the ad is accurate against the landing page: prices, "
           "durations and counts must match it, and nothing may be invented.\nLanding page: {facts}\n"
           "Selling points: {points}\nAd: {ad}\nAnswer with one line only: Score: N (1 = badly wrong, "
           "5 = fully accurate)"),
}


#: What the judge is asked, per aspect: correctness against the landing page (the paper's judge),
#: and relevance of the ad to the user's query (when `reward.judge_relevance` is on).
RELEVANCE_PROMPT = {
    "zh": ("你是广告审核员。判断广告与用户搜索词是否相关：广告应回应搜索意图并推广该关键词的产品或服务。\n"
           "搜索词：{query}\n关键词：{bidword}\n广告：{ad}\n请只输出一行：评分：N（1=完全无关，5=高度相关）"),
    "en": ("You review search ads. Judge whether the ad answers the user's search: it should address the "
           "query's intent and advertise the bidword's product or service.\nQuery: {query}\nBidword: {bidword}\n"
           "Ad: {ad}\nAnswer with one line only: Score: N (1 = unrelated, 5 = highly relevant)"),
}
ASPECTS = ("correctness", "relevance")


def judge_prompt(row, text: str, aspect: str = "correctness") -> str:
    sep = "、" if row.lang == "zh" else "; "
    ad = text.replace("\n", " ")
    if aspect == "relevance":
        return RELEVANCE_PROMPT[row.lang].format(query=row.query, bidword=row.bidword, ad=ad)
    return JUDGE_PROMPT[row.lang].format(facts=sep.join(row.facts), points=sep.join(row.selling_points), ad=ad)


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
    """Scores ads in [0, 1] ((score - 1) / 4) for an aspect (correctness, the default, or relevance);
    unparseable replies get `fallback`. One batched `generate` call per `score`."""

    def __init__(self, generate: Callable[[List[str]], List[str]], *, fallback: float = 0.0, where: str = ""):
        if not callable(generate):
            raise TypeError("generate must be a callable: list of prompts -> list of replies")
        self.generate, self.fallback = generate, float(fallback)
        self.where = where  # where the judge runs, for the log
        self.calls = self.unparsed = 0

    def score(self, rows: Sequence, texts: Sequence[str], aspect: str = "correctness") -> np.ndarray:
        if aspect not in ASPECTS:
            raise ValueError(f"judge aspect must be one of {ASPECTS}, got {aspect!r}")
        prompts = [judge_prompt(r, t, aspect) for r, t in zip(rows, texts)]
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
    chat = chat and bool(getattr(llm.get_tokenizer(), "chat_template", None))  # as hf_generate_fn

    def generate(prompts: List[str]) -> List[str]:
        if chat:
            outs = llm.chat([[{"role": "user", "content": p}] for p in prompts], params, use_tqdm=False)
        else:
            outs = llm.generate(prompts, params, use_tqdm=False)
        return [o.outputs[0].text for o in outs]

    return generate


def judge_from_config(cfg, *, device="cpu", dtype: str = "float32") -> Optional[LLMJudge]:
    """The trainer's judge from `reward.judge_*` (None when reward.judge_model is unset).

    engine "hf": the judge model loaded with Hugging Face on `device` (this rank's GPU, or the CPU),
    greedy, batched by reward.judge_batch_size. engine "vllm": a second vLLM engine on this rank's
    GPU beside the rollout engine, with reward.judge_gpu_memory_utilization of it, its engine core in
    a process of its own: two vLLM engines in one process share vLLM's process-wide state (its
    compilation and CUDA-graph pools, the sleep-mode allocator) and an earlier attempt on the GPU
    crashed; the judge's weights never change, so only prompts and replies cross the process line."""
    if cfg.judge_model is None:
        return None
    if cfg.judge_engine == "vllm":
        import torch
        from vllm import LLM

        from relate_fast.rollout.vllm_engine import engine_process

        with engine_process(True, torch.cuda.is_available()):
            llm = LLM(model=cfg.judge_model, dtype="bfloat16" if dtype == "bfloat16" else "auto",
                      gpu_memory_utilization=cfg.judge_gpu_memory_utilization, enable_prefix_caching=True)
        client = type(getattr(llm.llm_engine, "engine_core", None)).__name__  # SyncMPClient: in its own process
        return LLMJudge(vllm_generate_fn(llm, max_new_tokens=cfg.judge_max_new_tokens), where=f"engine core: {client}")
    from relate_fast.models import load_policy

    model, tok = load_policy(cfg.judge_model, dtype=dtype, device=device)
    model.eval().requires_grad_(False)
    return LLMJudge(hf_generate_fn(model, tok, max_new_tokens=cfg.judge_max_new_tokens,
                                   batch_size=cfg.judge_batch_size))
