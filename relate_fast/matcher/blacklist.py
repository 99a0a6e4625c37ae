"""The compliance blacklist (csrc/blacklist.cpp over csrc/automaton.cpp): list files, normalising folds,
exemptions, hits in text and their token masks."""
from __future__ import annotations

import os
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np

from relate_fast import _native
from relate_fast.matcher._checks import _check_num_threads, _str_list
from relate_fast.matcher.aligner import TokenAligner, _check_aligner

__all__ = ["Blacklist", "FOLDS", "read_pattern_file", "PatternFile", "DEFAULT_LIST"]

#: The bilingual advertising-compliance list shipped with the package (see its header for sources).
DEFAULT_LIST = "compliance_zh_en.tsv"

Hit = Tuple[int, int, int]


# --------------------------------------------------------------------------- list files


@dataclass
class PatternFile:
    """Patterns and exemptions read from a list file, with each pattern's category and line."""

    patterns: List[str]
    exemptions: List[str]
    categories: List[Optional[str]]
    lines: List[int]


def read_pattern_file(path) -> PatternFile:
    """Reads a list file: one entry per line, UTF-8, ``#`` starts a comment line.

    A line is either a bare pattern, or tab-separated ``block|exempt<TAB>pattern[<TAB>category]``.
    A malformed line is a ValueError naming the file and line.
    """
    path = os.fspath(path)
    out = PatternFile([], [], [], [])
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            if "\t" not in line:
                kind, pattern, category = "block", line.strip(), None
            else:
                cols = line.split("\t")
                if len(cols) not in (2, 3):
                    raise ValueError(f"{path}:{lineno}: expected 'block|exempt<TAB>pattern[<TAB>category]', "
                                     f"got {len(cols)} tab-separated columns: {line!r}")
                kind, pattern = cols[0].strip(), cols[1]
                category = cols[2].strip() if len(cols) == 3 and cols[2].strip() else None
            if kind not in ("block", "exempt"):
                raise ValueError(f"{path}:{lineno}: first column must be 'block' or 'exempt', got {kind!r}")
            if not pattern:
                raise ValueError(f"{path}:{lineno}: empty pattern")
            if kind == "block":
                out.patterns.append(pattern)
                out.categories.append(category)
                out.lines.append(lineno)
            else:
                out.exemptions.append(pattern)
    return out


# --------------------------------------------------------------------------- Blacklist

#: csrc/unicode.h's FoldFlags
_FOLD_BITS = {"compat": 1, "han": 2, "confusables": 4}
FOLDS = tuple(_FOLD_BITS)


def _fold_flags(folds) -> int:
    if isinstance(folds, str):
        raise TypeError(f"folds must be a collection of names from {FOLDS}, not a str")
    flags = 0
    for name in folds:
        if name not in _FOLD_BITS:
            raise ValueError(f"folds: unknown fold {name!r}; known: {FOLDS}")
        flags |= _FOLD_BITS[name]
    return flags


class Blacklist:
    """Every overlapping occurrence of any pattern in a text, by an Aho-Corasick automaton over
    Unicode code points (double array, dense root; see csrc/DESIGN.md).

    Args:
        patterns: the blacklisted strings (non-empty str each).
        exemptions: strings whose occurrences suppress the pattern hits they cover, e.g. 最佳方法
            as a consumer tip under the SAMR guidance on absolute terms.
        normalize: fold full-width to half-width and case, and step over separators, punctuation,
            symbols and zero-width characters inserted between a pattern's characters
            (最*佳, 最 佳, 最\\u200b佳 all hit 最佳). Offsets always refer to the original text.
            With normalize=False, ``find`` equals brute-force substring search.
        folds: with normalize, the further folds that keep a policy from writing around a pattern
            with another form of the same letter (all on by default; ``()`` turns them off):
            "compat" (NFKC to one letter or digit: 𝐁𝐄𝐒𝐓, ⓑⓔⓢⓣ, 𝟏𝟎𝟎 and superscripts),
            "han" (traditional and simplified Chinese match each other: 國家級 hits 国家级) and
            "confusables" (Cyrillic and Greek look-alikes of Latin letters: bеst with a Cyrillic е).
            A compatibility character standing for several (ﬁ, ⑩, ㎏) counts as those characters,
            at its own offset; offsets always point into the original text.
    """

    def __init__(self, patterns: Iterable[str], *, exemptions: Iterable[str] = (), normalize: bool = True,
                 categories: Optional[Sequence[Optional[str]]] = None, folds: Iterable[str] = FOLDS):
        if not isinstance(normalize, bool):
            raise TypeError(f"normalize must be bool, got {type(normalize).__name__}")
        flags = _fold_flags(folds)
        patterns = _str_list(patterns, "patterns")
        exemptions = _str_list(exemptions, "exemptions")
        if categories is not None and len(categories) != len(patterns):
            raise ValueError(f"categories has {len(categories)} entries for {len(patterns)} patterns")
        try:
            impl = _native.Blacklist(patterns, exemptions, normalize, flags)
        except ValueError as e:  # name the offending string, not only its index
            raise ValueError(_with_pattern_text(str(e), patterns, exemptions)) from None
        self._set(impl, patterns, exemptions, categories)

    def _set(self, impl, patterns, exemptions, categories):
        self._impl = impl
        self.patterns: Tuple[str, ...] = tuple(patterns)
        self.exemptions: Tuple[str, ...] = tuple(exemptions)
        self.categories: Tuple[Optional[str], ...] = tuple(categories) if categories is not None else (None,) * len(patterns)

    # -- constructors -----------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path, *, normalize: bool = True, folds: Iterable[str] = FOLDS) -> "Blacklist":
        """A list file (see :func:`read_pattern_file`): bare patterns or block/exempt lines."""
        pf = read_pattern_file(path)
        return cls(pf.patterns, exemptions=pf.exemptions, normalize=normalize, categories=pf.categories, folds=folds)

    @classmethod
    def default(cls, *, normalize: bool = True, folds: Iterable[str] = FOLDS) -> "Blacklist":
        """The shipped bilingual advertising-compliance list (relate_fast/data/compliance_zh_en.tsv)."""
        with resources.as_file(resources.files("relate_fast.data") / DEFAULT_LIST) as p:
            return cls.from_file(p, normalize=normalize, folds=folds)

    def raw(self) -> "Blacklist":
        """The same patterns and exemptions matched exactly (normalize=False): what a hit of this
        list that the raw list misses was written around (relate_fast's evasion monitor)."""
        return Blacklist(self.patterns, exemptions=self.exemptions, normalize=False, categories=self.categories)

    # -- matching ---------------------------------------------------------------------------------
    def find(self, text: str) -> List[Hit]:
        """Every overlapping hit as (start, end, pattern_index), str offsets into ``text``,
        ordered by (end, start, pattern_index)."""
        return self._impl.find(text)

    def find_batch(self, texts: Sequence[str], num_threads: int = 0) -> List[List[Hit]]:
        """``[find(t) for t in texts]`` with the GIL released, spread over ``num_threads`` threads
        (0 = all cores); the result does not depend on the number of threads."""
        return self._impl.find_batch(texts, _check_num_threads(num_threads))

    def token_mask(self, batch_token_ids, aligner: TokenAligner, *, num_threads: int = 0) -> List[np.ndarray]:
        """For each sequence, a bool array: token t is flagged iff its byte range overlaps a hit's
        byte range. All in C++: token bytes -> UTF-8 text -> hits -> flagged tokens."""
        _check_aligner(aligner)
        return self._impl.token_mask(batch_token_ids, aligner._table, _check_num_threads(num_threads))

    def is_compliant(self, text: str) -> bool:
        """True iff ``text`` has no hit after exemptions."""
        return not self._impl.find(text)

    # -- persistence ------------------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The built automaton as a flat, checksummed byte string (loads without rebuilding)."""
        return self._impl.serialize()

    @classmethod
    def from_bytes(cls, data: bytes, categories=None) -> "Blacklist":
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes, got {type(data).__name__}")
        impl = _native.Blacklist.deserialize(bytes(data))
        n, x = impl.num_patterns, impl.num_exemptions
        self = cls.__new__(cls)
        self._set(impl, [impl.original(i) for i in range(n)], [impl.original(n + i) for i in range(x)], categories)
        return self

    def save(self, path) -> None:
        """Writes the built automaton to ``path`` (written to a temp file, then renamed)."""
        path = os.fspath(path)
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(self.to_bytes())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path) -> "Blacklist":
        path = os.fspath(path)
        with open(path, "rb") as f:
            data = f.read()
        try:
            return cls.from_bytes(data)
        except ValueError as e:
            raise ValueError(f"{path}: {e}") from None

    def __reduce__(self):
        return (_blacklist_from_state, (self.to_bytes(), self.categories))

    # -- introspection ----------------------------------------------------------------------------
    @property
    def normalize(self) -> bool:
        return self._impl.normalize

    @property
    def folds(self) -> Tuple[str, ...]:
        """The folds in effect (empty without normalize)."""
        return tuple(name for name, bit in _FOLD_BITS.items() if self._impl.folds & bit)

    @property
    def memory_bytes(self) -> int:
        """Bytes held by the automaton and its tables."""
        return self._impl.memory_bytes

    def __len__(self) -> int:
        return len(self.patterns)

    def __repr__(self) -> str:
        return (f"Blacklist({len(self.patterns)} patterns, {len(self.exemptions)} exemptions, "
                f"normalize={self.normalize}, folds={self.folds}, {self._impl.num_states} states)")


def _blacklist_from_state(data, categories):
    return Blacklist.from_bytes(data, categories=categories)


def _with_pattern_text(msg: str, patterns, exemptions) -> str:
    for kind, items in (("pattern ", patterns), ("exemption ", exemptions)):
        if msg.startswith(kind):
            try:
                i = int(msg[len(kind):].split()[0])
                return f"{kind.strip()}s[{i}] = {items[i]!r}{msg[len(kind) + len(str(i)):]}"
            except (ValueError, IndexError):
                break
    return msg
