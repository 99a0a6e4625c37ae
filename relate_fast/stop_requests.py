"""Ctrl-C and SIGTERM during training: finish the step, checkpoint, stop (a second Ctrl-C stops at once)."""
from __future__ import annotations

import signal
import threading

__all__ = ["StopRequests"]


class StopRequests:
    """SIGINT (Ctrl-C) or SIGTERM during GRPO: the first one lets the current step finish and a
    checkpoint be written; a second SIGINT stops at once (the last complete checkpoint is kept:
    checkpoints are written atomically)."""

    def __init__(self, log):
        self.count, self._log, self._old = 0, log, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.count += 1
        if self.count == 1:
            self._log(f"{signal.Signals(signum).name}: finishing this GRPO step, then writing a checkpoint "
                      f"(Ctrl-C again stops at once; the last checkpoint is kept)")
        else:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False
