"""The GRPO phase's checkpoints: what one holds and how a run continues from it.

A checkpoint after step s holds the policy and its optimizer (the updater's own save), every rank's
RNG state and the step parts' own state (the reward function's n-gram window, the embedding caches:
`StepParts.state_dict`). `CheckpointStore` (relate_fast.checkpoint) writes it atomically and checks it
on the way back; this module decides what goes in and puts it back, so that a resumed run continues
as if nothing happened (tests/test_train.py, tests/test_crash.py, scripts/crash_test.py).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable

from relate_fast.checkpoint import CheckpointError, CheckpointStore, rng_state, seed_all, set_rng_state

__all__ = ["GRPOCheckpoints"]


class GRPOCheckpoints:
    """Saves and restores the GRPO phase of one run (`parts`: relate_fast.assemble.StepParts)."""

    def __init__(self, store: CheckpointStore, *, config_hash: str, seed: int, rank: int, log: Callable[[str], None]):
        self.store, self.config_hash, self.seed, self.rank, self.log = store, config_hash, seed, rank, log
        self.saved_step = 0  # the step of the newest complete checkpoint (0: none yet)

    def finished(self, steps: int) -> bool:
        """Whether an intact checkpoint of the last step exists."""
        done = self.store.steps()
        return bool(done) and done[0] >= steps and self.store.verify(done[0], config_hash=self.config_hash) is None

    def restore(self, parts) -> int:
        """The GRPO phase starts from the same RNG state and empty embedding caches whatever ran before in
        this process; then the newest intact checkpoint, if any, restores everything that changes the next
        step's numbers. Returns the step to continue from."""
        seed_all(self.seed + 7_919)
        parts.clear_caches()
        self.store.clean_partial()
        step, folder = self.store.latest_valid(config_hash=self.config_hash, log=self.log)
        if folder is None:
            if self.store.steps():
                raise CheckpointError(f"no checkpoint in {self.store.root} is intact (see above); move the folder "
                                      f"aside to start GRPO over")
            parts.rollout.ensure_weights(parts.updater.model)  # the evaluation's sleep may have discarded them
            return 0
        parts.updater.load(folder)
        state = self.store.read_rank_state(folder)
        set_rng_state(state["rng"])
        parts.load_state_dict(state)
        parts.rollout.mark_stale()
        parts.rollout.ensure_weights(parts.updater.model)
        self.saved_step = step
        self.log(f"restored GRPO step {step} from {folder}")
        return step

    def save(self, step: int, parts) -> Path:
        """The state after GRPO step `step`, written atomically."""
        state = {"step": step, "rng": rng_state(), **parts.state_dict()}

        def write(folder: Path):
            parts.updater.save(folder, {"step": step}, rank=self.rank)
            self.store.write_rank_state(folder, state)

        t = time.time()
        folder = self.store.save(step, write, config_hash=self.config_hash)
        self.saved_step = step
        # a large policy's checkpoint takes minutes: say what it cost
        self.log(f"checkpoint of step {step}: {self.store.last_saved_bytes / 2**30:.2f} GiB in {time.time() - t:.1f} s "
                 f"({folder})")
        return folder

    def where(self) -> str:
        """Where a stopped run resumes from, in words."""
        return (f"the checkpoint of step {self.saved_step} ({self.store.folder(self.saved_step)})" if self.saved_step
                else "the start of GRPO (no checkpoint yet)")
