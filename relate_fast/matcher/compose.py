"""RELATE's token-level reward r_tok from the blacklist's and the n-gram counter's token masks.

The one place r_tok's masks are made: `token_rewards` (other stacks, the demo) and the trainer's
reward components (relate_fast.rewards: risk_token, diversity_token) both build them with
`blacklist_masks` and `ngram_masks`, so a trailing EOS and the tokens a caller excludes (the ad
template's labels, in the trainer) are treated alike everywhere.
"""
from __future__ import annotations

from typing import Callable, Iterable, List, Optional, Sequence

import numpy as np

from relate_fast.matcher.aligner import TokenAligner
from relate_fast.matcher.blacklist import Blacklist
from relate_fast.matcher.ngrams import NgramCounter

__all__ = ["token_rewards", "blacklist_masks", "ngram_masks", "strip_stop"]


def strip_stop(ids, stop_ids) -> list:
    """A response without its trailing stop tokens (EOS): "now.<eos>" ends every response, and
    penalising it would teach the policy never to stop."""
    ids = list(ids)
    while ids and ids[-1] in stop_ids:
        ids.pop()
    return ids


def blacklist_masks(batch_token_ids, blacklist: Blacklist, aligner: TokenAligner, *, num_threads: int = 0) -> List[np.ndarray]:
    """Per response, a bool per token: its bytes overlap a blacklist hit."""
    return blacklist.token_mask(batch_token_ids, aligner, num_threads=num_threads)


def ngram_masks(batch_token_ids, counter: NgramCounter, min_count: int, *, aligner: Optional[TokenAligner] = None,
                stop_ids: Iterable[int] = (), exclude: Optional[Callable[[Sequence[int]], np.ndarray]] = None,
                num_threads: int = 1) -> List[np.ndarray]:
    """Per response, a bool per token: inside an occurrence of a frequent (>= min_count) n-gram. A
    trailing run of `stop_ids` is never flagged (matched without it); `exclude(ids)` gives a bool per
    token never flagged either (an output template's labels, which every response repeats)."""
    stop = frozenset(stop_ids)
    seqs = [strip_stop(ids, stop) for ids in batch_token_ids] if stop else batch_token_ids
    masks = counter.token_mask(seqs, aligner, min_count, num_threads=num_threads)
    out = []
    for m, ids in zip(masks, batch_token_ids):
        if len(m) != len(ids):
            full = np.zeros(len(ids), dtype=bool)
            full[:len(m)] = m
            m = full
        out.append(m & ~exclude(ids) if exclude is not None and m.any() else m)
    return out


def token_rewards(batch_token_ids, *, blacklist: Optional[Blacklist] = None, aligner: Optional[TokenAligner] = None,
                  ngram_counter: Optional[NgramCounter] = None, min_count: Optional[int] = None,
                  lambda_blacklist: float = 1.0, lambda_ngram: float = 1.0, pad_to: Optional[int] = None,
                  num_threads: int = 0, stop_ids: Iterable[int] = (),
                  exclude: Optional[Callable[[Sequence[int]], np.ndarray]] = None) -> np.ndarray:
    """RELATE's token-level reward r_tok = -λ1·blacklist_mask - λ2·ngram_mask as a float32 [B, T]
    array padded with zeros (T = longest sequence, or ``pad_to``); ``torch.from_numpy`` shares it.

    ``blacklist`` needs ``aligner``; ``ngram_counter`` needs ``min_count`` (and ``aligner`` when it
    counts characters). Either part may be left out. As in the trainer, pass ``stop_ids`` (the EOS id)
    so a response's final EOS, in every response, is not a frequent n-gram, and ``exclude`` for tokens
    the n-gram part must never flag (see `ngram_masks`).
    """
    if blacklist is None and ngram_counter is None:
        raise ValueError("token_rewards needs a blacklist, an ngram_counter, or both")
    if blacklist is not None and not isinstance(blacklist, Blacklist):
        raise TypeError(f"blacklist must be a Blacklist, got {type(blacklist).__name__}")
    if ngram_counter is not None and not isinstance(ngram_counter, NgramCounter):
        raise TypeError(f"ngram_counter must be an NgramCounter, got {type(ngram_counter).__name__}")
    if blacklist is not None and aligner is None:
        raise ValueError("blacklist hits map to tokens through an aligner: pass aligner=TokenAligner(tokenizer)")
    if ngram_counter is not None and min_count is None:
        raise ValueError("ngram_counter needs min_count (the G_high threshold)")
    bl_masks = blacklist_masks(batch_token_ids, blacklist, aligner, num_threads=num_threads) if blacklist is not None else None
    ng_masks = (ngram_masks(batch_token_ids, ngram_counter, min_count, aligner=aligner, stop_ids=stop_ids,
                            exclude=exclude, num_threads=max(num_threads, 1)) if ngram_counter is not None else None)
    lengths = [len(m) for m in (bl_masks if bl_masks is not None else ng_masks)]
    width = max(lengths, default=0)
    if pad_to is not None:
        if pad_to < width:
            raise ValueError(f"pad_to={pad_to} is shorter than the longest sequence ({width} tokens)")
        width = pad_to
    out = np.zeros((len(lengths), width), dtype=np.float32)
    for i, n in enumerate(lengths):
        row = out[i, :n]
        if bl_masks is not None:
            row -= np.float32(lambda_blacklist) * bl_masks[i]
        if ng_masks is not None:
            row -= np.float32(lambda_ngram) * ng_masks[i]
    return out
