"""Frequent n-grams over a window of recent rollout batches (csrc/ngram.cpp): counts, G_high, and the
masks of the tokens (or characters) inside a frequent n-gram's occurrence."""
from __future__ import annotations

from typing import List, Optional

import numpy as np

from relate_fast import _native
from relate_fast.matcher._checks import _check_num_threads
from relate_fast.matcher.aligner import TokenAligner, _check_aligner

__all__ = ["NgramCounter"]


class NgramCounter:
    """Exact counts of n-grams (n_min <= n <= n_max) over a rolling window of batches.

    Args:
        n_min, n_max: n-gram lengths counted (RELATE: 2..10).
        count: "responses" counts each n-gram once per response (the paper's frequency over
            rollouts); "occurrences" counts every occurrence.
        window: how many recent ``update`` batches count (None = all). A batch that leaves the
            window is removed exactly.
        unit: "token" counts token-id n-grams; "char" counts character n-grams of texts (useful for
            Chinese, where one character often spans tokens) and maps them to tokens with
            :meth:`token_mask`.
    """

    def __init__(self, n_min: int = 2, n_max: int = 10, *, count: str = "responses", window: Optional[int] = None,
                 unit: str = "token"):
        for name, v in (("n_min", n_min), ("n_max", n_max)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise TypeError(f"{name} must be int, got {type(v).__name__}")
        if not 1 <= n_min <= n_max <= 255:
            raise ValueError(f"need 1 <= n_min <= n_max <= 255, got n_min={n_min}, n_max={n_max}")
        if count not in ("responses", "occurrences"):
            raise ValueError(f"count must be 'responses' or 'occurrences', got {count!r}")
        if window is not None and (isinstance(window, bool) or not isinstance(window, int) or window < 1):
            raise ValueError(f"window must be None or an int >= 1, got {window!r}")
        if unit not in ("token", "char"):
            raise ValueError(f"unit must be 'token' or 'char', got {unit!r}")
        self.count_mode, self.unit = count, unit
        self._impl = _native.NgramCounter(n_min, n_max, count == "responses", window or 0)

    @property
    def n_min(self) -> int:
        return self._impl.n_min

    @property
    def n_max(self) -> int:
        return self._impl.n_max

    @property
    def window(self) -> Optional[int]:
        return self._impl.window or None

    @property
    def num_ngrams(self) -> int:
        """Distinct n-gram prefixes held (all lengths 1..n_max), a measure of memory."""
        return self._impl.num_nodes - 1

    def _seqs(self, batch, name):
        if self.unit != "char":
            return batch
        if isinstance(batch, str):
            raise TypeError(f"{name} must be a list of texts, not a single str")
        texts = list(batch)
        for i, t in enumerate(texts):
            if not isinstance(t, str):
                raise TypeError(f"{name}[{i}] must be str (this counter has unit='char'), got {type(t).__name__}")
        return [_code_points(t) for t in texts]

    def update(self, batch) -> None:
        """Counts one batch (a list of token-id sequences, or of texts with unit="char")."""
        self._impl.update(self._seqs(batch, "batch"))

    def count(self, ngram) -> int:
        """Count of one n-gram (a sequence of ids, or a str with unit="char") over the window."""
        seq = _code_points(ngram) if (self.unit == "char" and isinstance(ngram, str)) else ngram
        try:
            n = len(seq)
        except TypeError:
            raise TypeError(f"ngram must be a sequence of token ids, got {type(ngram).__name__}") from None
        if not self.n_min <= n <= self.n_max:
            raise ValueError(f"ngram has length {n}; this counter counts lengths {self.n_min}..{self.n_max}")
        return self._impl.count(seq)

    def frequent(self, min_count: int) -> list:
        """G_high: every n-gram with count >= min_count, sorted by (length, ids)."""
        grams = self._impl.frequent(_check_min_count(min_count))
        if self.unit == "char":
            return ["".join(map(chr, g)) for g in grams]
        return grams

    def mask(self, seqs, min_count: int, *, num_threads: int = 1) -> List[np.ndarray]:
        """Per sequence, bool per token (or character): inside an occurrence of a G_high n-gram."""
        return self._impl.mask(self._seqs(seqs, "seqs"), _check_min_count(min_count), _check_num_threads(num_threads))

    def occurrences(self, seqs, min_count: int, *, num_threads: int = 1) -> np.ndarray:
        """Per sequence, how many occurrences of G_high n-grams it holds: every (start, length) whose
        n-gram has count >= min_count counts once, so a repeated 4-token phrase with n from 2 holds
        3 + 2 + 1 = 6 (eq. 4 of RELATE sums Δd over them). int64 array, one entry per sequence."""
        return self._impl.occurrences(self._seqs(seqs, "seqs"), _check_min_count(min_count),
                                      _check_num_threads(num_threads))

    def token_mask(self, batch_token_ids, aligner: TokenAligner, min_count: int, *, num_threads: int = 1) -> List[np.ndarray]:
        """Token masks for a batch of token ids; with unit="char", character n-gram hits are mapped
        to tokens by byte ranges exactly like blacklist hits."""
        if self.unit == "token":
            return self.mask(batch_token_ids, min_count, num_threads=num_threads)
        _check_aligner(aligner)
        min_count = _check_min_count(min_count)
        decoded = [aligner.decode_offsets(ids) for ids in batch_token_ids]
        char_masks = self._impl.mask([d[0] for d in decoded], min_count, _check_num_threads(num_threads))
        return [_char_mask_to_tokens(m, cp_byte, tok_byte) for m, (_, cp_byte, tok_byte) in zip(char_masks, decoded)]

    def __reduce__(self):
        return (_counter_from_state, (self._impl.serialize(), self.count_mode, self.unit))

    def __repr__(self) -> str:
        return (f"NgramCounter(n={self.n_min}..{self.n_max}, count={self.count_mode!r}, window={self.window}, "
                f"unit={self.unit!r}, {self.num_ngrams} prefixes, {self._impl.num_batches} batches held)")


def _counter_from_state(data, count_mode, unit):
    self = NgramCounter.__new__(NgramCounter)
    self.count_mode, self.unit = count_mode, unit
    self._impl = _native.NgramCounter.deserialize(data)
    return self


def _check_min_count(min_count) -> int:
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be an int >= 1, got {min_count!r}")
    return int(min_count)


def _code_points(text: str) -> np.ndarray:
    # surrogatepass: lone surrogates are valid str code points and count like any other
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.int64)


def _char_mask_to_tokens(char_mask: np.ndarray, cp_byte: np.ndarray, tok_byte: np.ndarray) -> np.ndarray:
    n_tokens = len(tok_byte) - 1
    per_byte = np.repeat(char_mask, np.diff(cp_byte))
    if per_byte.size == 0 or n_tokens == 0:
        return np.zeros(n_tokens, dtype=bool)
    starts = np.minimum(tok_byte[:-1], per_byte.size - 1)
    return np.logical_or.reduceat(per_byte, starts) & (np.diff(tok_byte) > 0)
