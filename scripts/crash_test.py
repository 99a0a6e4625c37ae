"""Kill a short training run at several points, resume it, and compare its metrics step by step with
an uninterrupted run of the same settings.

    python scripts/crash_test.py            # release version: more steps and kill points (~10 min on 2 cores)
    python scripts/crash_test.py --quick    # what the test suite runs (tests/test_crash.py)

A base run does the phases before GRPO once (grpo.steps 0); every run below starts from a copy of
its folder (a safe change of grpo.steps and run.name). Each scenario starts `python -m
relate_fast.train` in such a copy, waits until metrics.jsonl
has K lines (plus a delay, so the signal lands somewhere inside a step), then sends:
  kill9       SIGKILL                 -> the run resumes from its last checkpoint;
(--quick runs kill9 and ctrl_c_x2; the release version all six, early and late; --split, a torchrun job
of one sampling rank and two trainers, kill9 of every process)
  ctrl_c      SIGINT once             -> the step finishes, a checkpoint is written, exit 130;
  ctrl_c_x2   SIGINT twice, 0.2 s apart -> the step is abandoned, nothing is written, exit 130;
and then runs the same command again to the end. The resumed run's metrics.jsonl must equal the
uninterrupted run's on every key (times and throughput excepted), step for step. The runs use the
default encoder (MiniLM) and rollout engine (vLLM when installed), the setting in which the README
claims exact resumption on a CPU. Exit status 1 when any scenario differs.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QUICK = ["--model.tiny.vocab_size", "500", "--model.tiny.hidden_size", "64", "--model.tiny.intermediate_size", "128",
         "--model.tiny.num_hidden_layers", "1", "--sft.steps", "3", "--sft.batch_size", "8", "--ctcvr.variants", "2",
         "--ctcvr.impressions", "2", "--ctcvr.epochs", "1", "--rollout.prompts_per_step", "2", "--rollout.group_size", "3",
         "--rollout.max_new_tokens", "12", "--eval.enabled", "false", "--run.checkpoint_every", "1",
         "--reward.ngram_min_count", "2", "--grpo.steps", "6"]
RELEASE = ["--sft.steps", "20", "--rollout.prompts_per_step", "4", "--eval.enabled", "false",
           "--run.checkpoint_every", "2", "--grpo.steps", "10"]


#: --split: 1 sampling rank + 2 trainers under torchrun (gloo), HF generate on the sampling rank
SPLIT = ["--rollout.mode", "one_step_off", "--rollout.sampler_ranks", "1", "--grpo.micro_batch_tokens", "360"]
_PORTS = iter(range(29700, 29800))


def command(out_dir: Path, name: str, settings, split: bool = False) -> list:
    launcher = [sys.executable, "-m", "relate_fast.train"]
    if split:  # a fresh port per launch: a killed job's port may linger
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "3", "--master_port",
                    str(next(_PORTS)), "-m", "relate_fast.train"]
    return [*launcher, "--run.out_dir", str(out_dir), "--run.name", name, "--run.progress", "false", *settings]


def metrics(run_dir: Path) -> list:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def comparable(m: dict) -> dict:
    return {k: v for k, v in m.items() if not k.startswith(("time/", "speed/", "tokens_per_second"))}


def run_to_end(cmd, env, log) -> int:
    with open(log, "ab") as f:
        return subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=1800).returncode


def _tail(log: Path, lines: int = 25) -> str:
    """The end of a run's log, for a failure message that shows its cause (CI keeps no work folder)."""
    text = log.read_text(errors="replace").splitlines() if log.is_file() else []
    return "\n".join("    " + l for l in text[-lines:] if "Loading weights" not in l)


def from_base(out_dir: Path, name: str) -> None:
    """A new run folder holding the base run's finished phases (cold start, CTCVR model): every run
    of the test starts GRPO from the same phases, and none pays for them again."""
    import shutil

    shutil.copytree(out_dir / "base", out_dir / name)


def scenario(out_dir: Path, name: str, settings, env, signals, after_lines: int, delay: float,
             split: bool = False) -> dict:
    """Starts a run, interrupts it as `signals` says once metrics.jsonl has `after_lines` lines (+ delay),
    then resumes it to the end. Returns what happened. `split`: a torchrun job, every process of which
    gets the signal (a machine that goes down)."""
    from_base(out_dir, name)
    cmd = command(out_dir, name, settings, split)
    log = out_dir / f"{name}.log"
    with open(log, "ab") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=split)
        if split:
            proc.send_signal = lambda sig: os.killpg(proc.pid, sig)
        deadline = time.time() + 900
        while len(metrics(out_dir / name)) < after_lines and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        for i, sig in enumerate(signals):
            if proc.poll() is None:
                proc.send_signal(sig)
            if i + 1 < len(signals):
                time.sleep(0.02)  # the second Ctrl-C within the step the first one asked to finish
        first_rc = proc.wait(timeout=900)
    lines_at_stop = len(metrics(out_dir / name))
    rc = run_to_end(command(out_dir, name, settings, split), env, log)
    return {"first_exit": first_rc, "lines_at_stop": lines_at_stop, "resumed_exit": rc,
            "metrics": metrics(out_dir / name)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the small version the test suite runs")
    ap.add_argument("--out", default=None, help="work folder (default: a new temporary folder)")
    ap.add_argument("--engine", default="auto", help="rollout engine (default: the run's default, auto)")
    ap.add_argument("--split", action="store_true", help="a torchrun job of 1 sampling rank and 2 trainers "
                    "(rollout.sampler_ranks 1, HF generate), killed whole; the kill9 scenario only")
    args = ap.parse_args(argv)
    import tempfile

    out_dir = Path(args.out or tempfile.mkdtemp(prefix="crash_test_"))
    out_dir.mkdir(parents=True, exist_ok=True)
    settings = (QUICK if args.quick else RELEASE) + ["--rollout.engine", "hf" if args.split else args.engine]
    split = args.split
    if split:
        settings += SPLIT
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
               OMP_NUM_THREADS="1" if args.split else "2")
    t = time.time()
    rc = run_to_end(command(out_dir, "base", settings + ["--grpo.steps", "0"], split), env, out_dir / "base.log")
    if rc != 0:
        print(f"the phases before GRPO failed (exit {rc}); see {out_dir / 'base.log'}:\n{_tail(out_dir / 'base.log')}")
        return 1
    from_base(out_dir, "uninterrupted")
    rc = run_to_end(command(out_dir, "uninterrupted", settings, split), env, out_dir / "uninterrupted.log")
    reference = metrics(out_dir / "uninterrupted")
    if rc != 0 or not reference:
        print(f"the uninterrupted run failed (exit {rc}); see {out_dir / 'uninterrupted.log'}:\n"
              f"{_tail(out_dir / 'uninterrupted.log')}")
        return 1
    # quick: the two signals that leave no chance to clean up (the single Ctrl-C, which finishes the
    # step and saves, is also checked in-process by tests/test_train.py)
    # the tiny model's steps take ~0.1 s here: each signal goes as soon as the first step is logged, so that
    # it lands mid-run (checked: killed_mid_run)
    plan = [("kill9", [signal.SIGKILL], 1, 0.0), ("ctrl_c_x2", [signal.SIGINT, signal.SIGINT], 1, 0.0)]
    if split:  # torchrun turns a Ctrl-C into its own shutdown of the workers: the kill is the case to check
        plan = plan[:1]
    elif not args.quick:
        plan += [("ctrl_c", [signal.SIGINT], 1, 0.2), ("kill9_early", [signal.SIGKILL], 0, 8.0),
                 ("kill9_late", [signal.SIGKILL], 7, 0.5), ("ctrl_c_late", [signal.SIGINT], 6, 0.4)]
    report, ok = {"reference_steps": len(reference)}, True
    for name, sigs, after, delay in plan:
        r = scenario(out_dir, name, settings, env, sigs, after, delay, split)
        same = [comparable(a) == comparable(b) for a, b in zip(r["metrics"], reference)]
        r["steps_equal"] = sum(same)
        # a kill that landed after the last step would test nothing but the restart of a finished run
        r["killed_mid_run"] = r["lines_at_stop"] < len(reference)
        r["ok"] = (r["resumed_exit"] == 0 and len(r["metrics"]) == len(reference) and all(same) and r["killed_mid_run"])
        if not r["ok"]:
            ok = False
            first = next((i for i, s in enumerate(same) if not s), None)
            if first is not None:
                a, b = comparable(r["metrics"][first]), comparable(reference[first])
                r["first_difference"] = {"step": first + 1, "keys": {k: [a.get(k), b.get(k)] for k in set(a) | set(b)
                                                                     if a.get(k) != b.get(k)}}
        del r["metrics"]
        report[name] = r
        print(name, json.dumps(r), flush=True)
    report["seconds"] = round(time.time() - t, 1)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2))
    print(("all scenarios resumed identically" if ok else "SOME SCENARIOS DIFFER") + f" ({out_dir / 'report.json'})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
