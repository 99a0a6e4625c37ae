import json

from relate_fast import demo


def test_demo_flags_violations_and_respects_exemptions(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "matcher_demo.json").read_text(encoding="utf-8"))
    texts = [r["text"] for r in result["responses"]]
    by_text = dict(zip(texts, result["hits"]))
    dodge = next(t for t in texts if t.startswith("本店面霜"))
    assert {h["pattern"] for h in by_text[dodge]} >= {"最佳", "100%有效", "无副作用"}
    tip = next(t for t in texts if t.startswith("最佳食用方法"))
    assert by_text[tip] == []  # exempt consumer tip, and 第一次 is an ordinal
    assert result["compliance_rate"] == sum(1 for h in result["hits"] if not h) / len(texts)
    for row, hits in zip(result["responses"], result["hits"]):
        assert len(row["r_tok"]) == len(row["token_ids"])
        if hits:  # every hit reaches at least one token with reward -1 (or less)
            assert min(row["r_tok"]) <= -1.0
    assert "compliance rate" in capsys.readouterr().out


def test_demo_rejects_unreadable_texts(tmp_path):
    import pytest

    with pytest.raises(SystemExit, match="--texts .*missing.txt"):
        demo.main(["--texts", str(tmp_path / "missing.txt"), "--out", str(tmp_path)])
