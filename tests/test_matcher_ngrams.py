import pickle
import random

import numpy as np
import pytest

from relate_fast.matcher import NgramCounter
from tests.textgen import brute_ngram_counts, brute_ngram_mask, brute_ngram_occurrences


def random_batches(rng, n_batches, n_seqs=20, vocab=6, max_len=30):
    return [[[rng.randrange(vocab) for _ in range(rng.randint(0, max_len))] for _ in range(n_seqs)]
            for _ in range(n_batches)]


@pytest.mark.parametrize("count", ["responses", "occurrences"])
@pytest.mark.parametrize("window", [None, 1, 3])
def test_counts_frequent_and_masks_equal_brute_force(count, window):
    rng = random.Random(f"{count}-{window}")
    n_min, n_max = 2, 5
    c = NgramCounter(n_min, n_max, count=count, window=window)
    batches = random_batches(rng, 6)
    for k, batch in enumerate(batches):
        c.update(batch)
        held = batches[: k + 1] if window is None else batches[max(0, k + 1 - window): k + 1]
        ref = brute_ngram_counts(held, n_min, n_max, count == "responses")
        for gram in list(ref)[:200] + [(0, 1), (5, 5, 5), (9, 9)]:
            assert c.count(gram) == ref.get(gram, 0)
        for min_count in (1, 3, 8):
            freq = {g for g, v in ref.items() if v >= min_count}
            assert set(c.frequent(min_count)) == freq
            masks = c.mask(batch, min_count)
            for seq, m in zip(batch, masks):
                assert m.tolist() == brute_ngram_mask(seq, freq, n_min, n_max)
            assert [m.tolist() for m in c.mask(batch, min_count, num_threads=2)] == [m.tolist() for m in masks]
            occ = c.occurrences(batch, min_count)
            assert occ.tolist() == [brute_ngram_occurrences(seq, freq, n_min, n_max) for seq in batch]
            assert c.occurrences(batch, min_count, num_threads=2).tolist() == occ.tolist()


def test_window_releases_memory_exactly():
    rng = random.Random(1)
    c = NgramCounter(2, 10, window=2)
    for batch in random_batches(rng, 5, vocab=50):
        c.update(batch)
    c.update([[1, 2]])
    c.update([[1, 2]])
    # only the two tiny batches remain: the n-grams of [1, 2] (prefixes 1, 2 and 1-2)
    assert c.num_ngrams == 3 and c.count([1, 2]) == 2 and c.frequent(1) == [(1, 2)]


def test_pickled_counter_continues_identically():
    rng = random.Random(2)
    batches = random_batches(rng, 6)
    a = NgramCounter(2, 4, window=3)
    for b in batches[:4]:
        a.update(b)
    b_ = pickle.loads(pickle.dumps(a))
    for b in batches[4:]:
        a.update(b)
        b_.update(b)
    assert a.frequent(1) == b_.frequent(1)
    assert all(a.count(g) == b_.count(g) for g in a.frequent(1))
    assert b_.window == 3 and b_.n_max == 4


def test_long_sequences_and_large_ids():
    c = NgramCounter(2, 10, count="occurrences")
    seq = np.tile(np.array([151000, 151001, 7], dtype=np.int64), 400)
    c.update([seq])
    assert c.count([151000, 151001]) == 400
    assert c.count([151000, 151001, 7] * 3 + [151000]) == 397
    m = c.mask([seq, np.array([1, 2, 3])], 100)
    assert m[0].all() and not m[1].any()


def test_bad_input_is_named():
    c = NgramCounter(2, 4)
    with pytest.raises(ValueError, match=r"token id -3 at position 1 of sequence 0 is out of range"):
        c.update([[1, -3]])
    with pytest.raises(TypeError, match=r"batch\[1\] must be a list, tuple or integer array"):
        c.update([[1, 2], object()])
    with pytest.raises(ValueError, match="ngram has length 1; this counter counts lengths 2..4"):
        c.count([1])
    with pytest.raises(ValueError, match="min_count must be an int >= 1"):
        c.frequent(0)
    with pytest.raises(ValueError, match="need 1 <= n_min <= n_max"):
        NgramCounter(3, 2)
    with pytest.raises(ValueError, match="count must be 'responses' or 'occurrences'"):
        NgramCounter(count="tokens")
    with pytest.raises(ValueError, match="window must be None or an int >= 1"):
        NgramCounter(window=0)
    with pytest.raises(TypeError, match=r"batch\[0\] must be str \(this counter has unit='char'\)"):
        NgramCounter(unit="char").update([[1, 2]])
