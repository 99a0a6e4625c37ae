"""The GPU job scripts, checked where they cannot run: every one parses (a syntax error found on the lent machine
costs a call of device time), and `pack_logs` leaves the JSON results and one tarball of the logs under $OUT (the
device tool returns at most 8 files)."""
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_script_parses(script):
    r = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_pack_logs_keeps_the_results_and_tars_the_logs(tmp_path):
    setup = (ROOT / "scripts" / "gpu_setup.sh").read_text()
    body = setup[setup.index("pack_logs() {"):]
    body = body[:body.index("\n}\n") + 3]
    for name in ("a.log", "b.log", "result.json", "sweep.tgz"):
        (tmp_path / name).write_text(name)
    r = subprocess.run(["bash", "-c", body + "pack_logs"], capture_output=True, text=True, env={"OUT": str(tmp_path), "PATH": os.environ["PATH"]})
    assert r.returncode == 0, r.stderr
    left = sorted(p.name for p in tmp_path.iterdir())
    tars = [n for n in left if n.startswith("logs_") and n.endswith(".tgz")]
    assert len(tars) == 1 and {"result.json", "sweep.tgz"} <= set(left) and not any(n.endswith(".log") for n in left)
    with tarfile.open(tmp_path / tars[0]) as t:
        assert sorted(t.getnames()) == ["a.log", "b.log"]


def test_keep_all_gathers_every_job_into_one_tarball(tmp_path):
    """gpu_issue26.sh's KEEP_ALL=1: after each job all of $OUT goes into $OUT/all.tgz, which keeps the jobs before."""
    script = (ROOT / "scripts" / "gpu_issue26.sh").read_text()
    body = script[script.index("keep_all() {"):]
    body = body[:body.index("; }\n") + 4]
    out, keep = tmp_path / "out", tmp_path / "keep"
    out.mkdir()
    env = {"OUT": str(out), "PATH": os.environ["PATH"], "KEEP_DIR": str(keep)}
    for job in ("first", "second"):
        for ext in ("json", "log"):
            (out / f"{job}.{ext}").write_text(job)
        r = subprocess.run(["bash", "-c", body + "keep_all"], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in out.iterdir()) == ["all.tgz"]
    with tarfile.open(out / "all.tgz") as t:
        assert sorted(t.getnames()) == ["keep"] + [f"keep/{j}.{e}" for j in ("first", "second") for e in ("json", "log")]


FAKE_PYTHON = r"""#!/bin/bash
# stands in for python3 on the lent machine: logs its arguments, writes {} where --out names a file
echo "$*" >> "$CALLS"
out=""; prev=""
for a in "$@"; do [ "$prev" = "--out" ] && out=$a; prev=$a; done
[ -n "$out" ] && { sleep "${STUB_SLEEP_S:-0}"; echo '{}' > "$out"; }
echo "stub output"
"""


def _stubbed_issue26(tmp_path):
    """A copy of gpu_issue26.sh whose setup scripts and python3 are stubs; returns its folder and environment."""
    scripts = tmp_path / "scripts"
    scripts.mkdir()
    (scripts / "gpu_issue26.sh").write_text((ROOT / "scripts" / "gpu_issue26.sh").read_text())
    setup = (ROOT / "scripts" / "gpu_setup.sh").read_text()
    pack = setup[setup.index("pack_logs() {"):]
    (scripts / "gpu_setup.sh").write_text("require_vllm() { return 0; }\n" + pack[:pack.index("\n}\n") + 3])
    (scripts / "gpu_verl_setup.sh").write_text("echo verl stub\n")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON)
    (bin_dir / "python3").chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls.txt"), "HOME": str(tmp_path),
            "SWEEP_ROOT": str(tmp_path / "sweeps"), "KEEP_DIR": str(tmp_path / "keep")}


def test_gpu_issue26_runs_each_job_on_the_workload_it_names(tmp_path):
    """gpu_issue26.sh with `ours:realistic ab:fixed oab:fixed path` and KEEP_ALL=1, its setup and python3 stubbed:
    each bench is called once on the workload its job names (the A/B with its token-budget grid; the rollout-path
    probe at the 1.7B shape), and $OUT ends with one all.tgz holding every job's JSON — what a call on the lent
    machine depends on."""
    env = _stubbed_issue26(tmp_path)
    out, calls = tmp_path / "out", tmp_path / "calls.txt"
    out.mkdir()
    env.update(OUT=str(out), KEEP_ALL="1")
    r = subprocess.run(["bash", "scripts/gpu_issue26.sh", "ours:realistic", "ab:fixed", "oab:fixed", "path"],
                       cwd=tmp_path, capture_output=True, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = calls.read_text().splitlines()
    assert len(lines) == 4
    assert "bench_vs_trl.py" in lines[0] and "--workload realistic" in lines[0]
    assert "verl_engine_ab.py" in lines[1] and "--workload fixed" in lines[1] and "--budget-grid 16,40,80" in lines[1]
    assert "openrlhf_actor_ab.py" in lines[2] and "--workload fixed" in lines[2]
    assert "probe_rollout_path.py" in lines[3] and "--shape 1.7b" in lines[3]
    assert sorted(p.name for p in out.iterdir()) == ["all.tgz"]
    with tarfile.open(out / "all.tgz") as t:
        names = {Path(n).name for n in t.getnames()}
    assert {"ours_realistic.json", "verl_engine_ab_fixed.json", "openrlhf_actor_ab_fixed.json", "rollout_path.json"} <= names


def test_a_background_verl_run_outlives_its_call_and_the_next_call_collects_it(tmp_path):
    """VERL_BACKGROUND=1: the verl job starts the bench detached and returns while it still runs (its wait spent);
    `verl_wait` in a later call waits for it and brings its JSON and log back in that call's $OUT."""
    env = _stubbed_issue26(tmp_path)
    env.update(VERL_BACKGROUND="1", VERL_BG_DIR=str(tmp_path / "bg"), STUB_SLEEP_S="3", WORKLOAD="realistic")
    first, second = tmp_path / "out1", tmp_path / "out2"
    first.mkdir(), second.mkdir()
    r = subprocess.run(["bash", "scripts/gpu_issue26.sh", "verl"], cwd=tmp_path, capture_output=True, text=True,
                       env=dict(env, OUT=str(first), VERL_WAIT="0"), timeout=60)
    assert r.returncode == 0 and "still running" in r.stdout, r.stdout + r.stderr
    assert not (first / "vs_verl_realistic.json").exists()
    r = subprocess.run(["bash", "scripts/gpu_issue26.sh", "verl_wait"], cwd=tmp_path, capture_output=True, text=True,
                       env=dict(env, OUT=str(second), VERL_WAIT="30"), timeout=60)
    assert r.returncode == 0 and "rc=0" in r.stdout, r.stdout + r.stderr
    assert (second / "vs_verl_realistic.json").read_text().strip() == "{}"
    call = (tmp_path / "calls.txt").read_text().splitlines()
    assert len(call) == 1 and "bench_vs_verl.py" in call[0] and "--workload realistic" in call[0]
    assert f"--out {tmp_path / 'bg'}/vs_verl_realistic.json" in call[0]


def _stubbed_issue26_with_fa4(tmp_path):
    """_stubbed_issue26 with gpu_fa4_setup.sh stubbed too and python3 logging the PYTHONPATH it ran with."""
    env = _stubbed_issue26(tmp_path)
    (tmp_path / "scripts" / "gpu_fa4_setup.sh").write_text(  # as the real one: cutlass-dsl's folder named too
        'export FA4_SITE_PATH="/tmp/site_fa4/dsl:/tmp/site_fa4"\nexport FA4_PYTHONPATH="$FA4_SITE_PATH:$PYTHONPATH"\n')
    (tmp_path / "bin" / "python3").write_text(FAKE_PYTHON.replace('echo "$*" >> "$CALLS"',
                                                                  'echo "PYTHONPATH=$PYTHONPATH $*" >> "$CALLS"'))
    out = tmp_path / "out"
    out.mkdir()
    return env, out


def test_the_attention_job_puts_flash_attn_4_first_for_its_bench_only(tmp_path):
    """gpu_issue26.sh attention: flash-attn 4's site (FA4_PYTHONPATH from gpu_fa4_setup.sh) is on the bench's path,
    not exported to the jobs after it (vLLM keeps the bundle's cutlass-dsl)."""
    env, out = _stubbed_issue26_with_fa4(tmp_path)
    r = subprocess.run(["bash", "scripts/gpu_issue26.sh", "attention", "loss"], cwd=tmp_path, capture_output=True,
                       text=True, env=dict(env, OUT=str(out), PYTHONPATH="/tmp/site"), timeout=60)
    assert r.returncode == 0 and "-- attention rc=0" in r.stdout, r.stdout + r.stderr
    attention, loss = (tmp_path / "calls.txt").read_text().splitlines()
    assert attention.startswith("PYTHONPATH=/tmp/site_fa4/dsl:/tmp/site_fa4:/tmp/site ") and "bench_attention.py" in attention
    assert "--transformers" in attention and (out / "attention.json").is_file()
    assert loss.startswith("PYTHONPATH=/tmp/site ") and "bench_loss.py" in loss


def test_a_piece_set_installs_once_all_its_pieces_are_here(tmp_path):
    """gpu_setup.sh's install_piece_set, as gpu_verl_setup.sh and gpu_fa4_setup.sh use it: pieces gather in
    /tmp/NAME_parts over calls (each call's carry replaces the folder); with fewer than asked it says so and
    installs nothing; with all, pip gets every wheel of the set for the site."""
    import io
    import uuid

    setup = (ROOT / "scripts" / "gpu_setup.sh").read_text()
    body = setup[setup.index("install_piece_set() {"):]
    name = f"test{uuid.uuid4().hex[:8]}"
    blob = io.BytesIO()
    with tarfile.open(fileobj=blob, mode="w") as t:
        for w in ("w/a-1-py3-none-any.whl", "w/b-2-py3-none-any.whl"):
            info = tarfile.TarInfo(w)
            info.size = 1
            t.addfile(info, io.BytesIO(b"x"))
    data = blob.getvalue()
    half = len(data) // 2
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(FAKE_PYTHON)
    (bin_dir / "python3").chmod(0o755)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "CALLS": str(tmp_path / "calls.txt")}
    site = tmp_path / "site"
    try:
        for i, piece in enumerate((data[:half], data[half:])):  # one piece per call, the folder replaced each time
            carried = tmp_path / ".gpu-set"
            shutil.rmtree(carried, ignore_errors=True)
            carried.mkdir()
            (carried / f"part.{i:02d}").write_bytes(piece)
            r = subprocess.run(["bash", "-c", body + f"install_piece_set {name} .gpu-set {site} 2"], cwd=tmp_path,
                               capture_output=True, text=True, env=env)
            if i == 0:
                assert r.returncode != 0 and "only 1 of 2" in r.stdout and not (tmp_path / "calls.txt").exists()
        assert r.returncode == 0, r.stdout + r.stderr
        (call,) = (tmp_path / "calls.txt").read_text().splitlines()
        assert f"--target {site}" in call and call.endswith(f"/tmp/{name}_x/w/a-1-py3-none-any.whl "
                                                            f"/tmp/{name}_x/w/b-2-py3-none-any.whl")
    finally:
        shutil.rmtree(f"/tmp/{name}_parts", ignore_errors=True)
        shutil.rmtree(f"/tmp/{name}_x", ignore_errors=True)


def test_fa4_puts_verl_and_its_engine_a_b_on_flash_attn_4(tmp_path):
    """FA4=1: the verl sweep asks for flash_attention_4 with FA4's site for verl's processes (its default setting
    named _fa4), the engine A/B runs with FA4's site first and --attn flash_attention_4."""
    env, out = _stubbed_issue26_with_fa4(tmp_path)
    r = subprocess.run(["bash", "scripts/gpu_issue26.sh", "verl", "ab:fixed"], cwd=tmp_path, capture_output=True,
                       text=True, env=dict(env, OUT=str(out), PYTHONPATH="/tmp/site", FA4="1"), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    verl, ab = (tmp_path / "calls.txt").read_text().splitlines()
    assert "bench_vs_verl.py" in verl and "--attention flash_attention_4 --attention-dir /tmp/site_fa4/dsl:/tmp/site_fa4 " in verl
    assert "--only verl_mb80_ckptoff_bypass_fused_rmpad_fa4 " in verl and verl.startswith("PYTHONPATH=/tmp/site ")
    assert ab.startswith("PYTHONPATH=/tmp/site_fa4/dsl:/tmp/site_fa4:/tmp/site ") and "--attn flash_attention_4" in ab


def test_a_timed_job_is_skipped_while_verl_runs_in_the_background(tmp_path):
    """Two benches on one GPU at once time each other: while a detached verl run lives, the timed jobs of a later
    call are skipped with the reason, and verl_wait still collects it."""
    env = _stubbed_issue26(tmp_path)
    env.update(VERL_BACKGROUND="1", VERL_BG_DIR=str(tmp_path / "bg"), STUB_SLEEP_S="4")
    first, second = tmp_path / "out1", tmp_path / "out2"
    first.mkdir(), second.mkdir()
    r = subprocess.run(["bash", "scripts/gpu_issue26.sh", "verl"], cwd=tmp_path, capture_output=True, text=True,
                       env=dict(env, OUT=str(first), VERL_WAIT="0"), timeout=60)
    assert r.returncode == 0 and "still running" in r.stdout, r.stdout + r.stderr
    r = subprocess.run(["bash", "scripts/gpu_issue26.sh", "loss", "verl_wait", "loss"], cwd=tmp_path,
                       capture_output=True, text=True, env=dict(env, OUT=str(second), VERL_WAIT="30"), timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "-- loss skipped: verl is still running" in r.stdout and "rc=0" in r.stdout
    calls = (tmp_path / "calls.txt").read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["benchmarks/bench_vs_verl.py", "benchmarks/bench_loss.py"]  # the 2nd loss ran
