"""The run folder's identity: config.yaml says what a run is, and a resumed run must be the same run.

A resumed run may change only what does not change its numbers (`config.SAFE_CHANGES`: progress bars,
checkpoint cadence, engine memory settings ...); the changes are recorded in config_changes.jsonl and
config.yaml is rewritten to what runs now. Starting over moves the old folder aside, never deletes it.
"""
from __future__ import annotations

import datetime
import json
from pathlib import Path
from typing import Callable

from relate_fast.checkpoint import atomic_write_text
from relate_fast.config import SAFE_CHANGES, config_diff
from relate_fast.distributed import barrier

__all__ = ["prepare_run_dir"]


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def prepare_run_dir(run_dir: Path, config: dict, *, resume: bool, rank: int, log: Callable[[str], None]) -> None:
    """Checks that a resumed run has the settings it was started with (or only safe changes), or
    starts a fresh folder with its config.yaml. Every rank calls it; rank 0 writes."""
    saved = run_dir / "config.yaml"
    if saved.is_file() and resume:
        if (run_dir / "checkpoint" / "state.json").is_file() and not (run_dir / "checkpoint" / "phases.json").is_file():
            raise ValueError(f"{run_dir}: its checkpoint was written by an older relate_fast and cannot be "
                             f"resumed; start over with --run.resume false (the old run is moved aside)")
        import yaml

        try:
            old = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ValueError(f"{saved}: not valid YAML ({e})") from None
        diff = config_diff(old, config)
        changed = [d for d in diff if d[0] not in SAFE_CHANGES]
        if changed:
            raise ValueError(f"run {run_dir} was started with other settings: " + "; ".join(
                f"{k} {a!r} -> {b!r}" for k, a, b in changed) + ". Keep them, choose another --run.name, or pass "
                "--run.resume false to start over (the old run is moved aside)")
        if diff and rank == 0:  # allowed changes: recorded, and config.yaml says what runs now
            with open(run_dir / "config_changes.jsonl", "a", encoding="utf-8") as f:
                f.write(json.dumps({"date": _now().isoformat(timespec="seconds"),
                                    "changes": {k: [a, b] for k, a, b in diff}}) + "\n")
            atomic_write_text(saved, _yaml(config))
            log("resuming with changed settings: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in diff))
    else:
        if run_dir.exists() and any(run_dir.iterdir()) and rank == 0:
            aside = run_dir.with_name(f"{run_dir.name}.old-{_now().strftime('%Y%m%dT%H%M%SZ')}")
            run_dir.rename(aside)
            log(f"starting over: the previous run {run_dir} was moved to {aside}")
        barrier()
        if rank == 0:
            run_dir.mkdir(parents=True, exist_ok=True)
            atomic_write_text(saved, _yaml(config))
    barrier()
