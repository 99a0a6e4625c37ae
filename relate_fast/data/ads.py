"""Advertising prompts: the record type, the policy's prompt and output format, and the JSONL loader.

One JSON object per line::

    {"id": "education-zh-0003", "lang": "zh", "industry": "education",
     "query": "杭州雅思培训哪家好", "bidword": "雅思培训",
     "selling_points": ["小班教学", "免费试听"],
     "facts": ["课程价格2980元", "共8周课程", "每班不超过6人"],
     "reference": {"title": "...", "description": "..."},      # optional: the cold-start target
     "split": "train"}                                           # optional: train | validation | test

`facts` are the landing page's verifiable statements; every number an ad states must come from
them (or from the query, bidword or selling points) — the rule-based correctness check relies on it.
A malformed row is a ValueError naming the file, the line and the field.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, List, Optional, Sequence, Tuple

__all__ = ["AdPrompt", "load_ads", "sample_ads", "SAMPLE_ADS", "SPLITS", "LANGS",
           "format_ad", "parse_ad", "ad_body", "ad_numbers", "LABEL_RE"]

#: The sample dataset shipped with the package (built by ``python -m relate_fast.data.build_ads``).
SAMPLE_ADS = "sample_ads.jsonl"
SPLITS = ("train", "validation", "test")
LANGS = ("zh", "en")

_LABELS = {"zh": ("标题：", "描述："), "en": ("Title: ", "Description: ")}
_TITLE, _DESC = "(?:标题|Title)", "(?:描述|Description)"  # either language's label words
#: A template label at the start of a line ("Title:", "描述："): in every response by design.
LABEL_RE = re.compile(rf"(?:^|\n)\s*(?:{_TITLE}|{_DESC})\s*[:：]\s*", re.IGNORECASE)

_INSTRUCTION = {
    "zh": ("为下面的搜索广告写一条标题和一条描述。只使用给出的事实，不要使用绝对化或承诺效果的用语。\n"
           "搜索词：{query}\n购买词：{bidword}\n卖点：{points}\n落地页信息：{facts}\n"
           "格式：\n标题：…\n描述：…\n"),
    "en": ("Write a title and a description for this search ad. Use only the facts given; no absolute "
           "claims or promised results.\nQuery: {query}\nBidword: {bidword}\nSelling points: {points}\n"
           "Landing page: {facts}\nFormat:\nTitle: ...\nDescription: ...\n"),
}


@dataclass(frozen=True)
class AdPrompt:
    """One advertising task: the search context, the advertiser's facts and a reference ad."""

    id: str
    lang: str
    industry: str
    query: str
    bidword: str
    selling_points: Tuple[str, ...]
    facts: Tuple[str, ...]
    reference_title: Optional[str] = None
    reference_description: Optional[str] = None
    split: str = "train"

    @property
    def prompt(self) -> str:
        """The instruction the policy sees."""
        sep = "、" if self.lang == "zh" else "; "
        return _INSTRUCTION[self.lang].format(query=self.query, bidword=self.bidword,
                                              points=sep.join(self.selling_points),
                                              facts=sep.join(self.facts))

    @property
    def reference(self) -> Optional[str]:
        """The reference ad in the output format (the supervised cold-start target), or None."""
        if self.reference_title is None:
            return None
        return format_ad(self.reference_title, self.reference_description or "", self.lang)

    @property
    def context(self) -> str:
        """What the ad should be relevant to: query, bidword and selling points."""
        return " ".join([self.query, self.bidword, *self.selling_points])

    @property
    def metadata(self) -> str:
        """The ad's own fields without its text (the CTCVR model's 'ad' input)."""
        return " ".join([self.industry, self.bidword, *self.selling_points, *self.facts])

    @property
    def supported_numbers(self) -> frozenset:
        """Numbers an ad may state: those in the facts, selling points, query and bidword."""
        return frozenset(ad_numbers(" ".join([self.query, self.bidword, *self.selling_points, *self.facts])))

    def to_json(self) -> dict:
        d = dict(id=self.id, lang=self.lang, industry=self.industry, query=self.query, bidword=self.bidword,
                 selling_points=list(self.selling_points), facts=list(self.facts))
        if self.reference_title is not None:
            d["reference"] = dict(title=self.reference_title, description=self.reference_description or "")
        d["split"] = self.split
        return d


def format_ad(title: str, description: str, lang: str) -> str:
    t, d = _LABELS[lang]
    return f"{t}{title}\n{d}{description}"


_AD_RE = re.compile(rf"^\s*{_TITLE}\s*[:：]\s*(?P<title>[^\n]*)\n\s*{_DESC}\s*[:：]\s*(?P<desc>[^\n]*)\s*$",
                    re.IGNORECASE)


def parse_ad(text: str) -> Optional[Tuple[str, str]]:
    """(title, description) when `text` is exactly the two labelled lines (either language), else None."""
    m = _AD_RE.match(text)
    if m is None:
        return None
    return m.group("title").strip(), m.group("desc").strip()


def ad_body(text: str) -> str:
    """The ad's words without the labels: "title description" when `text` parses, else `text` stripped."""
    parsed = parse_ad(text)
    return f"{parsed[0]} {parsed[1]}" if parsed else text.strip()


# A number: digits with optional thousands separators and decimals ("2,980", "3.5"). Digits glued to
# letters (model names like "X200") count too: a wrong model number is a wrong fact.
_NUMBER_RE = re.compile(r"\d+(?:[,，]\d{3})*(?:\.\d+)?")


def ad_numbers(text: str) -> List[str]:
    """Numbers stated in `text`, normalised (separators removed, trailing zeros of decimals dropped)."""
    out = []
    for m in _NUMBER_RE.finditer(text):
        s = m.group(0).replace(",", "").replace("，", "")
        if "." in s:
            s = s.rstrip("0").rstrip(".")
        out.append(s.lstrip("0") or "0")
    return out


# --------------------------------------------------------------------------- loading

_STR_FIELDS = ("id", "lang", "industry", "query", "bidword")


def _row_error(path, line_no, field_name, msg) -> ValueError:
    return ValueError(f"{path}:{line_no}: field '{field_name}': {msg}")


def _parse_row(obj, path, line_no) -> AdPrompt:
    if not isinstance(obj, dict):
        raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(obj).__name__}")
    for name in _STR_FIELDS:
        if name not in obj:
            raise _row_error(path, line_no, name, "missing")
        if not isinstance(obj[name], str) or not obj[name].strip():
            raise _row_error(path, line_no, name, f"must be a non-empty string, got {obj[name]!r}")
    if obj["lang"] not in LANGS:
        raise _row_error(path, line_no, "lang", f"must be one of {LANGS}, got {obj['lang']!r}")
    lists = {}
    for name, allow_empty in (("selling_points", False), ("facts", True)):
        v = obj.get(name)
        if v is None:
            raise _row_error(path, line_no, name, "missing")
        if not isinstance(v, list) or not all(isinstance(x, str) and x.strip() for x in v):
            raise _row_error(path, line_no, name, f"must be a list of non-empty strings, got {v!r}")
        if not v and not allow_empty:
            raise _row_error(path, line_no, name, "must not be empty")
        lists[name] = tuple(v)
    title = desc = None
    if obj.get("reference") is not None:
        ref = obj["reference"]
        if not isinstance(ref, dict) or not isinstance(ref.get("title"), str) \
                or not isinstance(ref.get("description"), str):
            raise _row_error(path, line_no, "reference",
                             f"must be an object with string 'title' and 'description', got {ref!r}")
        title, desc = ref["title"], ref["description"]
    split = obj.get("split", "train")
    if split not in SPLITS:
        raise _row_error(path, line_no, "split", f"must be one of {SPLITS}, got {split!r}")
    unknown = set(obj) - {*_STR_FIELDS, "selling_points", "facts", "reference", "split"}
    if unknown:
        raise ValueError(f"{path}:{line_no}: unknown field(s) {sorted(unknown)}")
    return AdPrompt(id=obj["id"], lang=obj["lang"], industry=obj["industry"], query=obj["query"],
                    bidword=obj["bidword"], selling_points=lists["selling_points"], facts=lists["facts"],
                    reference_title=title, reference_description=desc, split=split)


def iter_jsonl(path, what: str = "file") -> Iterable[Tuple[int, object]]:
    """(line number, parsed object) for each non-blank line of a UTF-8 JSONL file; a missing file,
    bad encoding or invalid JSON is an error naming `what`, the file and the line."""
    try:
        with open(path, encoding="utf-8") as f:
            for i, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield i, json.loads(line)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{i}: invalid JSON ({e.msg} at column {e.colno})") from None
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} {path}: no such file") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e})") from None


def load_ads(path=None, *, split: Optional[str] = None, langs: Optional[Sequence[str]] = None) -> List[AdPrompt]:
    """Reads a JSONL ad dataset (the shipped sample when `path` is None), optionally one split/languages.

    Raises ValueError naming the file, line and field of the first malformed row, and on duplicate ids.
    """
    if split is not None and split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS} or None, got {split!r}")
    if langs is not None:
        langs = tuple(langs)
        bad = [x for x in langs if x not in LANGS]
        if bad or not langs:
            raise ValueError(f"langs must be a non-empty subset of {LANGS}, got {langs!r}")
    if path is None:
        path = resources.files("relate_fast.data") / SAMPLE_ADS
    rows, seen = [], {}
    for line_no, obj in iter_jsonl(path, "ad dataset"):
        row = _parse_row(obj, path, line_no)
        if row.id in seen:
            raise _row_error(path, line_no, "id", f"duplicate id {row.id!r} (first on line {seen[row.id]})")
        seen[row.id] = line_no
        rows.append(row)
    if not rows:
        raise ValueError(f"{path}: no rows")
    return [r for r in rows if (split is None or r.split == split) and (langs is None or r.lang in langs)]


def sample_ads(split: Optional[str] = None, langs: Optional[Sequence[str]] = None) -> List[AdPrompt]:
    """The shipped sample dataset (≥ 1,000 prompts, 24 industries, Chinese and English)."""
    return load_ads(None, split=split, langs=langs)
