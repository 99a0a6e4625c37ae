"""The sample ad dataset: reproducible from its script, well-formed, compliant references, and a
loader whose errors name the file, line and field."""
import collections
import json

import pytest

from relate_fast.data import build_ads
from relate_fast.data.ads import SAMPLE_ADS, AdPrompt, ad_numbers, format_ad, load_ads, parse_ad, sample_ads
from relate_fast.matcher import Blacklist


def test_shipped_file_is_the_scripts_output():
    from importlib import resources

    shipped = (resources.files("relate_fast.data") / SAMPLE_ADS).read_text(encoding="utf-8")
    assert shipped == build_ads.dumps(build_ads.build()), \
        "sample_ads.jsonl differs from `python -m relate_fast.data.build_ads` output: rebuild it"


def test_size_languages_industries_splits():
    rows = sample_ads()
    assert len(rows) >= 1000
    assert {r.lang for r in rows} == {"zh", "en"}
    assert len({r.industry for r in rows}) >= 20
    splits = collections.Counter(r.split for r in rows)
    assert set(splits) == {"train", "validation", "test"} and splits["train"] > 0.7 * len(rows)
    # every (industry, language) pair is in every split
    pairs = {(r.industry, r.lang, r.split) for r in rows}
    for ind in {r.industry for r in rows}:
        for lang in ("zh", "en"):
            for split in ("train", "validation", "test"):
                assert (ind, lang, split) in pairs
    assert len({r.id for r in rows}) == len(rows)
    assert len(sample_ads("test")) == splits["test"]
    assert {r.lang for r in sample_ads(langs=["en"])} == {"en"}


def test_references_are_compliant_parseable_and_state_only_given_numbers():
    bl = Blacklist.default()
    for r in sample_ads():
        ref = r.reference
        assert bl.find(ref) == [], (r.id, ref)
        assert parse_ad(ref) == (r.reference_title, r.reference_description)
        stated = ad_numbers(ref)
        assert stated, r.id  # every reference states at least one fact
        assert set(stated) <= r.supported_numbers, (r.id, stated, r.facts)
        assert r.query in r.prompt and all(f in r.prompt for f in r.facts)


def test_ad_numbers_and_parse():
    assert ad_numbers("售价2,980元，共8周，3.50折") == ["2980", "8", "3.5"]
    assert ad_numbers("no numbers") == []
    assert ad_numbers("007 and 0") == ["7", "0"]
    assert parse_ad(format_ad("T", "D", "zh")) == ("T", "D")
    assert parse_ad("Title: a\nDescription: b c") == ("a", "b c")
    assert parse_ad("Title: a") is None
    assert parse_ad("标题：a\n描述：b\n多余") is None


def _write(tmp_path, rows):
    p = tmp_path / "ads.jsonl"
    p.write_text("".join((r if isinstance(r, str) else json.dumps(r, ensure_ascii=False)) + "\n" for r in rows),
                 encoding="utf-8")
    return p


GOOD = dict(id="a", lang="en", industry="x", query="q", bidword="b", selling_points=["s"], facts=["$5"])


def test_user_jsonl_round_trip(tmp_path):
    rows = [r.to_json() for r in sample_ads()[:5]] + [GOOD]
    got = load_ads(_write(tmp_path, rows))
    assert got[:5] == sample_ads()[:5]
    assert got[5] == AdPrompt(id="a", lang="en", industry="x", query="q", bidword="b", selling_points=("s",),
                              facts=("$5",))
    assert got[5].reference is None and got[5].split == "train"


@pytest.mark.parametrize("patch, field", [
    (dict(lang="fr"), "lang"),
    (dict(query=""), "query"),
    (dict(selling_points=[]), "selling_points"),
    (dict(facts="a fact"), "facts"),
    (dict(reference={"title": "t"}), "reference"),
    (dict(split="dev"), "split"),
    (dict(id=3), "id"),
])
def test_malformed_row_names_file_line_field(tmp_path, patch, field):
    p = _write(tmp_path, [GOOD, dict(GOOD, id="b"), {**GOOD, "id": "c", **patch}])
    with pytest.raises(ValueError, match=rf"ads.jsonl:3: field '{field}'"):
        load_ads(p)


def test_other_bad_files(tmp_path):
    with pytest.raises(ValueError, match=r":2: invalid JSON"):
        load_ads(_write(tmp_path, [GOOD, "{not json"]))
    with pytest.raises(ValueError, match=r":2: field 'id': duplicate id 'a' \(first on line 1\)"):
        load_ads(_write(tmp_path, [GOOD, GOOD]))
    with pytest.raises(ValueError, match=r":1: field 'bidword': missing"):
        load_ads(_write(tmp_path, [{k: v for k, v in GOOD.items() if k != "bidword"}]))
    with pytest.raises(ValueError, match=r"unknown field"):
        load_ads(_write(tmp_path, [dict(GOOD, extra=1)]))
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_ads(tmp_path / "missing.jsonl")
    with pytest.raises(ValueError, match="split must be"):
        load_ads(split="dev")
