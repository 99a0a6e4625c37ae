"""A documented ground-truth user model: P(click) and P(conversion | click) of a (query, ad, text).

The offline stand-in for the paper's online A/B test. It generates impression logs (from which the
CTCVR model learns) and scores a policy's texts (the "simulated CTCVR" of evaluation). Nothing in
training reads its internals: the CTCVR reward only ever sees its logs.

The model (all effects are additive on the logit scale; weights in :class:`SimParams`):

  logit P(click) = click_bias + prompt_effect
                   + relevance · w   (share of the query's words/character bigrams the ad repeats)
                   + facts · w       (supported numbers stated, up to 3: concrete offers draw clicks)
                   + cta · w         (a call to action: "立即咨询", "Book now", ...)
                   + hype · w        (absolute or guaranteed claims: they DO lift clicks ...)
                   − length_penalty  (outside the comfortable length, per interval-width)
                   − malformed · w   (not the title + description template)
                   − fatigue · w     (share of the other ads in the pool that repeat its phrases)
  logit P(conv | click) = conv_bias + prompt_effect'
                   + relevance · w + facts · w
                   − unsupported · w (numbers the landing page contradicts: the user leaves)
                   − hype · w        (... but cut conversions: the landing page disappoints)

`prompt_effect` is a seeded per-prompt random effect (some queries convert better than others);
clicks and conversions are Bernoulli draws from a seeded generator, so logs are reproducible.
"""
from __future__ import annotations

import json
import math
import random
import re
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

from relate_fast.data.ads import AdPrompt, ad_body, ad_numbers, format_ad, parse_ad
from relate_fast.matcher import Blacklist

__all__ = ["SimParams", "ClickSimulator", "text_features", "creative_variants", "simulate_log"]

CTA = {
    "zh": ["立即", "马上", "现在", "咨询", "预约", "了解详情", "到店", "下单", "报名", "领取", "抢购", "体验"],
    "en": ["book", "call", "order", "learn more", "get a quote", "visit", "try", "sign up", "shop", "apply",
           "buy", "get started"],
}
COMFORT_LENGTH = {"zh": (22, 50), "en": (70, 150)}  # characters of title + description

_EN_STOP = {"a", "an", "the", "in", "for", "to", "of", "and", "near", "me", "how", "which", "best", "what", "is",
            "with", "on", "at", "by", "my", "your", "per"}


@dataclass(frozen=True)
class SimParams:
    click_bias: float = -2.2
    conv_bias: float = -1.4
    prompt_sd: float = 0.3
    w_click_relevance: float = 1.5
    w_click_facts: float = 0.35
    w_click_cta: float = 0.45
    w_click_hype: float = 0.6
    w_click_length: float = 0.8
    w_click_malformed: float = 0.9
    w_click_fatigue: float = 1.5
    w_conv_relevance: float = 0.8
    w_conv_facts: float = 0.3
    w_conv_unsupported: float = 1.2
    w_conv_hype: float = 1.3


def _units(text: str, lang: str) -> set:
    """Words (English) or character bigrams (Chinese) of `text`, lower-cased, digits dropped."""
    text = re.sub(r"\d+", " ", text.lower())
    if lang == "en":
        return {w for w in re.findall(r"[a-z][a-z'-]*", text) if w not in _EN_STOP}
    chars = [c for c in text if "\u4e00" <= c <= "\u9fff" or c.isalpha()]
    return {a + b for a, b in zip(chars, chars[1:])}


def _phrases(text: str) -> set:
    """Character 6-grams of the ad without digits and spaces: what 'the same phrasing' means for fatigue."""
    s = re.sub(r"[\d\s]+", "", text.lower())
    return {s[i:i + 6] for i in range(len(s) - 5)}


def text_features(row: AdPrompt, text: str, blacklist: Blacklist) -> Dict[str, float]:
    """The interpretable features of one ad (everything but fatigue, which depends on the pool)."""
    body = ad_body(text)
    q = _units(row.query + " " + row.bidword, row.lang)
    relevance = len(q & _units(body, row.lang)) / len(q) if q else 0.0
    stated = ad_numbers(body)
    supported = sum(n in row.supported_numbers for n in stated)
    low = body.lower()
    cta = any(w in low for w in CTA[row.lang])
    lo, hi = COMFORT_LENGTH[row.lang]
    n = len(body)
    length_dev = max(lo - n, n - hi, 0) / (hi - lo)
    return dict(relevance=relevance, facts=float(min(supported, 3)), unsupported=float(len(stated) - supported),
                cta=float(cta), hype=float(min(len(blacklist.find(body)), 2)), length_dev=length_dev,
                malformed=float(parse_ad(text) is None), empty=float(not body))


class ClickSimulator:
    """Ground-truth P(click), P(conversion | click) and CTCVR for ads shown in a pool.

    Fatigue is relative to the pool being shown (one call of :meth:`probabilities`): for each ad,
    the mean over its phrases (character 6-grams) of the share of the *other* ads in the pool that
    contain the phrase. A policy that writes every ad the same way is shown to users who have seen
    that phrasing again and again.
    """

    def __init__(self, seed: int = 0, params: SimParams = SimParams(), blacklist: Optional[Blacklist] = None):
        self.seed, self.params = seed, params
        self.blacklist = blacklist if blacklist is not None else Blacklist.default()

    def _prompt_effect(self, row: AdPrompt, which: str) -> float:
        rng = random.Random(zlib.crc32(f"{self.seed}:{which}:{row.id}".encode()))
        return rng.gauss(0.0, self.params.prompt_sd)

    @staticmethod
    def fatigue(texts: Sequence[str]) -> np.ndarray:
        phrases = [_phrases(ad_body(t)) for t in texts]
        df = Counter(p for ps in phrases for p in ps)
        others = max(len(texts) - 1, 1)
        return np.array([np.mean([(df[p] - 1) / others for p in ps]) if ps else 0.0 for ps in phrases])

    def probabilities(self, rows: Sequence[AdPrompt], texts: Sequence[str]) -> Dict[str, np.ndarray]:
        """{"ctr", "cvr", "ctcvr", "fatigue"} for each (row, text), shown together as one pool."""
        if len(rows) != len(texts):
            raise ValueError(f"{len(rows)} rows but {len(texts)} texts")
        p = self.params
        fatigue = self.fatigue(texts)
        ctr, cvr = np.empty(len(texts)), np.empty(len(texts))
        for i, (row, text) in enumerate(zip(rows, texts)):
            f = text_features(row, text, self.blacklist)
            if f["empty"]:
                ctr[i] = cvr[i] = 0.0  # nothing shown, nothing clicked
                continue
            zc = (p.click_bias + self._prompt_effect(row, "click") + p.w_click_relevance * f["relevance"]
                  + p.w_click_facts * f["facts"] + p.w_click_cta * f["cta"] + p.w_click_hype * min(f["hype"], 1)
                  - p.w_click_length * f["length_dev"] - p.w_click_malformed * f["malformed"]
                  - p.w_click_fatigue * fatigue[i])
            zv = (p.conv_bias + self._prompt_effect(row, "conv") + p.w_conv_relevance * f["relevance"]
                  + p.w_conv_facts * f["facts"] - p.w_conv_unsupported * min(f["unsupported"], 2)
                  - p.w_conv_hype * f["hype"])
            ctr[i], cvr[i] = 1 / (1 + math.exp(-zc)), 1 / (1 + math.exp(-zv))
        return dict(ctr=ctr, cvr=cvr, ctcvr=ctr * cvr, fatigue=fatigue)

    def impressions(self, rows: Sequence[AdPrompt], texts: Sequence[str], n: int, *, seed: int = 0) -> List[dict]:
        """`n` simulated impressions of every (row, text): one log record each (the CTCVR model's input)."""
        probs = self.probabilities(rows, texts)
        rng = np.random.default_rng([self.seed, seed])
        clicks = rng.random((len(texts), n)) < probs["ctr"][:, None]
        convs = clicks & (rng.random((len(texts), n)) < probs["cvr"][:, None])
        out = []
        for i, (row, text) in enumerate(zip(rows, texts)):
            base = dict(prompt_id=row.id, lang=row.lang, industry=row.industry, query=row.query, bidword=row.bidword,
                        selling_points=list(row.selling_points), facts=list(row.facts), text=text)
            out += [dict(base, click=int(c), conversion=int(v)) for c, v in zip(clicks[i], convs[i])]
        return out


# --------------------------------------------------------------------------- the ad server's creatives

_HYPE = {"zh": ["全网最低价", "效果最好", "保证有效", "行业第一", "100%满意"],
         "en": ["lowest price", "the best in town", "guaranteed results", "number one", "100% effective"]}
_FILLER = {"zh": ["欢迎了解更多信息", "品质服务值得信赖", "更多优惠等你来"],
           "en": ["trusted by many customers", "quality service you can rely on", "more offers inside"]}


def _wrong_number(text: str, rng: random.Random) -> str:
    nums = list(re.finditer(r"\d+", text))
    if not nums:
        return text
    m = rng.choice(nums)
    wrong = str(int(m.group(0)) * rng.choice([2, 3]) + rng.randint(1, 9))
    return text[:m.start()] + wrong + text[m.end():]


def creative_variants(row: AdPrompt, rng: random.Random, k: int = 8, pool: Sequence[AdPrompt] = ()) -> List[str]:
    """`k` candidate ads for a prompt, of varied quality: the reference and edits of it (facts dropped
    or added, wrong numbers, hype, a call to action removed, too short, padded, off-topic, unformatted).
    These are what an ad server would have shown before the policy existed."""
    title, desc = row.reference_title or row.bidword, row.reference_description or row.bidword
    lang = row.lang
    sep = "，" if lang == "zh" else ", "
    end = "。" if lang == "zh" else "."
    edits = {
        "reference": lambda: (title, desc),
        "more_facts": lambda: (title, desc.rstrip(end) + sep + sep.join(row.facts) + end),
        "no_facts": lambda: (title, re.sub(r"[^。.]*\d[^。.]*[。.]", "", desc) or desc),
        "wrong_number": lambda: (title, _wrong_number(desc, rng)),
        "hype": lambda: (title + (" " if lang == "en" else "") + rng.choice(_HYPE[lang]), desc),
        "no_cta": lambda: (title, re.sub(r"[^。.]*[。.]?$", "", desc.rstrip()) or desc),
        "short": lambda: (row.bidword, row.selling_points[0]),
        "padded": lambda: (title, desc + " " + " ".join(_FILLER[lang]) + end),
        "off_topic": lambda: ((pool[rng.randrange(len(pool))].reference_title or title) if pool else title, desc),
        "unformatted": lambda: (None, title + " " + desc),
        "query_echo": lambda: (row.query + sep + (row.selling_points[0]), desc),
    }
    names = ["reference"] + rng.sample([n for n in edits if n != "reference"], min(k - 1, len(edits) - 1))
    out = []
    for name in names:
        t, d = edits[name]()
        out.append(d if t is None else format_ad(t, d, lang))
    return out


def simulate_log(rows: Sequence[AdPrompt], *, variants: int = 8, impressions: int = 8, seed: int = 0,
                 sim: Optional[ClickSimulator] = None) -> List[dict]:
    """Impression logs for `rows`: `variants` creatives each, `impressions` impressions each."""
    sim = sim or ClickSimulator(seed)
    rng = random.Random(seed)
    all_rows, texts = [], []
    for row in rows:
        for text in creative_variants(row, rng, variants, pool=rows):
            all_rows.append(row)
            texts.append(text)
    return sim.impressions(all_rows, texts, impressions, seed=seed)


def write_jsonl(records: Iterable[dict], path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
            n += 1
    return n


def main(argv=None) -> None:
    import argparse

    from relate_fast.data.ads import load_ads

    ap = argparse.ArgumentParser(description="Simulate impression logs (click, conversion) for an ad dataset.")
    ap.add_argument("--data", default=None, help="ad dataset JSONL (default: the shipped sample)")
    ap.add_argument("--split", default="train", help="dataset split to simulate")
    ap.add_argument("--variants", type=int, default=8, help="creatives per prompt")
    ap.add_argument("--impressions", type=int, default=8, help="impressions per creative")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", required=True, help="JSONL file to write")
    args = ap.parse_args(argv)
    rows = load_ads(args.data, split=args.split)
    n = write_jsonl(simulate_log(rows, variants=args.variants, impressions=args.impressions, seed=args.seed), args.out)
    print(f"wrote {n} impressions of {len(rows)} prompts to {args.out}")


if __name__ == "__main__":
    main()
