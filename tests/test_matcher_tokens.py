import pickle
import random

import numpy as np
import pytest

from relate_fast.matcher import Blacklist, NgramCounter, TokenAligner, token_rewards
from tests.textgen import (SCRIPTS, brute_ngram_mask, corpus, is_skip, random_text,
                           reference_token_mask)

TEXTS = corpus(60, seed=5) + ["最佳产品😀第一", "ＡＢＣ guaranteed cure 100%有效", "é\u0301 한국어 最\u200b佳", ""]
PATTERNS = ["最佳", "第一", "guaranteed cure", "100%有效", "😀第", "ab", "语"]


@pytest.fixture(params=["qwen", "small_bpe"])
def tokenizer(request, qwen_tokenizer, small_bpe):
    return qwen_tokenizer if request.param == "qwen" else small_bpe


def test_token_bytes_reproduce_text_exactly(tokenizer):
    al = TokenAligner(tokenizer)
    assert al.kind == "byte_level"
    for text in TEXTS:
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert b"".join(al.token_bytes(i) for i in ids) == text.encode("utf-8")
        assert al.decode(ids) == tokenizer.decode(ids)


def test_special_tokens_have_no_bytes_by_default(qwen_tokenizer):
    al = TokenAligner(qwen_tokenizer)
    end = qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")
    think = qwen_tokenizer.convert_tokens_to_ids("<think>")  # added but not special: keeps its text
    assert al.token_bytes(end) == b"" and al.token_bytes(think) == b"<think>"
    assert TokenAligner(qwen_tokenizer, special_tokens="text").token_bytes(end) == b"<|im_end|>"
    ids = qwen_tokenizer.encode("最佳<think>好", add_special_tokens=False) + [end]
    assert al.decode(ids) == qwen_tokenizer.decode(ids, skip_special_tokens=True)


def test_character_split_across_tokens_maps_to_every_token():
    # 最 = e6 9c 80, 佳 = e4 bd b3: tokens cut through both characters
    al = TokenAligner.from_token_bytes([b"\xe6", b"\x9c\x80\xe4", b"\xbd", b"\xb3x", b"y", b""])
    bl = Blacklist(["最佳"])
    (mask,) = bl.token_mask([[4, 0, 1, 2, 3, 5, 4]], al)
    assert mask.tolist() == [False, True, True, True, True, False, False]


@pytest.mark.parametrize("normalize", [True, False])
def test_blacklist_token_mask_equals_reference(tokenizer, normalize):
    al = TokenAligner(tokenizer)
    bl = Blacklist(PATTERNS, exemptions=["最佳方法"], normalize=normalize)
    batch = [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
    rng = random.Random(0)
    vocab = len(tokenizer)
    batch += [[rng.randrange(vocab) for _ in range(rng.randint(0, 40))] for _ in range(30)]  # invalid UTF-8 too
    batch += [ids[1:-1] for ids in batch[:20]]  # sequences cut mid-character
    masks = bl.token_mask(batch, al)
    for ids, m in zip(batch, masks):
        assert m.dtype == np.bool_ and len(m) == len(ids)
        assert m.tolist() == reference_token_mask(ids, al.token_bytes, PATTERNS, ["最佳方法"], normalize)
    assert any(m.any() for m in masks)
    assert [m.tolist() for m in bl.token_mask(batch, al, num_threads=1)] == [m.tolist() for m in masks]


def test_token_mask_accepts_arrays_tuples_and_tensors(qwen_tokenizer):
    import torch

    al = TokenAligner(qwen_tokenizer)
    bl = Blacklist(["最佳"])
    ids = qwen_tokenizer.encode("这是最佳产品", add_special_tokens=False)
    expected = bl.token_mask([ids], al)[0].tolist()
    for form in (np.array(ids, dtype=np.int32), tuple(ids), torch.tensor(ids), np.array(ids, dtype=np.uint64)):
        assert bl.token_mask([form], al)[0].tolist() == expected
    padded = np.array([ids, ids])
    assert [m.tolist() for m in bl.token_mask(padded, al)] == [expected, expected]


def test_token_mask_bad_input_is_named(qwen_tokenizer):
    al = TokenAligner(qwen_tokenizer)
    bl = Blacklist(["最佳"])
    with pytest.raises(ValueError, match=r"token id 999999 at position 1 of sequence 1 is not in the aligner's vocabulary"):
        bl.token_mask([[1, 2], [3, 999999]], al)
    with pytest.raises(ValueError, match="token id -1 at position 0 of sequence 0"):
        bl.token_mask([[-1]], al)
    with pytest.raises(TypeError, match=r"batch_token_ids\[0\]\[1\] must be an int token id, got float"):
        bl.token_mask([[1, 2.5]], al)
    with pytest.raises(TypeError, match=r"batch_token_ids\[0\] must be a sequence of int token ids, got str"):
        bl.token_mask(["最佳"], al)
    with pytest.raises(TypeError, match=r"batch_token_ids\[0\] must be a 1-D integer array"):
        bl.token_mask([np.array([1.0, 2.0])], al)
    with pytest.raises(TypeError, match="aligner must be a relate_fast.matcher.TokenAligner"):
        bl.token_mask([[1]], qwen_tokenizer)
    with pytest.raises(TypeError, match="tokenizer must be a Hugging Face tokenizer"):
        TokenAligner(object())
    with pytest.raises(ValueError, match="not in the vocabulary"):
        al.token_bytes(10**7)


def test_aligner_pickles(small_bpe):
    al = TokenAligner(small_bpe)
    again = pickle.loads(pickle.dumps(al))
    assert all(again.token_bytes(i) == al.token_bytes(i) for i in range(al.vocab_size))


def test_char_ngrams_map_to_tokens_like_blacklist_hits(qwen_tokenizer):
    al = TokenAligner(qwen_tokenizer)
    texts = ["全网最低价格，全网最低价格", "全网最低", "价格实惠"]
    counter = NgramCounter(2, 4, unit="char", count="occurrences")
    counter.update(texts)
    assert counter.count("全网最低") == 3 and counter.count("价格") == 3
    frequent = counter.frequent(3)
    assert "全网最低" in frequent and "价格" in frequent
    batch = [qwen_tokenizer.encode(t, add_special_tokens=False) for t in texts]
    masks = counter.token_mask(batch, al, 3)
    # the same result as a blacklist of the frequent character n-grams (exact matching)
    expected = Blacklist(frequent, normalize=False).token_mask(batch, al)
    assert [m.tolist() for m in masks] == [m.tolist() for m in expected]


def test_token_rewards_compose_and_pad(qwen_tokenizer):
    import torch

    al = TokenAligner(qwen_tokenizer)
    bl = Blacklist(["最佳"])
    batch = [qwen_tokenizer.encode(t, add_special_tokens=False) for t in ["最佳好物 好物推荐", "好物推荐", "x"]]
    counter = NgramCounter(2, 3)
    counter.update(batch)
    r = token_rewards(batch, blacklist=bl, aligner=al, ngram_counter=counter, min_count=2,
                      lambda_blacklist=0.5, lambda_ngram=0.25, pad_to=12)
    assert r.dtype == np.float32 and r.shape == (3, 12)
    blm = bl.token_mask(batch, al)
    ngm = counter.mask(batch, 2)
    for i, ids in enumerate(batch):
        exp = -0.5 * blm[i].astype(np.float32) - 0.25 * ngm[i].astype(np.float32)
        assert np.array_equal(r[i, :len(ids)], exp) and not r[i, len(ids):].any()
    assert blm[0].any() and ngm[0].any() and ngm[1].any()
    t = torch.from_numpy(r)
    t[0, 0] = 42.0
    assert r[0, 0] == 42.0  # zero-copy
    with pytest.raises(ValueError, match="pad_to=2 is shorter"):
        token_rewards(batch, blacklist=bl, aligner=al, pad_to=2)
    with pytest.raises(ValueError, match="needs min_count"):
        token_rewards(batch, ngram_counter=counter)
    with pytest.raises(ValueError, match="through an aligner"):
        token_rewards(batch, blacklist=bl)


def test_token_rewards_leave_the_final_eos_and_excluded_tokens_unflagged():
    """r_tok's n-gram part as the trainer makes it: a trailing EOS (in every response, so in a frequent
    n-gram) is unflagged with stop_ids, and excluded tokens are never flagged; the same builders make
    the trainer's diversity_token masks (tests/test_rewards.py runs those)."""
    eos = 9
    batch = [[1, 2, 3, 7, eos], [4, 2, 3, 7, eos], [5, 6, 7, eos]]
    counter = NgramCounter(2, 3, count="responses")
    counter.update(batch)
    plain = token_rewards(batch, ngram_counter=counter, min_count=3, lambda_ngram=0.5)
    assert plain[0, 4] == plain[1, 4] == plain[2, 3] == -0.5  # "7 eos" is in all three: eos flagged
    stopped = token_rewards(batch, ngram_counter=counter, min_count=2, lambda_ngram=0.5, stop_ids=[eos])
    assert stopped[0, 4] == 0 and stopped[1, 4] == 0 and stopped[2, 3] == 0
    assert (stopped[0, 1:4] == -0.5).all() and (stopped[1, 1:4] == -0.5).all()  # "2 3 7" twice: flagged
    no_threes = token_rewards(batch, ngram_counter=counter, min_count=2, lambda_ngram=0.5, stop_ids=[eos],
                              exclude=lambda ids: np.asarray(ids) == 3)
    assert no_threes[0, 2] == 0 and no_threes[0, 1] == -0.5 and no_threes[0, 3] == -0.5


def test_decode_equals_decoding_the_concatenated_bytes(tokenizer):
    """The native decode (precomputed code points for whole-character tokens, byte decoding for
    the rest) must equal decoding the concatenation with one U+FFFD per invalid byte."""
    al = TokenAligner(tokenizer)
    rng = random.Random(11)
    seqs = [tokenizer.encode(t, add_special_tokens=False) for t in TEXTS]
    seqs += [[rng.randrange(len(tokenizer)) for _ in range(rng.randint(0, 60))] for _ in range(200)]
    seqs += [s[1:] for s in seqs[:40]] + [s[:-1] for s in seqs[:40]]
    for ids in seqs:
        cps, cp_byte, tok_byte = al._table.decode(ids)
        data = b"".join(al.token_bytes(i) for i in ids)
        raw = data.decode("utf-8", "surrogateescape")
        expected = [0xFFFD if 0xDC80 <= ord(c) <= 0xDCFF else ord(c) for c in raw]
        assert cps.tolist() == expected
        lengths = [1 if 0xDC80 <= ord(c) <= 0xDCFF else len(c.encode("utf-8")) for c in raw]
        assert cp_byte.tolist() == list(np.cumsum([0] + lengths))
        assert tok_byte.tolist() == list(np.cumsum([0] + [len(al.token_bytes(i)) for i in ids]))


def test_aligner_accepts_a_raw_tokenizers_object(small_bpe):
    raw = small_bpe.backend_tokenizer  # tokenizers.Tokenizer, not a transformers tokenizer
    al, ref = TokenAligner(raw), TokenAligner(small_bpe)
    assert al.kind == "byte_level"
    assert all(al.token_bytes(i) == ref.token_bytes(i) for i in range(ref.vocab_size))


def test_aligner_vocab_size_pads_with_empty_tokens(qwen_tokenizer):
    """Qwen3's embedding has 151,936 rows for 151,669 tokens: a sampled padding id decodes to nothing."""
    import pytest

    from relate_fast.matcher import Blacklist, TokenAligner

    al = TokenAligner(qwen_tokenizer, vocab_size=151_936)
    ids = qwen_tokenizer.encode("最佳选择", add_special_tokens=False)
    assert al.token_bytes(151_900) == b""
    masks = Blacklist(["最佳"]).token_mask([ids + [151_900]], al)
    assert masks[0][-1] == False and masks[0][:-1].any()  # noqa: E712
    with pytest.raises(ValueError, match="not in the aligner's vocabulary"):
        Blacklist(["最佳"]).token_mask([ids + [151_900]], TokenAligner(qwen_tokenizer))
    with pytest.raises(ValueError, match="smaller than the tokenizer"):
        TokenAligner(qwen_tokenizer, vocab_size=10)
