"""RELATE's token-level reward r_tok from the blacklist's and the n-gram counter's token masks."""
from __future__ import annotations

from typing import Optional

import numpy as np

from relate_fast.matcher.aligner import TokenAligner
from relate_fast.matcher.blacklist import Blacklist
from relate_fast.matcher.ngrams import NgramCounter

__all__ = ["token_rewards"]


def token_rewards(batch_token_ids, *, blacklist: Optional[Blacklist] = None, aligner: Optional[TokenAligner] = None,
                  ngram_counter: Optional[NgramCounter] = None, min_count: Optional[int] = None,
                  lambda_blacklist: float = 1.0, lambda_ngram: float = 1.0, pad_to: Optional[int] = None,
                  num_threads: int = 0) -> np.ndarray:
    """RELATE's token-level reward r_tok = -λ1·blacklist_mask - λ2·ngram_mask as a float32 [B, T]
    array padded with zeros (T = longest sequence, or ``pad_to``); ``torch.from_numpy`` shares it.

    ``blacklist`` needs ``aligner``; ``ngram_counter`` needs ``min_count`` (and ``aligner`` when it
    counts characters). Either part may be left out.
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
    bl_masks = blacklist.token_mask(batch_token_ids, aligner, num_threads=num_threads) if blacklist is not None else None
    ng_masks = (ngram_counter.token_mask(batch_token_ids, aligner, min_count, num_threads=max(num_threads, 1))
                if ngram_counter is not None else None)
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
