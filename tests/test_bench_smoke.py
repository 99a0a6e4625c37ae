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


def test_bench_train_qwen3_shape_under_torchrun(tmp_path):
    """The GPU benchmark's code path (Qwen3 shape, random init, several ranks) on 2 CPU ranks: every
    rank must find the same work folder (a per-rank temporary folder once left ranks 1..N waiting)."""
    import os

    out = tmp_path / "train.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29614",
                          str(ROOT / "benchmarks" / "bench_train.py"), "--gpu", "--shape", "tiny", "--engine", "hf",
                          "--prompts", "1", "--max-new-tokens", "6", "--steps", "2", "--warmup", "0", "--out", str(out),
                          "--model.dtype", "float32", "--grpo.micro_batch_tokens", "4096"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["info"]["world_size"] == 2 and result["responses_per_step"] == 10  # 2 ranks x 1 prompt x G=5
    assert result["steps_measured"] == 2 and result["tokens_per_second_per_gpu"] > 0


def test_generated_result_tables_match_their_json(tmp_path, monkeypatch):
    """benchmarks/RESULTS.md's generated tables equal what results_tables.py makes of the JSON, and a
    number typed into one is caught."""
    sys.path.insert(0, str(ROOT))
    import benchmarks.results_tables as rt

    assert rt.main(["--check"]) == 0
    doc = tmp_path / "RESULTS.md"
    doc.write_text(rt.DOC.read_text().replace("| 2 | 2.63 s |", "| 2 | 2.50 s |"))
    monkeypatch.setattr(rt, "DOC", doc)
    assert rt.main(["--check"]) == 1
    assert rt.main([]) == 0 and rt.main(["--check"]) == 0 and "| 2 | 2.63 s |" in doc.read_text()


def test_bench_update_quick(tmp_path):
    """The update benchmark's CPU mode: every setting of the grid runs, packed and padded alike."""
    out = tmp_path / "update.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_update.py"), "--quick", "--out", str(out)],
                   check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert len(result["grid"]) == 8 and not any(g.get("oom") for g in result["grid"])
    assert {(g["layout"], g["ckpt"]) for g in result["grid"]} == {(l, c) for l in ("padded", "packed") for c in (True, False)}
    assert all(g["update_s"] > 0 and g["model_tflops"] > 0 for g in result["grid"])
    assert result["settings"]["tokens"] < result["settings"]["padded_tokens"]
    assert result["info"]["commit"]
