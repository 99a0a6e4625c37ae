"""CI smoke run of the loss benchmark's CPU mode: it must run and its correctness columns must hold."""
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_loss_quick(tmp_path):
    out = tmp_path / "loss.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_loss.py"), "--quick", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["info"]["device"] == "cpu" and len(result["rows"]) == 2
    for row in result["rows"]:
        for impl in ("ours", "ours_recompute", "naive"):
            assert row[f"{impl}_err_loss"] < 1e-5, (impl, row)
            assert row[f"{impl}_err_grad_hidden"] < 1e-5 and row[f"{impl}_err_grad_weight"] < 1e-5, (impl, row)
            assert row[f"{impl}_ms"] > 0
        assert row["floor_ms"] > 0 and row["logprobs_err"] < 1e-5


def test_bench_rewards_quick(tmp_path):
    out = tmp_path / "rewards.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_rewards.py"), "--quick", "--encoder", "hashed",
                    "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["responses"] == 100 and result["pass_ms"] > 0
    assert {"length", "format", "ctcvr", "relevance", "correctness", "risk_token", "diversity_token",
            "ngram_update"} <= set(result["parts_ms"])


def test_bench_train_quick(tmp_path):
    out = tmp_path / "train.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--quick", "--out", str(out)],
                   check=True, capture_output=True, timeout=600)
    result = json.loads(out.read_text())
    assert result["steps_measured"] == 2 and result["tokens_per_second"] > 0
    assert {"time/rollout", "time/rewards", "time/update", "time/weight_push", "time/total"} <= set(result["step_ms"])
    assert "time/old_logprobs" not in result["step_ms"]  # one update per batch: on-policy, no extra forward
    assert result["info"]["commit"] and result["info"]["date"] and result["info"]["device"].startswith("cpu")
