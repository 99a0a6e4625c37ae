"""How long a full gc.collect() takes inside the trainer's loop, with the setup's objects frozen (what
the trainer does since issue 24) and unfrozen. vLLM's sleep and wake each run one per rollout on a GPU.

    python benchmarks/probe_gc.py [trainer options]      # the CPU default, 2 steps

Prints, per step: the objects frozen, and the milliseconds of one gc.collect() frozen and unfrozen.
"""
from __future__ import annotations

import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from relate_fast.train import main as train  # noqa: E402
from relate_fast.trainer import Trainer  # noqa: E402


def main(argv=None):
    seen = {}
    real = Trainer.grpo_step

    def probe(self, step):
        t = time.perf_counter()
        gc.collect()
        frozen_ms = (time.perf_counter() - t) * 1e3
        count = gc.get_freeze_count()
        gc.unfreeze()
        t = time.perf_counter()
        gc.collect()
        plain_ms = (time.perf_counter() - t) * 1e3
        gc.freeze()
        seen[step + 1] = {"frozen_objects": count, "collect_ms_frozen": round(frozen_ms, 1),
                          "collect_ms_unfrozen": round(plain_ms, 1)}
        return real(self, step)

    Trainer.grpo_step = probe
    train(["--run.out_dir", tempfile.mkdtemp(prefix="probe_gc_"), "--run.progress", "false", "--grpo.steps", "2",
           "--eval.enabled", "false", "--run.save_final", "false", *(sys.argv[1:] if argv is None else argv)])
    for step, v in seen.items():
        print(f"step {step}: {v['frozen_objects']:,} objects frozen; gc.collect() {v['collect_ms_frozen']} ms frozen, "
              f"{v['collect_ms_unfrozen']} ms unfrozen")
    return seen


if __name__ == "__main__":
    main()
