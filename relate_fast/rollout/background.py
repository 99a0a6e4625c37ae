"""Sampling in a background thread while the policy learns (rollout.mode one_step_off, rollout.overlap thread).

    ahead = BackgroundSampler()
    ahead.submit(lambda: step.sample(index + 1, ...))   # returns at once
    ...                                                 # score, update: the main thread's work
    batch = ahead.result()                              # waits for the sample; re-raises its error

Why a thread (and not a process): the engine runs in this process (vLLM in-process, or HF generate
on its own copy of the policy), so the weights are pushed by copying tensors, and both sides see the
same GPU. Most of PyTorch's and vLLM's time is spent in C++ with the GIL released (op dispatch,
CUDA-graph replay, the backward's autograd threads), so the two Python loops interleave.

Why its own CUDA stream: work queued from two threads on the same stream runs one kernel after the
other, which is the alternation this exists to remove. The sampler's stream first waits for what the
main thread had queued when the sample was submitted (the last weight push), and the sample ends by
synchronising its stream, so its results are complete when `result` returns.

The sampled batches are those the inline schedule (rollout.overlap off) samples: the engine holds
its own weights, which change only by a push after `result`, and each request is seeded.
"""
from __future__ import annotations

import os
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Optional

import torch

__all__ = ["BackgroundSampler"]


class BackgroundSampler:
    """One sample at a time in one worker thread; `result` hands it back."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="relate-sampler")
        self._future: Optional[Future] = None
        # RELATE_FAST_SAMPLER_STREAM=0: the thread queues on the default stream (a diagnostic switch)
        own = os.environ.get("RELATE_FAST_SAMPLER_STREAM", "1") != "0"
        self._stream = torch.cuda.Stream() if torch.cuda.is_available() and own else None

    @property
    def busy(self) -> bool:
        return self._future is not None

    def submit(self, fn: Callable[[], object]) -> None:
        if self._future is not None:
            raise RuntimeError("BackgroundSampler.submit: the previous sample was not collected (result())")
        threads = torch.get_num_threads()  # a new thread starts with the library's default count
        ready = None
        if self._stream is not None:
            ready = torch.cuda.Event()
            ready.record()  # on the main thread's stream: the weights the engine samples with are in place

        def job():
            torch.set_num_threads(threads)
            if self._stream is None:
                return fn()
            self._stream.wait_event(ready)
            with torch.cuda.stream(self._stream):
                out = fn()
            self._stream.synchronize()
            return out

        self._future = self._pool.submit(job)

    def result(self):
        """The sample's return value, once it is done (its exception, if it raised)."""
        if self._future is None:
            raise RuntimeError("BackgroundSampler.result: nothing was submitted")
        future, self._future = self._future, None
        return future.result()

    def close(self) -> None:
        """Waits for a running sample (an engine cannot be stopped mid-generate), then ends the thread."""
        if self._future is not None:
            self._future.exception()  # wait; an error there does not matter any more
            self._future = None
        self._pool.shutdown(wait=True)
