"""The GPU job scripts, checked where they cannot run: every one parses (a syntax error found on the lent machine
costs a call of device time), and `pack_logs` leaves the JSON results and one tarball of the logs under $OUT (the
device tool returns at most 8 files)."""
import os
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
    body = body.replace("/tmp/keep_all", str(keep)).replace("-C /tmp keep_all", f"-C {tmp_path} keep")
    env = {"OUT": str(out), "PATH": os.environ["PATH"]}
    for job in ("first", "second"):
        for ext in ("json", "log"):
            (out / f"{job}.{ext}").write_text(job)
        r = subprocess.run(["bash", "-c", body + "keep_all"], capture_output=True, text=True, env=env)
        assert r.returncode == 0, r.stderr
        assert sorted(p.name for p in out.iterdir()) == ["all.tgz"]
    with tarfile.open(out / "all.tgz") as t:
        assert sorted(t.getnames()) == ["keep"] + [f"keep/{j}.{e}" for j in ("first", "second") for e in ("json", "log")]
