"""Reward components on hand-written cases, the combiner's arithmetic, the presets of Table 2, and
the boundary behaviour (NaN names the component, empty text, equal-reward groups)."""
import numpy as np
import pytest

from relate_fast.data.ads import AdPrompt, format_ad
from relate_fast.matcher import Blacklist, NgramCounter, TokenAligner
from relate_fast.rewards import (COMPONENTS, PRESETS, ComponentSpec, RewardConfig, RewardContext, RewardFunction,
                                 RolloutBatch, register_component)
from relate_fast.rewards.combine import NgramWindow
from relate_fast.rewards.components import format_violations
from relate_fast.rewards.embedding import HashedNgramEncoder, SentenceEncoder
from tests.textgen import brute_ngram_occurrences
from relate_fast.rewards.judge import LLMJudge, parse_judge_score

ZH = AdPrompt(id="z", lang="zh", industry="education", query="杭州雅思培训哪家好", bidword="雅思培训",
              selling_points=("小班教学", "免费试听"), facts=("课程价格2980元", "共8周课程", "每班不超过6人"))
EN = AdPrompt(id="e", lang="en", industry="education", query="ielts course in london", bidword="ielts course",
              selling_points=("small classes", "free trial lesson"), facts=("course fee $290", "8 weeks of lessons"))

GOOD_ZH = format_ad("雅思冲刺班｜小班教学", "免费试听，课程价格2980元，共8周。立即咨询。", "zh")
GOOD_EN = format_ad("IELTS prep course in London", "Small classes and a free trial lesson. Course fee $290 for 8 "
                    "weeks of lessons. Book now.", "en")


def run(name, rows, texts, ctx=None, token_ids=None, **params):
    batch = RolloutBatch(rows, texts, token_ids)
    return COMPONENTS[name].fn(batch, ctx or RewardContext(), **params)


def test_length():
    texts = [GOOD_ZH, format_ad("雅思", "试听", "zh"), "", GOOD_EN, "x" * 400]
    r = run("length", [ZH, ZH, ZH, EN, EN], texts, unit="chars")
    assert r[0] == 1.0 and r[3] == 1.0
    assert r[1] == pytest.approx(1 - 2 * (20 - 4) / 40)  # 4 characters, 16 short of 20 in a 40-wide interval
    assert r[2] == -1.0 and r[4] == -1.0
    # the default unit: the response's tokens, Qwen3 intervals [20, 50] in both languages
    ids = [[1] * 35, [1] * 5, [], [1] * 50, [1] * 140]
    r = run("length", [ZH, ZH, ZH, EN, EN], texts, token_ids=ids)
    assert r[0] == 1.0 and r[3] == 1.0
    assert r[1] == pytest.approx(1 - 2 * (20 - 5) / 30)  # 5 tokens, 15 short of 20 in a 30-wide interval
    assert r[2] == -1.0 and r[4] == -1.0
    assert run("length", [EN], ["x"], token_ids=[[1] * 10], target={"en": [5, 15]}).tolist() == [1.0]
    with pytest.raises(ValueError, match="needs the batch's token ids"):
        run("length", [EN], [GOOD_EN])
    with pytest.raises(ValueError, match="length.unit"):
        run("length", [EN], [GOOD_EN], unit="words")


def test_format():
    assert run("format", [ZH, EN], [GOOD_ZH, GOOD_EN]).tolist() == [1.0, 1.0]
    cases = {
        "雅思冲刺班 小班教学": -1.0,  # no labels
        format_ad("雅思冲刺班" * 8, "免费试听。", "zh"): 0.5,  # title too long
        format_ad("雅思冲刺班🔥", "免费试听！！", "zh"): 0.5,  # forbidden characters (one rule)
        format_ad("雅思冲刺班。", "", "zh"): 0.0,  # ends with punctuation + empty description
    }
    got = run("format", [ZH] * len(cases), list(cases))
    assert got.tolist() == list(cases.values()), [format_violations(t, "zh") for t in cases]


def test_correctness_rule():
    texts = [GOOD_ZH, format_ad("雅思", "课程价格2980元，共9周", "zh"), format_ad("雅思", "小班教学", "zh"),
             format_ad("雅思", "价格3,980元", "zh")]
    assert run("correctness", [ZH] * 4, texts).tolist() == [1.0, 0.0, 1.0, -1.0]
    assert run("correctness", [ZH], [texts[2]], empty_score=0.25).tolist() == [0.25]


def test_risk_sentence_and_token(small_bpe):
    bl = Blacklist.default()
    al = TokenAligner(small_bpe)
    texts = [GOOD_ZH, format_ad("全网最低价雅思", "保证通过，考试必过", "zh"), format_ad("雅思", "最佳方法：先试听", "zh")]
    ids = [small_bpe.encode(t) for t in texts]
    ctx = RewardContext(blacklist=bl, aligner=al)
    assert run("risk", [ZH] * 3, texts, ctx).tolist() == [0.0, -3.0, 0.0]  # 最低价, 全网... capped at 3; exemption
    assert run("risk", [ZH] * 3, texts, ctx, cap=10)[1] == -len(bl.find(texts[1]))
    tok = run("risk_token", [ZH] * 3, texts, RewardContext(blacklist=bl, aligner=al), token_ids=ids, lam=2.0)
    assert [len(t) for t in tok] == [len(i) for i in ids]
    assert not tok[0].any() and not tok[2].any()
    flagged = np.flatnonzero(tok[1])
    assert set(np.unique(tok[1])) == {0.0, -2.0}
    # flagged tokens are exactly those whose bytes overlap a hit (brute force over byte ranges)
    text = texts[1]
    hit_bytes = set()
    for s, e, _ in bl.find(text):
        b0 = len(text[:s].encode()); b1 = len(text[:e].encode())
        hit_bytes |= set(range(b0, b1))
    pos, expect = 0, []
    for k, t in enumerate(ids[1]):
        n = len(al.token_bytes(t))
        if hit_bytes & set(range(pos, pos + n)):
            expect.append(k)
        pos += n
    assert flagged.tolist() == expect


def test_diversity_sentence_and_token():
    counter = NgramCounter(2, 4, count="responses", window=2)
    window = NgramWindow(counter, min_count=3)
    rows = [EN] * 4
    # token ids: the phrase (7, 8, 9) repeats in three responses; response 3 repeats it twice
    ids = [[1, 7, 8, 9, 2], [7, 8, 9, 3, 4], [5, 6, 10, 11, 12], [7, 8, 9, 0, 7, 8, 9]]
    batch = RolloutBatch(rows, ["a"] * 4, ids)
    window.update(batch)
    ctx = RewardContext(ngrams=window)
    # eq. 4: every frequent n-gram occurrence: (7,8), (8,9), (7,8,9) = 3 per copy of the phrase
    sent = COMPONENTS["diversity"].fn(batch, ctx, delta=0.25)
    assert sent.tolist() == [-0.75, -0.75, 0.0, -1.5]
    assert COMPONENTS["diversity"].fn(batch, ctx, delta=0.25, cap=4).tolist() == [-0.75, -0.75, 0.0, -1.0]
    # the option: one Δd per repeated phrase (maximal covered run)
    phrases = COMPONENTS["diversity"].fn(batch, ctx, delta=0.25, count="phrases")
    assert phrases.tolist() == [-0.25, -0.25, 0.0, -0.5]
    with pytest.raises(ValueError, match="diversity.count"):
        COMPONENTS["diversity"].fn(batch, ctx, count="tokens")
    tok = COMPONENTS["diversity_token"].fn(batch, ctx, lam=0.5)
    assert tok[0].tolist() == [0, -0.5, -0.5, -0.5, 0]
    assert tok[3].tolist() == [-0.5, -0.5, -0.5, 0, -0.5, -0.5, -0.5]
    assert not tok[2].any()


def test_diversity_counts_no_ngram_across_a_template_label():
    # character n-grams of texts: the labels ("Title: ", "Description: ") are in every ad by design
    counter = NgramCounter(2, 3, count="responses", window=1, unit="char")
    window = NgramWindow(counter, min_count=2)
    texts = [format_ad("xyz", "xyq", "en"), format_ad("xyz", "pqr", "en"), format_ad("abc", "def", "en")]
    batch = RolloutBatch([EN] * 3, texts, None)
    window.update(batch)
    occ = RewardContext(ngrams=window).ngram_occurrences(batch)
    # frequent and label-free: "xy", "yz", "xyz" in ads 0 and 1, plus "xy" again in ad 0's description;
    # the labels' own n-grams, and those reaching into a label (e.g. "z\n"), do not count
    assert occ.tolist() == [4, 3, 0]


def test_relevance_minilm_and_hashed():
    texts = [GOOD_EN, format_ad("Fresh sushi buffet", "Serves 4. Order online.", "en")]
    for enc in (SentenceEncoder("minilm"), HashedNgramEncoder()):
        r = run("relevance", [EN, EN, EN], texts + [""], RewardContext(encoder=enc))
        assert r[0] > r[1] + 0.1, (enc.name, r)
        assert r[2] == 0.0  # empty ad


def test_judge_parser_and_scores():
    cases = {"Score: 4": 4, "评分：5": 5, '{"score": 3}': 3, "I'd rate it 2/5.": 2, "4 out of 5": 4, "rating=3.5": 3.5,
             "2": 2, "Score: 9": None, "no idea": None, "between 2 and 4": None, "评分: 1（严重错误）": 1}
    for text, want in cases.items():
        assert parse_judge_score(text) == want, text
    replies = iter([["Score: 5", "Score: 1", "garbled"]])
    judge = LLMJudge(lambda prompts: next(replies), fallback=0.5)  # a scripted judge: tests the plumbing only
    got = run("correctness_judge", [EN] * 3, [GOOD_EN, "Title: x\nDescription: $999", "Title: y\nDescription: z"],
              RewardContext(judge=judge))
    assert got.tolist() == [1.0, 0.0, 0.5] and judge.unparsed == 1
    # relevance: the query and bidword go to the judge, not the landing-page facts
    asked = []
    judge = LLMJudge(lambda prompts: asked.extend(prompts) or ["Score: 3"] * len(prompts))
    assert run("relevance_judge", [EN, ZH], [GOOD_EN, GOOD_EN], RewardContext(judge=judge)).tolist() == [0.5, 0.5]
    assert EN.query in asked[0] and EN.bidword in asked[0] and EN.facts[0] not in asked[0]
    assert ZH.query in asked[1] and "相关" in asked[1]


def test_a_judge_model_takes_over_the_judged_components():
    cfg = RewardConfig(preset="model4", judge_model="/j", judge_relevance=True, weights={"correctness": 2.0})
    specs = {s.name: s for s in cfg.component_specs()}
    assert specs["correctness_judge"].weight == 2.0 and "relevance_judge" in specs
    assert specs["correctness"].weight == 0.0 and specs["relevance"].weight == 0.0  # monitors
    assert "correctness_judge" not in {s.name for s in RewardConfig(preset="model4").component_specs()}
    with pytest.raises(ValueError, match="set reward.judge_model"):
        RewardFunction.from_config(cfg, encoder=HashedNgramEncoder(), ctcvr=_ConstantCTCVR())


def test_presets_are_table_2():
    def names(preset):
        return {(s.name, COMPONENTS[s.name].granularity) for s in PRESETS[preset]}
    structure = {("length", "sentence"), ("format", "sentence")}
    assert names("model1") == structure
    assert names("model2") == structure | {("ctcvr", "sentence")}
    assert names("model3") == names("model2") | {("diversity", "sentence")}
    assert names("model4") == names("model3") | {("relevance", "sentence"), ("correctness", "sentence"),
                                                 ("risk", "sentence")}
    assert names("relate") == (names("model4") - {("diversity", "sentence"), ("risk", "sentence")}) \
        | {("diversity_token", "token"), ("risk_token", "token")}


class _ConstantCTCVR:
    """Stands in for a trained CTCVR model in combiner tests (the real one is tested in test_ctcvr.py)."""

    def predict(self, rows, texts):
        v = np.array([0.01 * (1 + len(t) % 7) for t in texts])
        return {"ctr": v, "cvr": np.ones_like(v), "ctcvr": v}


@pytest.fixture
def relate_fn(small_bpe):
    cfg = RewardConfig(preset="relate", ngram_min_count=2)
    return RewardFunction.from_config(cfg, tokenizer=small_bpe, encoder=HashedNgramEncoder(), ctcvr=_ConstantCTCVR())


def _batch(tok, texts, rows=None, g=2):
    rows = rows or [ZH] * len(texts)
    return RolloutBatch(rows, texts, [tok.encode(t) for t in texts], group_size=g)


def test_reward_state_carries_the_ngram_window_to_a_fresh_function(relate_fn, small_bpe):
    """A resumed run's rewards equal the uninterrupted run's: the n-gram window travels in state_dict
    (a fresh function without it scores the next batch differently)."""
    cfg = RewardConfig(preset="relate", ngram_min_count=2)
    fresh = lambda: RewardFunction.from_config(cfg, tokenizer=small_bpe, encoder=HashedNgramEncoder(),  # noqa: E731
                                               ctcvr=_ConstantCTCVR())
    first = [GOOD_ZH, GOOD_ZH + "！", GOOD_ZH + "。", GOOD_ZH]
    later = [GOOD_ZH + "！！", GOOD_ZH]
    relate_fn(_batch(small_bpe, first))
    resumed = fresh()
    resumed.load_state_dict(relate_fn.state_dict())
    expect = relate_fn(_batch(small_bpe, later)).token_matrix()
    np.testing.assert_array_equal(resumed(_batch(small_bpe, later)).token_matrix(), expect)
    assert not np.array_equal(fresh()(_batch(small_bpe, later)).token_matrix(), expect)
    assert relate_fn.judge_counts() is None  # no LLM judge in this preset
    replies = iter(["Score: 1", "no idea"])
    judged = RewardFunction.from_config(RewardConfig(preset="model1", extra=[{"name": "correctness_judge"}]),
                                        judge=LLMJudge(lambda prompts: [next(replies) for _ in prompts]))
    assert judged.judge_counts() == (0, 0)
    judged(RolloutBatch([EN] * 2, [GOOD_EN, GOOD_EN], [[1], [2]], group_size=2))
    assert judged.judge_counts() == (2, 1)


def test_combiner_arithmetic(relate_fn, small_bpe):
    texts = [GOOD_ZH, format_ad("全网最低价雅思", "保证通过", "zh"), GOOD_ZH + "！", ""]
    out = relate_fn(_batch(small_bpe, texts))
    c = out.components
    expect = (c["length"] + c["format"] + c["correctness"]
              + (c["ctcvr"] - c["ctcvr"].mean()) / (c["ctcvr"].std(ddof=1) + 1e-6)
              + (c["relevance"] - c["relevance"].mean()) / (c["relevance"].std(ddof=1) + 1e-6))
    np.testing.assert_allclose(out.sentence, expect)
    assert set(c) == {"length", "format", "ctcvr", "relevance", "correctness", "diversity_token", "risk_token",
                      "risk", "diversity"}  # the last two: weight-0 monitors (not in r_i, checked above)
    m = out.token_matrix()
    assert m.shape == (4, max(len(small_bpe.encode(t)) for t in texts)) and m.dtype == np.float32
    assert (m[1] <= -1).any() and out.compliant.tolist() == [True, False, True, True]
    assert np.all(np.isfinite(out.sentence)) and out.sentence[3] < out.sentence[0]  # empty text: defined, low
    assert out.metrics()["reward/compliance_rate"] == 0.75
    assert out.evasive.tolist() == [False] * 4 and out.metrics()["compliance/evasion_share"] == 0.0
    assert {"ngram_update", "compliance", "risk_token"} <= set(out.timings)
    # the evasion monitor: hits that only the normalising list finds (traditional script, a
    # Cyrillic е, a separator inside 最佳), against plain hits and clean text
    texts = [format_ad("國家級雅思", "小班", "zh"), format_ad("最*佳雅思", "小班", "zh"),
             format_ad("全网最低价雅思", "保证通过", "zh"), GOOD_ZH]
    out = relate_fn(_batch(small_bpe, texts))
    assert out.compliant.tolist() == [False, False, False, True]
    assert out.evasive.tolist() == [True, True, False, False] and out.metrics()["compliance/evasion_share"] == 0.5


def test_nan_component_is_named(small_bpe):
    name = "test_nan_component"

    @register_component(name, "sentence")
    def bad(batch, ctx):
        return np.array([0.0, np.nan])

    try:
        fn = RewardFunction([ComponentSpec(name)], RewardContext())
        with pytest.raises(FloatingPointError, match=f"'{name}'.*response 1"):
            fn(RolloutBatch([EN, EN], ["a", "b"]))
    finally:
        del COMPONENTS[name]


def test_equal_rewards_give_zero_advantages():
    import torch

    from relate_fast import group_advantages

    fn = RewardFunction.from_config(RewardConfig(preset="model1", params={"length": {"unit": "chars"}}))
    out = fn(RolloutBatch([EN] * 4, [GOOD_EN, GOOD_EN, GOOD_EN, GOOD_EN + " More."], group_size=2))
    adv = group_advantages(torch.from_numpy(out.sentence), 2)
    assert adv[:2].tolist() == [0.0, 0.0] and torch.isfinite(adv).all()


def test_config_errors(small_bpe):
    with pytest.raises(ValueError, match="unknown reward preset 'model9'"):
        RewardConfig(preset="model9").component_specs()
    with pytest.raises(ValueError, match="unknown reward component 'risk_tokn'"):
        RewardConfig(preset="model1", params={"risk_tokn": {"lam": 2}}).component_specs()
    # an override of a component the preset leaves out is ignored (one config serves every preset)
    assert "risk_token" not in {s.name for s in RewardConfig(preset="model1", monitor=False,
                                                              params={"risk_token": {"lam": 2}}).component_specs()}
    with pytest.raises(ValueError, match="unknown reward component 'lenght'"):
        ComponentSpec("lenght")
    with pytest.raises(ValueError, match="normalize must be one of"):
        ComponentSpec("length", normalize="z")
    with pytest.raises(ValueError, match="token-level components: pass the tokenizer"):
        RewardFunction.from_config(RewardConfig(preset="relate"), encoder=HashedNgramEncoder(), ctcvr=_ConstantCTCVR())
    with pytest.raises(ValueError, match="set ctcvr_model"):
        RewardFunction.from_config(RewardConfig(preset="model2"), encoder=HashedNgramEncoder())
    with pytest.raises(ValueError, match="group_size 3 must be an int >= 1 dividing the batch size 4"):
        RolloutBatch([EN] * 4, ["a"] * 4, group_size=3)
    cfg = RewardConfig(preset="model4", weights={"ctcvr": 3.0}, ngram_unit="char", params={"length": {"unit": "chars"}})
    fn = RewardFunction.from_config(cfg, encoder=HashedNgramEncoder(), ctcvr=_ConstantCTCVR())
    assert {s.name: s.weight for s in fn.specs}["ctcvr"] == 3.0
    out = fn(RolloutBatch([EN] * 2, [GOOD_EN, GOOD_EN]))  # character n-grams work without token ids
    assert out.token is None and out.components["diversity"].shape == (2,)


def test_hf_generate_judge_backend_runs(small_bpe):
    """The HF-generate judge backend end to end on a tiny random Qwen3 (its replies are noise: a
    random model gives no score, so every reply falls back; the plumbing is what is tested)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from relate_fast.rewards.judge import hf_generate_fn

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=len(small_bpe), hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=512)
    model = Qwen3ForCausalLM(cfg).eval()
    gen = hf_generate_fn(model, small_bpe, max_new_tokens=4, batch_size=2, chat=False)
    replies = gen(["Score this ad: a", "Score this ad: bb", "c"])
    assert len(replies) == 3 and all(isinstance(r, str) for r in replies)
    judge = LLMJudge(gen, fallback=0.25)
    s = judge.score([EN, EN], [GOOD_EN, GOOD_EN])
    assert s.shape == (2,) and np.all((0 <= s) & (s <= 1))


def test_diversity_never_flags_eos_or_template_labels(small_bpe):
    """Every response ends in EOS and carries the labels; penalising them would teach the policy to
    never stop and to break the format. The repeated body phrase is still flagged."""
    cfg = RewardConfig(preset="model1", extra=[{"name": "diversity_token"}], ngram_min_count=2)
    fn = RewardFunction.from_config(cfg, tokenizer=small_bpe)
    text = "Title: Learn Python fast\nDescription: small classes every week"
    other = "Title: Cheap flights\nDescription: book with us"
    ids = [small_bpe.encode(t) + [small_bpe.eos_token_id] for t in (text, text, other)]
    batch = RolloutBatch([EN] * 3, [text, text, other], ids, group_size=3)
    out = fn(batch)
    # eq. 4's count on token ids equals brute force over the label-free pieces (labels found here
    # from the tokenizer's own offsets) with the window's G_high; EOS is never part of one
    from relate_fast.data.ads import LABEL_RE

    w = fn.ctx.ngrams
    freq = set(w.counter.frequent(w.min_count))
    occ = fn.ctx.ngram_occurrences(batch)
    for t, o in zip([text, text, other], occ):
        enc = small_bpe(t, return_offsets_mapping=True)
        spans = [m.span() for m in LABEL_RE.finditer(t)]
        keep = [not any(a < e and s < b for s, e in spans) for a, b in enc["offset_mapping"]]
        pieces, cur = [], []
        for tid, k in zip(enc["input_ids"], keep):
            if k:
                cur.append(tid)
            elif cur:
                pieces, cur = pieces + [cur], []
        pieces += [cur] if cur else []
        assert o == sum(brute_ngram_occurrences(p, freq, 2, 10) for p in pieces)
    assert occ[0] == occ[1] > 3 * occ[2]
    al = TokenAligner(small_bpe)
    for k in range(3):
        flagged = b"".join(al.token_bytes(t) for t, f in zip(ids[k], out.token[k] != 0) if f).decode()
        assert out.token[k][-1] == 0  # EOS
        assert "Title" not in flagged and "Description" not in flagged, flagged
        if k < 2:
            assert "small classes every week" in flagged.replace("\n", "")


def test_group_and_batch_z_are_eq8():
    """One z-score in the library: the combiner's group_z/batch_z equal group_advantages (unbiased std)."""
    import torch

    from relate_fast.loss import group_advantages
    from relate_fast.rewards.combine import _normalize

    v = np.random.default_rng(0).normal(size=12)
    np.testing.assert_allclose(_normalize(v, "group_z", 3), group_advantages(torch.from_numpy(v), 3).numpy())
    g = v.reshape(-1, 3)
    np.testing.assert_allclose(_normalize(v, "group_z", 3),
                               ((g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-6)).reshape(-1))
    np.testing.assert_allclose(_normalize(v, "batch_z", 3), (v - v.mean()) / (v.std(ddof=1) + 1e-6))
