"""Atomic, verified checkpoints of a run, taken only between GRPO steps.

    <run>/checkpoint/
        phases.json              finished phases (cold start, CTCVR model, baseline evaluation)
        step-000010/             one folder per kept checkpoint (the last `run.keep_checkpoints`)
            policy/ | policy.pt  every rank's DeepSpeed shards (or the plain torch state)
            trainer-rank0.pkl    per rank: RNG states, n-gram window, embedding cache
            manifest.json        written last: step, world size, config hash, size + sha256 of every file
        .tmp-step-000015/        a checkpoint being written; never read, removed by the next start

Writing: every rank writes into the temporary folder; the ranks hash their share of its files
(after an fsync); rank 0 writes the manifest, renames the folder into place and only then removes
checkpoints beyond the last K. A crash or a second Ctrl-C at any moment leaves either the new
checkpoint complete or the previous ones untouched.

Reading: newest first; a folder whose manifest is missing or unreadable, or whose files disagree
with it (size or checksum), is reported in one line naming the file and skipped for the previous
one. Every rank takes part in the verification and they reach the same verdict.
"""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import random
import re
import shutil
from pathlib import Path
from typing import Callable, List, Optional, Tuple

import numpy as np
import torch

from relate_fast.distributed import all_gather_objects, barrier

__all__ = ["CheckpointStore", "CheckpointError", "atomic_save_pretrained", "atomic_write_text", "fsync_path", "rng_state", "set_rng_state",
           "seed_all"]

_STEP_RE = re.compile(r"^step-(\d{6,})$")
MANIFEST = "manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used (damaged, or written under other settings or another world size)."""


def fsync_path(path: Path) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    fd = os.open(str(path), os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_save_pretrained(out: Path, model, tokenizer) -> Path:
    """`model.save_pretrained` + `tokenizer.save_pretrained` into `out` so that `out` holds either the
    previous folder or the complete new one, never a part: written beside it, flushed to disk, then
    swapped in by renames."""
    out = Path(out)
    tmp, old = out.with_name(f".{out.name}.tmp"), out.with_name(f".{out.name}.old")
    for stale in (tmp, old):
        shutil.rmtree(stale, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    for f in tmp.rglob("*"):
        if f.is_file():
            fsync_path(f)
    fsync_path(tmp)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    fsync_path(out.parent)
    shutil.rmtree(old, ignore_errors=True)
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write `path` so that a reader sees the old content or the new one, never a mix."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_path(path.parent)


def rng_state() -> dict:
    """Every generator a step draws from (Python, NumPy, torch, CUDA): what a checkpoint stores so a
    resumed run continues identically."""
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def set_rng_state(s: dict):
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def seed_all(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _files(folder: Path) -> List[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST)


class CheckpointStore:
    def __init__(self, root: Path, *, rank: int, world: int, keep: int = 2):
        self.root, self.rank, self.world, self.keep = Path(root), rank, world, max(1, keep)

    # -- phases -------------------------------------------------------------------------------------
    def read_phases(self) -> dict:
        path = self.root / "phases.json"
        if not path.is_file():
            return {"phases": []}
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as e:
            raise CheckpointError(f"{path}: not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}") from None

    def write_phases(self, state: dict) -> None:
        if self.rank == 0:
            self.root.mkdir(parents=True, exist_ok=True)
            atomic_write_text(self.root / "phases.json", json.dumps(state, indent=1))

    # -- writing ------------------------------------------------------------------------------------
    def folder(self, step: int) -> Path:
        return self.root / f"step-{step:06d}"

    def save(self, step: int, write: Callable[[Path], None], *, config_hash: str) -> Path:
        """`write(folder)` runs on every rank and writes that rank's files; returns the final folder."""
        tmp = self.root / f".tmp-step-{step:06d}"
        if self.rank == 0:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier()
        write(tmp)
        barrier()
        files = _files(tmp)
        mine = {f: self._describe(tmp / f) for f in files[self.rank::self.world]}
        described = {k: v for part in all_gather_objects(mine) for k, v in part.items()}
        self.last_saved_bytes = sum(d["bytes"] for d in described.values())  # every rank's files, for the log
        final = self.folder(step)
        if self.rank == 0:
            manifest = {"step": step, "world_size": self.world, "config_hash": config_hash,
                        "files": {f: described[f] for f in files}}
            with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
                json.dump(manifest, f, indent=1)
                f.flush()
                os.fsync(f.fileno())
            fsync_path(tmp)
            if final.exists():  # the same step saved again (e.g. the last step and a Ctrl-C): replace it
                old = self.root / f".old-step-{step:06d}"
                shutil.rmtree(old, ignore_errors=True)
                final.rename(old)
                tmp.rename(final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                tmp.rename(final)
            fsync_path(self.root)
            for stale in self.steps()[self.keep:]:
                shutil.rmtree(self.folder(stale), ignore_errors=True)
        barrier()
        return final

    @staticmethod
    def _describe(path: Path) -> dict:
        fsync_path(path)
        return {"bytes": path.stat().st_size, "sha256": _sha256(path)}

    # -- reading ------------------------------------------------------------------------------------
    def steps(self) -> List[int]:
        """Steps of the complete (renamed) checkpoint folders, newest first."""
        if not self.root.is_dir():
            return []
        found = [int(m.group(1)) for p in self.root.iterdir() if p.is_dir() and (m := _STEP_RE.match(p.name))]
        return sorted(found, reverse=True)

    def clean_partial(self) -> None:
        """Removes what an interrupted save left behind (rank 0)."""
        if self.rank == 0 and self.root.is_dir():
            for p in self.root.iterdir():
                if p.name.startswith((".tmp-step-", ".old-step-")):
                    shutil.rmtree(p, ignore_errors=True)
        barrier()

    def verify(self, step: int, *, config_hash: Optional[str] = None) -> Optional[str]:
        """None when the checkpoint of `step` is intact (and was written under `config_hash` by this
        world size), else one line saying what is wrong. Collective: every rank hashes a share."""
        folder = self.folder(step)
        manifest_path = folder / MANIFEST
        problem = None
        manifest = None
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
            listed = manifest["files"]
        except FileNotFoundError:
            problem = f"{manifest_path}: missing"
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            problem = f"{manifest_path}: unreadable ({type(e).__name__})"
        if problem is None:
            if manifest.get("world_size") != self.world:
                problem = (f"{folder}: written by {manifest.get('world_size')} ranks, this run has {self.world} "
                           f"(ZeRO shards do not carry over)")
            elif config_hash is not None and manifest.get("config_hash") != config_hash:
                problem = f"{folder}: written under other settings (config hash {manifest.get('config_hash')})"
        names = sorted(listed) if problem is None else []
        bad = {}
        for name in names[self.rank::self.world]:
            path = folder / name
            want = listed[name]
            if not path.is_file():
                bad[name] = "missing"
            elif path.stat().st_size != want["bytes"]:
                bad[name] = f"{path.stat().st_size} bytes, the manifest says {want['bytes']}"
            elif _sha256(path) != want["sha256"]:
                bad[name] = "checksum differs from the manifest (damaged)"
        bad = {k: v for part in all_gather_objects(bad) for k, v in part.items()}
        if problem is None and bad:
            name = sorted(bad)[0]
            problem = f"{folder / name}: {bad[name]}"
        return problem

    def latest_valid(self, *, config_hash: str, log: Callable[[str], None]) -> Tuple[int, Optional[Path]]:
        """(step, folder) of the newest intact checkpoint, or (0, None). Each damaged one is reported
        and skipped."""
        for step in self.steps():
            problem = self.verify(step, config_hash=config_hash)
            if problem is None:
                return step, self.folder(step)
            log(f"checkpoint of step {step} not usable: {problem}; falling back to the previous one")
        return 0, None

    # -- per-rank trainer state -------------------------------------------------------------------
    def write_rank_state(self, folder: Path, state: dict) -> None:
        with open(folder / f"trainer-rank{self.rank}.pkl", "wb") as f:
            pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)

    def read_rank_state(self, folder: Path) -> dict:
        with open(folder / f"trainer-rank{self.rank}.pkl", "rb") as f:
            return pickle.load(f)
