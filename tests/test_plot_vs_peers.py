"""benchmarks/plot_vs_peers.py: the figure's numbers are the stamped JSON's, and it renders."""
import json

import pytest

from benchmarks import plot_vs_peers as pv


def test_each_bar_is_its_sides_best_step_split_at_generation():
    parts = pv.step_parts()
    assert list(parts) == ["128-token responses", "ad lengths"]
    for workload, bars in parts.items():
        assert list(bars) == ["relate_fast", "TRL 1.16", "verl 0.9.1"]
        for label, (name, side) in pv.SOURCES[workload].items():
            best = json.loads((pv.RESULTS / name).read_text())["best"][side]
            bar = bars[label]
            assert bar["generation_s"] + bar["rest_s"] == pytest.approx(best["step_s"])
            assert bar["tokens_per_second"] == best["tokens_per_second"] and bar["source"] == name
    # the ordering the README states: ours fastest, verl slowest, on both workloads
    for bars in parts.values():
        steps = [b["generation_s"] + b["rest_s"] for b in bars.values()]
        assert steps == sorted(steps)


def test_it_writes_a_png_and_names_a_result_without_the_side(tmp_path):
    out = pv.plot(pv.step_parts(), tmp_path / "f.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    (tmp_path / "r.json").write_text(json.dumps({"best": {"ours": None}}))
    with pytest.raises(SystemExit, match="r.json has no best result for 'ours'"):
        pv.step_parts(tmp_path, {"w": {"relate_fast": ("r.json", "ours")}})
