"""Blacklist and frequent n-gram hits, mapped to token indices (RELATE's token-level rewards).

The heavy lifting is in C++ (``relate_fast._native``, sources in ``csrc/``); this package checks
arguments at the boundary, reads tokenizers and list files, and keeps the public contract::

    bl = Blacklist(patterns, exemptions=(), normalize=True)
    bl.find(text) -> [(start, end, pattern_index), ...]      # str offsets into the original text
    bl.find_batch(texts, num_threads=0)                      # GIL released, internal thread pool
    bl.token_mask(batch_token_ids, aligner) -> [np.ndarray[bool]]
    al = TokenAligner(tokenizer); al.token_bytes(token_id) -> bytes
    c = NgramCounter(n_min=2, n_max=10, count="responses", window=None)
    c.update(batch); c.count(ngram); c.frequent(min_count); c.mask(seqs, min_count); c.occurrences(seqs, min_count)
    token_rewards(batch_token_ids, blacklist=..., aligner=..., ngram_counter=..., min_count=...)

Its modules mirror csrc/: `aligner` (token ids -> bytes), `blacklist` (list files, folds, hits),
`ngrams` (the windowed counter), `compose` (r_tok from both). It never imports torch, so reward
workers stay light.
"""
from __future__ import annotations

from relate_fast.matcher.aligner import TokenAligner, _aligner_from_state  # noqa: F401 (older pickles name it here)
from relate_fast.matcher.blacklist import (DEFAULT_LIST, FOLDS, Blacklist, PatternFile,  # noqa: F401
                                           _blacklist_from_state, read_pattern_file)
from relate_fast.matcher.compose import token_rewards
from relate_fast.matcher.ngrams import NgramCounter, _counter_from_state  # noqa: F401

__all__ = [
    "Blacklist",
    "FOLDS",
    "TokenAligner",
    "NgramCounter",
    "token_rewards",
    "read_pattern_file",
    "PatternFile",
    "DEFAULT_LIST",
]
