"""Sampling in a background thread while the policy learns (rollout.mode one_step_off, rollout.overlap thread).

    ahead = BackgroundSampler()
    ahead.submit(lambda: step.sample(index + 1, ...))   # returns at once
    ...                                                 # score, update: the main thread's work
    batch = ahead.result()                              # waits for the sample; re-raises its error

Why a thread (and not a process): the engine runs in this process (vLLM in-process, or HF generate
on its own copy of the policy), so the weights are pushed by copying tensors, and both sides see the
same GPU. Most of PyTorch's and vLLM's time is spent in C++ with the GIL released (op dispatch,
CUDA-graph replay, the backward's autograd threads), so the two Python loops interleave.

Streams: vLLM runs each thread that calls it on a CUDA stream of that thread's own
(`vllm.utils.torch_utils.current_stream` makes one per thread), so the sample and the update are
queued on different streams. The main thread's queued work (the last weight push) is finished before a
sample starts, and the sample ends by synchronising its thread's stream, so its results are complete
when `result` returns. (A stream of our own around the sample, on top of vLLM's, ended in an illegal
memory access on the H200: benchmarks/RESULTS.md.)

The GIL: both loops are Python between their kernels. With CPython's default switch interval (5 ms)
a thread that released the GIL for a CUDA call waits up to 5 ms to get it back while the other one
runs Python (the "convoy" effect), and a decode step is ~6 ms. While a sample is in flight the
interval is `GIL_SWITCH_S` (RELATE_FAST_GIL_SWITCH_S; restored after).

The sampled batches are those the inline schedule (rollout.overlap off) samples: the engine holds
its own weights, which change only by a push after `result`, and each request is seeded.
"""
from __future__ import annotations

import os
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional

import torch

__all__ = ["BackgroundSampler", "GIL_SWITCH_S"]

#: the interpreter's switch interval while a sample runs beside the update (CPython's default: 0.005 s)
GIL_SWITCH_S = float(os.environ.get("RELATE_FAST_GIL_SWITCH_S", "0.0002"))


class BackgroundSampler:
    """One sample at a time in one worker thread; `result` hands it back."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relate-sampler")
        self._future: Optional[Future] = None
        self._switch: Optional[float] = None  # the interpreter's switch interval before the sample

    @property
    def busy(self) -> bool:
        return self._future is not None

    def submit(self, fn: Callable[[], object]) -> None:
        if self._future is not None:
            raise RuntimeError("BackgroundSampler.submit: the previous sample was not collected (result())")
        threads = torch.get_num_threads()  # a new thread starts with the library's default count
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.current_stream().synchronize()  # the weights the engine samples with are in place

        def job():
            torch.set_num_threads(threads)
            out = fn()
            if cuda:
                torch.cuda.current_stream().synchronize()
            return out

        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(min(self._switch, GIL_SWITCH_S))
        self._future = self._pool.submit(job)

    def _wait(self) -> Future:
        """The finished sample (waits for it), the switch interval restored."""
        future, self._future = self._future, None
        try:
            future.exception()  # waits; the error, if any, is raised by future.result()
        finally:
            sys.setswitchinterval(self._switch)
        return future

    def result(self):
        """The sample's return value, once it is done (its exception, if it raised)."""
        if self._future is None:
            raise RuntimeError("BackgroundSampler.result: nothing was submitted")
        return self._wait().result()

    def close(self) -> None:
        """Waits for a running sample (an engine cannot be stopped mid-generate), then ends the thread."""
        if self._future is not None:
            self._wait()  # an error there does not matter any more
        self._pool.shutdown(wait=True)
