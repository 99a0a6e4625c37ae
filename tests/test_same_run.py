"""scripts/same_run.py: two runs are the same when their numbers are, whatever their timings."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(folder, loss, seconds):
    folder.mkdir()
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": loss, "time/total": seconds}) + "\n"
                                                  for s in (1, 2)))
    (folder / "summary.json").write_text(json.dumps({"baseline": {"reward": 0.1}, "final": {"reward": 0.2}}))
    return folder


def test_same_numbers_other_timings_are_the_same_run(tmp_path):
    a, b, c = _run(tmp_path / "a", 0.5, 1.0), _run(tmp_path / "b", 0.5, 9.0), _run(tmp_path / "c", 0.25, 1.0)
    same = [sys.executable, str(ROOT / "scripts" / "same_run.py")]
    assert subprocess.run(same + [str(a), str(b)], capture_output=True).returncode == 0
    res = subprocess.run(same + [str(a), str(c)], capture_output=True, text=True)
    assert res.returncode == 1 and "step 1: loss 0.5 != 0.25" in res.stdout
