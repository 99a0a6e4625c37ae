"""The ablation's aggregation: t-intervals over seeds, Table 3 and Figure 3 from run folders
(the runs themselves are the trainer, tested in test_train.py); a finished ablation resumes
without training."""
import json
import math

import pytest

from relate_fast.ablation import COLUMNS, main, mean_ci


def test_mean_ci_is_the_t_interval():
    c = mean_ci([1.0, 2.0, 4.0])
    sd = math.sqrt(((1 - 7 / 3) ** 2 + (2 - 7 / 3) ** 2 + (4 - 7 / 3) ** 2) / 2)
    assert c["mean"] == pytest.approx(7 / 3)
    assert c["hi"] - c["mean"] == pytest.approx(4.303 * sd / math.sqrt(3))
    assert mean_ci([5.0]) == {"mean": 5.0, "lo": 5.0, "hi": 5.0, "n": 1}


def _fake_run(folder, value):
    folder.mkdir(parents=True)
    metrics = {k: value for k, _, _ in COLUMNS} | {"reward": value}
    (folder / "summary.json").write_text(json.dumps({"baseline": metrics, "final": metrics}))
    rows = [{"step": s, "reward/total": value, "reward/format": value * s, "reward/diversity_token": -1.0}
            for s in range(1, 8)]
    (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_table_and_figure_from_finished_runs(tmp_path, capsys):
    (tmp_path / "_base").mkdir()
    (tmp_path / "_base" / "summary.json").write_text("{}")
    for p, base in (("model1", 0.1), ("relate", 0.5)):
        for s in (0, 1):
            _fake_run(tmp_path / f"{p}-seed{s}", base + s)
    assert main(["--presets", "model1,relate", "--seeds", "0,1", "--out", str(tmp_path)]) == 0
    t = json.loads((tmp_path / "table3.json").read_text())
    assert t["presets"]["relate"]["format_pass_rate"]["mean"] == pytest.approx(1.0)
    assert t["presets"]["model1"]["ctcvr_sim"]["mean"] == pytest.approx(0.6)
    md = (tmp_path / "table3.md").read_text()
    assert md.startswith("| preset |") and "| relate |" in md and "2 seeds (0, 1)" in md
    assert (tmp_path / "figure3.png").stat().st_size > 10_000
    with pytest.raises(SystemExit):
        main(["--presets", "model9", "--out", str(tmp_path)])
