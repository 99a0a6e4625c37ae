"""Runs that survive anything: kill -9 and Ctrl-C (once, twice) mid-run, resumed, compared step by step
with an uninterrupted run (scripts/crash_test.py --quick); damaged checkpoints; changed settings;
partial metrics lines; inputs checked before any work; starting over moves the old run aside."""
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from tests.test_train import SMALL, _checkpoints

ROOT = Path(__file__).resolve().parents[1]


def _crash_test(tmp_path, *args):
    """scripts/crash_test.py --quick run here; its report, or a failure that shows why (the report when
    there is one, else what the script printed: the end of the failed run's log)."""
    spec = importlib.util.spec_from_file_location("crash_test", ROOT / "scripts" / "crash_test.py")
    crash = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(crash)
    rc = crash.main(["--quick", *args, "--out", str(tmp_path)])
    report = tmp_path / "report.json"
    assert rc == 0, report.read_text() if report.is_file() else "no report: see the captured stdout above"
    return json.loads(report.read_text())


@pytest.mark.slow
def test_kill_and_ctrl_c_then_resume_equal_the_uninterrupted_run(tmp_path):
    report = _crash_test(tmp_path)
    assert report["kill9"]["first_exit"] == -9 and report["ctrl_c_x2"]["first_exit"] == 130
    for name in ("kill9", "ctrl_c_x2"):  # the signal landed mid-run, and all 6 steps match
        assert report[name]["killed_mid_run"] and report[name]["steps_equal"] == report["reference_steps"] == 6


@pytest.mark.slow
def test_a_killed_job_with_a_sampling_rank_resumes_like_the_uninterrupted_one(tmp_path):
    """rollout.sampler_ranks 1 under torchrun (1 sampling rank, 2 trainers): every process killed with
    SIGKILL after step 1 of 6, the job started again: the same metrics as the uninterrupted job, step for step
    (the batch waiting in the checkpoint is used, the one being sampled at the kill is sampled again)."""
    pytest.importorskip("deepspeed")
    report = _crash_test(tmp_path, "--split")
    assert report["kill9"]["first_exit"] == -9 and report["kill9"]["killed_mid_run"]
    assert report["kill9"]["steps_equal"] == report["reference_steps"] == 6


def _args(tmp_path, name, *extra):
    return [str(tmp_path) if a is None else a for a in SMALL] + ["--eval.enabled", "false", "--run.name", name, *extra]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished 2-step run (checkpoints of steps 2 and 1); each test works on a copy of it."""
    from relate_fast.train import main

    root = tmp_path_factory.mktemp("finished")
    assert main(_args(root, "run", "--grpo.steps", "2")) == 0
    return root


def _copy(finished, tmp_path, name):
    shutil.copytree(finished / "run", tmp_path / name)
    shutil.copytree(finished / "_tiny_model", tmp_path / "_tiny_model", dirs_exist_ok=True)


def test_damaged_checkpoint_is_named_and_the_previous_one_used(finished, tmp_path, capsys):
    from relate_fast.train import main

    _copy(finished, tmp_path, "a")
    run = tmp_path / "a"
    assert main(_args(tmp_path, "a", "--grpo.steps", "3")) == 0
    assert _checkpoints(run) == [3, 2]
    shard = run / "checkpoint" / "step-000003" / "policy" / "mp_rank_00_model_states.pt"
    data = bytearray(shard.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    shard.write_bytes(bytes(data))
    (run / "summary.json").unlink()
    capsys.readouterr()
    assert main(_args(tmp_path, "a", "--grpo.steps", "3")) == 0
    err = capsys.readouterr().err
    assert "checkpoint of step 3 not usable" in err and "mp_rank_00_model_states.pt: checksum differs" in err
    assert "restored GRPO step 2" in err
    assert [json.loads(l)["step"] for l in (run / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_changed_settings_are_refused_and_safe_ones_recorded(finished, tmp_path, capsys):
    from relate_fast.train import main

    _copy(finished, tmp_path, "b")
    config = (tmp_path / "b" / "config.yaml").read_text()
    capsys.readouterr()
    assert main(_args(tmp_path, "b", "--grpo.steps", "2", "--reward.preset", "model2", "--grpo.lr", "0.05")) == 2
    err = capsys.readouterr().err
    assert "was started with other settings: grpo.lr 0.0001 -> 0.05; reward.preset 'relate' -> 'model2'" in err
    assert (tmp_path / "b" / "config.yaml").read_text() == config  # never claims what did not run
    assert main(_args(tmp_path, "b", "--grpo.steps", "3")) == 0  # more steps: a safe change
    changes = [json.loads(l) for l in (tmp_path / "b" / "config_changes.jsonl").read_text().splitlines()]
    assert changes[-1]["changes"]["grpo.steps"] == [2, 3]
    assert "steps: 3" in (tmp_path / "b" / "config.yaml").read_text()


def test_bad_inputs_fail_before_any_work_and_nothing_is_deleted(finished, tmp_path, capsys):
    from relate_fast.train import main

    _copy(finished, tmp_path, "c")
    before = sorted(p.name for p in (tmp_path / "c").iterdir())
    cases = [
        (["--model.path", str(tmp_path / "typo")], "model.path", "no such folder"),
        (["--run.resume", "false", "--model.path", str(tmp_path / "typo")], "model.path", "no such folder"),
        (["--grpo.steps", "-1"], "grpo.steps", "must be >= 0"),
        (["--rollout.prompts_per_step", "0"], "rollout.prompts_per_step", "must be >= 1"),
        (["--reward.preset", "modle2"], "reward.preset", "must be one of"),
        (["--rollout.engine", "vlm"], "rollout.engine", "must be one of auto, vllm, hf"),
        (["--data.langs", "[xx]"], "data.langs", "subset"),
    ]
    bad_list = tmp_path / "list.tsv"
    bad_list.write_text("block\t最佳\nnonsense line with\ttoo\tmany\tfields\n")
    cases.append((["--reward.blacklist", str(bad_list)], "list.tsv:2", ""))
    zh_only = tmp_path / "zh.jsonl"
    rows = [json.loads(l) for l in (ROOT / "relate_fast" / "data" / "sample_ads.jsonl").read_text().splitlines()]
    zh_only.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows if r["lang"] == "zh"))
    cases.append((["--data.path", str(zh_only), "--data.langs", "[en]"], "data.langs", "no training prompts"))
    import time

    for extra, field, words in cases:
        t = time.time()
        assert main(_args(tmp_path, "c", "--grpo.steps", "2", *extra)) == 2, extra
        err = capsys.readouterr().err
        assert field in err and words in err, (extra, err)
        assert time.time() - t < 20, extra  # found before any training
    assert sorted(p.name for p in (tmp_path / "c").iterdir()) == before


def test_starting_over_moves_the_old_run_aside(finished, tmp_path, capsys):
    from relate_fast.train import main

    _copy(finished, tmp_path, "d")
    assert main(_args(tmp_path, "d", "--grpo.steps", "1", "--run.resume", "false", "--grpo.lr", "0.001",
                      "--sft.steps", "0")) == 0
    aside = [p for p in tmp_path.iterdir() if p.name.startswith("d.old-")]
    assert len(aside) == 1 and (aside[0] / "metrics.jsonl").is_file() and (aside[0] / "summary.json").is_file()
    assert "moved to" in capsys.readouterr().err


def test_partial_metrics_line_is_cut_and_bad_json_named(finished, tmp_path, capsys):
    from relate_fast.train import main

    _copy(finished, tmp_path, "e")
    run = tmp_path / "e"
    metrics = run / "metrics.jsonl"
    # a crash after step 2's checkpoint, while writing step 3's line
    with open(metrics, "a") as f:
        f.write('{"step": 3, "loss": 0.1')
    (run / "summary.json").unlink()
    assert main(_args(tmp_path, "e", "--grpo.steps", "3")) == 0
    assert [json.loads(l)["step"] for l in metrics.read_text().splitlines()] == [1, 2, 3]
    assert "cutting a partial last line" in capsys.readouterr().err
    lines = metrics.read_text().splitlines()
    metrics.write_text(lines[0] + "\n{not json\n" + "\n".join(lines[1:]) + "\n")
    (run / "summary.json").unlink()
    shutil.rmtree(run / "checkpoint" / "step-000003")
    assert main(_args(tmp_path, "e", "--grpo.steps", "3")) == 2
    assert "metrics.jsonl:2: not valid JSON" in capsys.readouterr().err


def test_installed_package_ships_the_default_config(tmp_path):
    """The wheel holds relate_fast/configs/tiny_cpu.yaml (and every subpackage), so an installed
    package trains the same default as the checkout."""
    import subprocess
    import sys
    import zipfile

    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(tmp_path), str(ROOT)],
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    wheel = next(tmp_path.glob("relate_fast-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"relate_fast/configs/tiny_cpu.yaml", "relate_fast/configs/qwen3_8b_4gpu.yaml",
            "relate_fast/phases/cold_start.py", "relate_fast/kernels/grpo_loss.py", "relate_fast/step.py",
            "relate_fast/checkpoint.py"} <= names
    assert not any(n.startswith(("configs/", "kernels/")) for n in names)
