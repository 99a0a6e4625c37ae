"""Builds the sample ad dataset from the templates in `industries.py`, deterministically.

    python -m relate_fast.data.build_ads [--out relate_fast/data/sample_ads.jsonl] [--per-pair 22] [--seed 0]

Each (industry, language) pair gets `per_pair` prompts; each prompt draws an advertiser brand, a
product, a city, two to three selling points and the landing-page facts with their numbers, and a
reference ad stating only those facts. Splits: per pair, 80% train, 10% validation, 10% test
(by position after a seeded shuffle). The shipped file is this script's output with the defaults;
a test rebuilds it and compares bytes.
"""
from __future__ import annotations

import argparse
import json
import random
import re
from pathlib import Path

from relate_fast.data.ads import AdPrompt
from relate_fast.data.industries import BRAND_PARTS, CALLS_TO_ACTION, CITIES, INDUSTRIES

DEFAULT_OUT = Path(__file__).with_name("sample_ads.jsonl")


def _slot_values(rng: random.Random, slots: dict) -> dict:
    lo, hi, step = slots["price"]
    return dict(price=rng.randrange(lo, hi + 1, step), n=rng.randint(*slots["n"]), d=rng.randint(*slots["d"]))


def _singular(text: str) -> str:
    """'1 days' -> '1 day' (the English fact templates are written for plural numbers)."""
    return re.sub(r"\b1 (day|hour|week|month|year|working day|lb bag)s\b", r"1 \1", text)


def _reference(lang, brand, product, city, points, facts, cta, rng) -> tuple:
    style = rng.randrange(3)
    rest = facts[1:] if style == 2 else facts  # the third title style states the first fact itself
    if lang == "zh":
        title = [f"{brand}{product}｜{points[0]}", f"{city}{product}，{points[0]}",
                 f"{product}：{points[0]}，{facts[0]}"][style]
        desc = f"{'，'.join(points[1:] or points[:1])}。{'，'.join(rest)}。{cta}。"
    else:
        cap = product[0].upper() + product[1:]
        title = [f"{brand} {cap} | {points[0].capitalize()}", f"{cap} in {city} - {points[0].capitalize()}",
                 f"{cap}: {points[0]}, {facts[0]}"][style]
        body = ", ".join(points[1:] or points[:1])
        fact_text = ", ".join(rest)
        desc = f"{body[0].upper() + body[1:]}. {fact_text[0].upper() + fact_text[1:]}. {cta}."
    return title, desc


def build(per_pair: int = 22, seed: int = 0) -> list:
    """The dataset as a list of AdPrompt, in a fixed order."""
    rows = []
    for industry in sorted(INDUSTRIES):
        for lang in ("zh", "en"):
            spec = INDUSTRIES[industry][lang]
            rng = random.Random(f"{seed}:{industry}:{lang}")  # str seeds hash deterministically
            order = list(range(per_pair))
            rng.shuffle(order)
            n_eval = max(1, per_pair // 10)
            split_of = {k: ("test" if pos < n_eval else "validation" if pos < 2 * n_eval else "train")
                        for pos, k in enumerate(order)}
            first, second = BRAND_PARTS[lang]
            for k in range(per_pair):
                p = rng.randrange(len(spec["products"]))
                product, bidword = spec["products"][p], spec["bidwords"][p]
                city = rng.choice(CITIES[lang])
                brand = rng.choice(first) + rng.choice(second)
                query = rng.choice(spec["queries"]).format(city=city, bidword=bidword, product=product)
                if lang == "en":
                    query = query.lower()
                points = rng.sample(spec["points"], rng.randint(2, 3))
                values = _slot_values(rng, spec["slots"])
                facts = [f.format(**values) for f in spec["facts"]]
                if lang == "en":
                    facts = [_singular(f) for f in facts]
                stated = rng.sample(facts, 2)
                cta = rng.choice(CALLS_TO_ACTION[lang])
                title, desc = _reference(lang, brand, product, city, points, stated, cta, rng)
                rows.append(AdPrompt(
                    id=f"{industry}-{lang}-{k:04d}", lang=lang, industry=industry, query=query,
                    bidword=bidword, selling_points=tuple(points), facts=tuple(facts),
                    reference_title=title, reference_description=desc, split=split_of[k]))
    return rows


def dumps(rows) -> str:
    return "".join(json.dumps(r.to_json(), ensure_ascii=False, sort_keys=False) + "\n" for r in rows)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSONL file to write")
    ap.add_argument("--per-pair", type=int, default=22, help="prompts per (industry, language)")
    ap.add_argument("--seed", type=int, default=0, help="seed of every random choice")
    args = ap.parse_args(argv)
    if args.per_pair < 10:
        ap.error("--per-pair must be >= 10 (each split needs a prompt)")
    rows = build(args.per_pair, args.seed)
    args.out.write_text(dumps(rows), encoding="utf-8")
    print(f"wrote {len(rows)} prompts ({len(INDUSTRIES)} industries, zh+en) to {args.out}")


if __name__ == "__main__":
    main()
