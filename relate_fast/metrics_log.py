"""What a run shows while it runs: metrics.jsonl (one JSON line per GRPO step) and its TensorBoard mirror,
written by rank 0, and the progress bars."""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Callable

from relate_fast.checkpoint import atomic_write_text

__all__ = ["MetricsLog", "progress_bar"]


def progress_bar(it, enabled: bool, **kw):
    """`it` with a tqdm bar on stderr when `enabled` (run.progress, on rank 0), else `it` itself."""
    if not enabled:
        return it
    from tqdm import tqdm

    return tqdm(it, file=sys.stderr, dynamic_ncols=True, **kw)


class MetricsLog:
    def __init__(self, run_dir: Path, *, rank: int, log: Callable[[str], None]):
        self.run_dir, self.rank, self._log = Path(run_dir), rank, log
        self.path = self.run_dir / "metrics.jsonl"
        self._tb = None  # the TensorBoard writer, made at the first write (False: tensorboard not installed)

    def write(self, m: dict):
        if self.rank != 0:
            return
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(m) + "\n")
            f.flush()
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                self._tb = False
        if self._tb:
            for k, v in m.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, m["step"])
            self._tb.flush()

    def read(self) -> list:
        """The steps written so far (rank 0; empty elsewhere or before the first)."""
        if self.rank != 0 or not self.path.is_file():
            return []
        from relate_fast.plots import read_metrics

        return read_metrics(self.path)

    def plot(self, out: Path):
        """The reward curves (relate_fast.plots) into `out`; nothing without a GRPO step or matplotlib."""
        if self.rank != 0 or not self.path.is_file():
            return
        from relate_fast.plots import plot_rewards

        try:
            plot_rewards(self.path, out)
        except ImportError as e:  # matplotlib, imported by the plot itself
            self._log(f"plots skipped: {e}")

    def truncate(self, step: int):
        """Keeps the lines of steps <= `step`. A partial last line (what a crash mid-write leaves) is cut;
        a malformed line elsewhere is an error naming the file and line."""
        path = self.path
        if self.rank != 0 or not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").split("\n")
        complete = lines[:-1]  # the text after the last newline is never a complete line
        if lines[-1].strip():
            self._log(f"{path}: cutting a partial last line ({len(lines[-1])} characters)")
        keep = []
        for i, line in enumerate(complete, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg}, column {e.colno})") from None
            if row["step"] <= step:
                keep.append(line)
        atomic_write_text(path, "".join(l + "\n" for l in keep))  # fsyncs the file and its folder
