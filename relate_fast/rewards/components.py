"""RELATE's reward components, one registered function each (see base.py for the protocol).

Sentence level ([B] floats): length, format, relevance, correctness (rule-based fact check),
correctness_judge and relevance_judge (LLM-as-judge), risk (blacklist hit count, Model 4),
diversity (eq. 4), ctcvr.
Token level (B arrays of per-token floats): risk_token (−λ1 on blacklist-hit tokens) and
diversity_token (eq. 5: −λ2 on tokens inside frequent n-grams).

Every component defines the value of an empty response (the policy can emit EOS at once).
"""
from __future__ import annotations

import re
from typing import Dict, List, Optional

import numpy as np

from relate_fast.data.ads import ad_body, ad_numbers, parse_ad
from relate_fast.rewards.base import SENTENCE, TOKEN, RolloutBatch, register_component

# --------------------------------------------------------------------------- structure


def _ad_length(text: str) -> int:
    """Characters of the ad proper: labels and surrounding whitespace do not count."""
    parsed = parse_ad(text)
    return len(parsed[0]) + len(parsed[1]) if parsed else len(text.strip())


#: Target intervals per unit and language. Tokens (the paper's unit) are the response's tokens as
#: generated, template labels included, for the Qwen3 tokenizer: the character intervals below
#: converted with the synthetic dataset's reference ads (Qwen3 gives 0.744 tokens per Chinese and
#: 0.267 per English character of ad text, plus 4 label tokens), rounded; the reference ads
#: themselves hold 30-42 tokens (5th-95th percentile) in both languages. Characters count the
#: title and description without labels.
DEFAULT_LENGTH = {"tokens": {"zh": (20, 50), "en": (20, 50)},
                  "chars": {"zh": (20, 60), "en": (60, 180)}}


@register_component("length", SENTENCE)
def length_reward(batch: RolloutBatch, ctx, *, target: Dict[str, tuple] = None, unit: str = "tokens",
                  slope: float = 2.0) -> np.ndarray:
    """1 inside the target length interval; outside, falls linearly by `slope` per interval-width, floor -1.

    unit="tokens" (the paper) counts the response's token ids; its default intervals are for the
    Qwen3 tokenizer, so another tokenizer needs its own `target` or unit="chars"."""
    if unit not in DEFAULT_LENGTH:
        raise ValueError(f"reward.params.length.unit must be 'tokens' or 'chars', got {unit!r}")
    if unit == "tokens" and batch.token_ids is None:
        raise ValueError("length: unit='tokens' needs the batch's token ids (pass them, or set "
                         "reward.params.length.unit: chars)")
    target = {**DEFAULT_LENGTH[unit], **(target or {})}
    out = np.empty(len(batch))
    for i, (row, text) in enumerate(zip(batch.prompts, batch.texts)):
        lo, hi = target[row.lang]
        n = len(batch.token_ids[i]) if unit == "tokens" else _ad_length(text)
        if not text.strip():
            out[i] = -1.0
            continue
        dist = max(lo - n, n - hi, 0) / max(hi - lo, 1)
        out[i] = max(1.0 - slope * dist, -1.0)
    return out


# limits per language: title chars, description chars
FORMAT_LIMITS = {"zh": (30, 80), "en": (70, 200)}
_FORBIDDEN = re.compile(
    r"https?://|www\.|<[^>]*>|[#*@$]{2,}|[!！?？]{2,}|[\U0001F000-\U0001FAFF\u2600-\u27BF]"
    r"|(.)\1{3,}"  # the same character four times in a row
)


def format_violations(text: str, lang: str) -> List[str]:
    """The template rules an ad breaks (empty list = well-formed)."""
    parsed = parse_ad(text)
    if parsed is None:
        return ["not 'title line + description line' with labels"]
    title, desc = parsed
    max_title, max_desc = FORMAT_LIMITS[lang]
    out = []
    if not title:
        out.append("empty title")
    if not desc:
        out.append("empty description")
    if len(title) > max_title:
        out.append(f"title longer than {max_title} characters")
    if len(desc) > max_desc:
        out.append(f"description longer than {max_desc} characters")
    if title and title[-1] in "。.，,;；":
        out.append("title ends with punctuation")
    if _FORBIDDEN.search(title + "\n" + desc):
        out.append("forbidden characters (links, markup, emoji, repeated marks)")
    if title and desc and title == desc:
        out.append("description repeats the title")
    return out


@register_component("format", SENTENCE)
def format_reward(batch: RolloutBatch, ctx, *, per_violation: float = 0.5) -> np.ndarray:
    """1 for a well-formed ad; −per_violation for each broken template rule, floor −1 (unparseable = −1)."""
    out = np.empty(len(batch))
    for i, (row, text) in enumerate(zip(batch.prompts, batch.texts)):
        v = format_violations(text, row.lang)
        out[i] = -1.0 if (v and v[0].startswith("not ")) else max(1.0 - per_violation * len(v), -1.0)
    return out


# --------------------------------------------------------------------------- semantic quality


@register_component("relevance", SENTENCE, needs=("encoder",))
def relevance_reward(batch: RolloutBatch, ctx) -> np.ndarray:
    """Cosine similarity of the ad and its context (query + bidword + selling points); 0 for an empty ad."""
    bodies = [ad_body(t) for t in batch.texts]
    return ctx.encoder.cosine(bodies, [r.context for r in batch.prompts])


def fact_check(row, text: str, *, empty_score: float = 1.0) -> float:
    """Share of the numbers stated in `text` that the prompt supports, mapped to [-1, 1]
    (1 = all supported; −1 = none). An ad stating no number gets `empty_score`."""
    stated = ad_numbers(ad_body(text))
    if not stated:
        return empty_score
    ok = sum(n in row.supported_numbers for n in stated)
    return 2.0 * ok / len(stated) - 1.0


@register_component("correctness", SENTENCE)
def correctness_reward(batch: RolloutBatch, ctx, *, empty_score: float = 1.0) -> np.ndarray:
    """Rule-based fact check: every number (price, duration, count) in the ad must come from the prompt."""
    return np.array([fact_check(r, t, empty_score=empty_score) for r, t in zip(batch.prompts, batch.texts)])


@register_component("correctness_judge", SENTENCE, needs=("judge",))
def correctness_judge_reward(batch: RolloutBatch, ctx) -> np.ndarray:
    """LLM-as-judge correctness in [0, 1] (see rewards/judge.py)."""
    return ctx.judge.score(batch.prompts, batch.texts, "correctness")


@register_component("relevance_judge", SENTENCE, needs=("judge",))
def relevance_judge_reward(batch: RolloutBatch, ctx) -> np.ndarray:
    """LLM-as-judge relevance to the query in [0, 1] (see rewards/judge.py)."""
    return ctx.judge.score(batch.prompts, batch.texts, "relevance")


# --------------------------------------------------------------------------- compliance


@register_component("risk", SENTENCE, needs=("blacklist",))
def risk_reward(batch: RolloutBatch, ctx, *, cap: int = 3) -> np.ndarray:
    """Model 4's sentence-level risk control: −(number of blacklist hits after exemptions), capped."""
    hits = ctx.blacklist_hits(batch)
    return -np.minimum([len(h) for h in hits], cap).astype(np.float64)


@register_component("risk_token", TOKEN, needs=("blacklist", "aligner"))
def risk_token_reward(batch: RolloutBatch, ctx, *, lam: float = 1.0) -> list:
    """RELATE's token-level risk control: −λ1 on every token that overlaps a blacklist hit."""
    return [(-lam * m).astype(np.float32) for m in ctx.blacklist_token_masks(batch)]


# --------------------------------------------------------------------------- diversity


def _runs(mask: np.ndarray) -> int:
    """Number of maximal runs of True (one run = one repeated phrase)."""
    if mask.size == 0:
        return 0
    m = mask.astype(np.int8)
    return int(m[0] + np.count_nonzero(np.diff(m) == 1))


DIVERSITY_COUNTS = ("ngrams", "phrases")


@register_component("diversity", SENTENCE, needs=("ngrams",))
def diversity_reward(batch: RolloutBatch, ctx, *, delta: float = 0.2, count: str = "ngrams",
                     cap: Optional[int] = None) -> np.ndarray:
    """Eq. 4: −Δd for each of the response's n-grams that is in G_high.

    count="ngrams" (the paper): every occurrence of a frequent n-gram counts, so one repeated
    10-token phrase costs 45 Δd (its 2..10-grams). count="phrases": one Δd per maximal run of
    tokens covered by frequent n-grams, which keeps the penalty linear in the number of repeated
    phrases (a departure, for small models whose template fragments repeat). `cap` bounds the count
    (none by default).
    """
    if count not in DIVERSITY_COUNTS:
        raise ValueError(f"reward.params.diversity.count must be one of {DIVERSITY_COUNTS}, got {count!r}")
    if count == "ngrams":
        n = ctx.ngram_occurrences(batch).astype(np.float64)
    else:
        n = np.array([_runs(m) for m in ctx.ngram_token_masks(batch)], dtype=np.float64)
    if cap is not None:
        n = np.minimum(n, cap)
    return -delta * n


@register_component("diversity_token", TOKEN, needs=("ngrams",))
def diversity_token_reward(batch: RolloutBatch, ctx, *, lam: float = 0.5) -> list:
    """Eq. 5: −λ2 on every token inside an occurrence of a frequent (G_high) n-gram."""
    return [(-lam * m).astype(np.float32) for m in ctx.ngram_token_masks(batch)]


# --------------------------------------------------------------------------- conversion


@register_component("ctcvr", SENTENCE, needs=("ctcvr",))
def ctcvr_reward(batch: RolloutBatch, ctx, *, scale: float = 1.0) -> np.ndarray:
    """pCTCVR of the learned ESMM model (rewards/ctcvr.py) times `scale`."""
    return scale * ctx.ctcvr.predict(batch.prompts, batch.texts)["ctcvr"].astype(np.float64)
