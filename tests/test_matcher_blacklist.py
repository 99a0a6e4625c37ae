import multiprocessing as mp
import pickle
import random

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from relate_fast.matcher import Blacklist
from tests.textgen import SCRIPTS, brute_find, random_text


def sample_patterns(rng, texts, k, alphabet):
    pats = []
    for _ in range(k):
        if rng.random() < 0.7 and texts:
            t = rng.choice(texts)
            if len(t) >= 2:
                i = rng.randrange(len(t) - 1)
                pats.append(t[i:i + rng.randint(1, min(6, len(t) - i))])
                continue
        pats.append(random_text(rng, rng.randint(1, 4), alphabet))
    return pats


@pytest.mark.parametrize("script", sorted(SCRIPTS))
@pytest.mark.parametrize("normalize", [False, True])
def test_find_equals_brute_force(script, normalize):
    rng = random.Random(f"{script}-{normalize}")  # str seeds are stable across processes
    alphabet = SCRIPTS[script]
    texts = [random_text(rng, rng.randint(0, 120), alphabet) for _ in range(40)]
    patterns = sample_patterns(rng, texts, 60, alphabet)
    if normalize:  # a pattern of only separators is rejected (tested elsewhere); keep those out
        patterns = [p for p in patterns if _has_content(p)]
    exemptions = sample_patterns(rng, texts, 5, alphabet)
    exemptions = [p for p in exemptions if not normalize or _has_content(p)]
    bl = Blacklist(patterns, exemptions=exemptions, normalize=normalize)
    for t in texts:
        assert bl.find(t) == brute_find(t, patterns, exemptions, normalize)


def _has_content(p, folds=("compat", "han", "confusables")):
    from tests.textgen import is_skip, ref_fold
    return any(not is_skip(f) for c in p for f in ref_fold(c, folds))


@pytest.mark.parametrize("folds", [(), ("compat",), ("han",), ("confusables",), ("compat", "han", "confusables")])
def test_each_fold_alone_equals_brute_force(folds):
    rng = random.Random(f"folds-{folds}")
    alphabet = SCRIPTS["mixed"]
    texts = [random_text(rng, rng.randint(0, 120), alphabet) for _ in range(40)]
    patterns = [p for p in sample_patterns(rng, texts, 60, alphabet) if _has_content(p, folds)]
    exemptions = [p for p in sample_patterns(rng, texts, 5, alphabet) if _has_content(p, folds)]
    bl = Blacklist(patterns, exemptions=exemptions, folds=folds)
    assert bl.folds == folds
    for t in texts:
        assert bl.find(t) == brute_find(t, patterns, exemptions, True, folds)


def test_hits_are_offsets_into_original_text_for_every_str_kind():
    bl = Blacklist(["ab", "最佳", "😀x"], normalize=False)
    for text, expected in [
        ("xxab", [(2, 4, 0)]),                    # 1-byte kind
        ("é最佳ab", [(1, 3, 1), (3, 5, 0)]),     # 2-byte kind
        ("😀最佳😀x", [(1, 3, 1), (3, 5, 2)]),    # 4-byte kind
    ]:
        assert bl.find(text) == expected


@pytest.mark.parametrize("text", ["最*佳", "最 佳", "最\u200b佳", "最\u200d\ufeff佳", "最　佳", "最★佳", "最\n佳"])
def test_normalisation_steps_over_inserted_separators(text):
    bl = Blacklist(["最佳"])
    assert bl.find(text) == [(0, len(text), 0)]
    assert Blacklist(["最佳"], normalize=False).find(text) == []


def test_normalisation_folds_width_and_case():
    bl = Blacklist(["guaranteed cure", "No.1"])
    text = "A ＧＵＡＲＡＮＴＥＥＤ Cure, no 1"
    assert [(text[s:e], p) for s, e, p in bl.find(text)] == [("ＧＵＡＲＡＮＴＥＥＤ Cure", 0), ("no 1", 1)]


def test_exemptions_suppress_covered_hits_only():
    bl = Blacklist(["最佳", "第一"], exemptions=["最佳方法", "第一次"])
    assert bl.find("这是最佳方法") == []
    assert bl.find("最佳产品，第一次购买，全网第一") == [(13, 15, 1), (0, 2, 0)][::-1]
    assert bl.find("最 佳 方 法") == []  # exemptions normalise the same way


def test_overlapping_and_duplicate_patterns_all_reported():
    bl = Blacklist(["aa", "aaa", "a", "aa"], normalize=False)
    assert bl.find("aaa") == brute_find("aaa", ["aa", "aaa", "a", "aa"])
    assert len(bl.find("aaa")) == 3 + 2 * 2 + 1


def test_surrogates_and_astral_characters():
    pats = ["\ud800x", "😀", "𝐀"]
    bl = Blacklist(pats, normalize=False)
    text = "a\ud800x😀𝐀\udfff"
    assert bl.find(text) == brute_find(text, pats)


@pytest.mark.parametrize("normalize", [False, True])
def test_find_batch_threads_equal_single_thread(normalize):
    rng = random.Random(7)
    texts = [random_text(rng, rng.randint(0, 300), SCRIPTS["mixed"]) for _ in range(500)]
    bl = Blacklist(sample_patterns(rng, texts, 300, SCRIPTS["zh"]), normalize=normalize) if not normalize else \
        Blacklist([p for p in sample_patterns(rng, texts, 300, SCRIPTS["zh"]) if _has_content(p)])
    single = [bl.find(t) for t in texts]
    assert bl.find_batch(texts, num_threads=1) == single
    assert bl.find_batch(texts, num_threads=2) == single
    assert bl.find_batch(texts) == single
    assert bl.find_batch(tuple(texts[:3]), num_threads=2) == single[:3]
    assert bl.find_batch([]) == []


def _child_find_batch(data, texts, q):
    bl = pickle.loads(data)
    q.put(bl.find_batch(texts, num_threads=2))


def test_thread_pool_survives_fork_and_pickle_into_worker():
    bl = Blacklist(["最佳", "第一"])
    texts = ["最佳第一"] * 100
    expected = bl.find_batch(texts, num_threads=2)  # the parent's pool now has live threads
    ctx = mp.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_find_batch, args=(pickle.dumps(bl), texts, q))
    p.start()
    got = q.get(timeout=60)
    p.join(timeout=60)
    assert got == expected and p.exitcode == 0


def test_save_load_and_pickle_roundtrip(tmp_path):
    bl = Blacklist(["最佳", "ＡＢ", "x\u200by"], exemptions=["最佳方法"], categories=["a", "b", "c"])
    path = tmp_path / "list.rfbl"
    bl.save(path)
    again = Blacklist.load(path)
    text = "最佳方法 最佳 ab x y"
    assert again.find(text) == bl.find(text) and again.find(text)
    assert again.patterns == bl.patterns and again.exemptions == bl.exemptions
    p = pickle.loads(pickle.dumps(bl))
    assert p.find(text) == bl.find(text) and p.categories == ("a", "b", "c")


def test_corrupt_file_is_a_clear_error(tmp_path):
    data = bytearray(Blacklist(["最佳", "第一"]).to_bytes())
    path = tmp_path / "bad.rfbl"
    for broken in (bytes(data[:-9]), bytes(data[:40]), b"garbage", bytes(data[:100]) + bytes([data[100] ^ 0xFF]) + bytes(data[101:])):
        path.write_bytes(broken)
        with pytest.raises(ValueError, match="bad.rfbl"):
            Blacklist.load(path)


def test_bad_input_is_named():
    with pytest.raises(ValueError, match=r"patterns\[1\] is an empty string"):
        Blacklist(["a", ""])
    with pytest.raises(TypeError, match=r"patterns\[1\] must be str, got int"):
        Blacklist(["a", 3])
    with pytest.raises(TypeError, match="not a single str"):
        Blacklist("最佳")
    with pytest.raises(ValueError, match=r"patterns\[0\] = '\*\*'.*no characters left"):
        Blacklist(["**"])
    assert Blacklist(["**"], normalize=False).find("a**") == [(1, 3, 0)]
    with pytest.raises(ValueError, match=r"exemptions\[0\] is an empty string"):
        Blacklist(["a"], exemptions=[""])
    with pytest.raises(TypeError, match="normalize must be bool"):
        Blacklist(["a"], normalize=1)
    bl = Blacklist(["a"])
    with pytest.raises(TypeError, match="text must be str, got bytes"):
        bl.find(b"a")
    with pytest.raises(TypeError, match=r"texts\[1\] must be str, got NoneType"):
        bl.find_batch(["a", None])
    with pytest.raises(ValueError, match="num_threads"):
        bl.find_batch(["a"], num_threads=-1)


def test_large_chinese_list_matches_brute_force():
    rng = random.Random(3)
    common = "的一是不了人我在有他这中大来上个国到说们为子和你地出道也时年得就那要下以生会自着去之过家学对可"
    pats = list({random_text(rng, rng.randint(2, 6), common) for _ in range(20000)})
    bl = Blacklist(pats, normalize=False)
    for _ in range(5):
        t = random_text(rng, 200, common)
        assert bl.find(t) == brute_find(t, pats)


def test_default_list_loads_and_flags_known_terms():
    bl = Blacklist.default()
    assert len(bl) > 150 and len(bl.exemptions) > 10
    hits = {bl.patterns[p] for _, _, p in bl.find("全网最★佳，１００％有效，保本稳赚，GUARANTEED CURE")}
    assert {"最佳", "100%有效", "保本", "稳赚", "guaranteed cure"} <= hits
    assert bl.find("最佳食用方法：第一次使用前请阅读说明") == []


def test_list_file_errors_name_file_and_line(tmp_path):
    p = tmp_path / "list.tsv"
    p.write_text("# comment\nblock\t最佳\tabsolute\nexempt\t最佳方法\nfoo\tbar\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"list.tsv:4: first column must be 'block' or 'exempt'"):
        Blacklist.from_file(p)
    p.write_text("最佳\nblock\t\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"list.tsv:2: empty pattern"):
        Blacklist.from_file(p)
    p.write_text("最佳\n第一\nexempt\t第一次\n", encoding="utf-8")
    bl = Blacklist.from_file(p)
    assert bl.patterns == ("最佳", "第一") and bl.exemptions == ("第一次",)


# ---------------------------------------------------------------- fuzzing (hypothesis)

any_char = st.characters(min_codepoint=0, max_codepoint=0x10FFFF, exclude_categories=())
small_char = st.sampled_from("ab最佳😀\ud800Ａ \u200b*é")
fuzz_text = st.text(alphabet=st.one_of(any_char, small_char), max_size=60)
fuzz_pattern = st.text(alphabet=st.one_of(small_char, any_char), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns=st.lists(fuzz_pattern, min_size=1, max_size=8), text=fuzz_text,
       exemptions=st.lists(fuzz_pattern, max_size=2))
def test_fuzz_exact_matching_equals_brute_force(patterns, text, exemptions):
    bl = Blacklist(patterns, exemptions=exemptions, normalize=False)
    assert bl.find(text) == brute_find(text, patterns, exemptions)
    assert pickle.loads(pickle.dumps(bl)).find(text) == bl.find(text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(patterns=st.lists(fuzz_pattern, min_size=1, max_size=8), text=fuzz_text)
# one character that folds to several ('½' -> '1⁄2'): its hits share one span and still come in pattern order
@example(patterns=["2", "1"], text="½")
def test_fuzz_normalised_matching_equals_reference(patterns, text):
    patterns = [p for p in patterns if _has_content(p)]
    if not patterns:
        with pytest.raises(ValueError):
            Blacklist(["*"])
        return
    bl = Blacklist(patterns)
    assert bl.find(text) == brute_find(text, patterns, normalize=True)


# Hand-picked edge cases next to the fuzzers (the fuzzers found no failure while this suite was
# written; add any case they find here, so it is checked on every run).
@pytest.mark.parametrize("patterns,text,normalize", [
    (["\ud800"], "\ud800\ud800", False),
    (["ß"], "SS ß ẞ", True),          # multi-character folds are not applied (1:1 offsets)
    (["İ"], "i̇ İ", True),
    (["a"], "\x00a\U0010ffff", True),
])
def test_fuzz_regressions(patterns, text, normalize):
    assert Blacklist(patterns, normalize=normalize).find(text) == brute_find(text, patterns, normalize=normalize)


# Issue 17: what a policy under RL pressure writes to get past the list, per evasion class
EVASIONS = {
    "compat": ["the 𝐁𝐄𝐒𝐓 price", "the ⓑⓔⓢⓣ price", "𝟏𝟎𝟎%有效", "the ᵇᵉˢᵗ price", "100% eﬀective"],
    "han": ["國家級", "絕對有效", "頂級", "保證有效", "無副作用"],
    "confusables": ["the bеst price", "guarantееd results", "100% еffective", "the bеѕt price"],
}
# ordinary text that must stay clean under every fold: traditional-script ads (with the one-to-many
# characters 發/髮 and 乾/幹), Russian and Greek text, and an exempt phrase in traditional script
CONTROLS = ["頭髮護理，乾淨清爽，當日發貨", "幹線物流，服務周到", "乾坤大挪移課程", "Лучшая цена в городе",
            "Ελληνικά μαθήματα για αρχάριους", "最佳食用方法：開封後冷藏", "最佳食用方法"]


@pytest.mark.parametrize("kind", sorted(EVASIONS))
def test_the_default_list_catches_each_evasion_class_only_with_its_fold(kind):
    every = Blacklist.default()
    without = Blacklist.default(folds=tuple(f for f in ("compat", "han", "confusables") if f != kind))
    raw = every.raw()
    for text in EVASIONS[kind]:
        hits = every.find(text)
        assert hits, text
        assert not without.find(text) and not raw.find(text), text  # the fold is what catches it
        for s, e, _ in hits:  # offsets into the original text, which holds the evasive characters
            assert 0 <= s < e <= len(text)


def test_folds_make_no_false_hits_and_keep_exemptions():
    bl = Blacklist.default()
    for text in CONTROLS:
        assert bl.find(text) == [], (text, [bl.patterns[i] for *_, i in bl.find(text)])
    # an exemption written in simplified still covers the traditional spelling of its pattern
    ex = Blacklist(["最佳"], exemptions=["最佳方法"])
    assert ex.find("最佳方法") == [] and ex.find("最佳") == [(0, 2, 0)]
    trad = Blacklist(["國家級"], exemptions=["國家級公園"])
    assert trad.find("国家级公园") == [] and trad.find("国家级") == [(0, 3, 0)] and trad.find("國家級") == [(0, 3, 0)]


def test_normalize_false_is_still_exact_and_folds_survive_saving(tmp_path):
    exact = Blacklist(["best", "国家级"], normalize=False)
    assert exact.folds == () and exact.find("bеst 國家級 BEST") == [] and exact.find("best") == [(0, 4, 0)]
    bl = Blacklist(["best"], folds=("confusables",))
    bl.save(tmp_path / "bl.bin")
    back = Blacklist.load(tmp_path / "bl.bin")
    assert back.folds == ("confusables",) and back.find("bеst") == [(0, 4, 0)] and not back.find("𝐛𝐞𝐬𝐭")
    assert pickle.loads(pickle.dumps(bl)).folds == ("confusables",)
    with pytest.raises(ValueError, match="unknown fold 'latin'"):
        Blacklist(["x"], folds=("latin",))
    with pytest.raises(TypeError, match="not a str"):
        Blacklist(["x"], folds="han")
