"""The few collective operations the trainer needs, in one place (one process per GPU, torchrun).

Every function works with a world of one (no process group needed beyond the one DeepSpeed wants),
so the single-process CPU default and `torchrun --nproc_per_node N` take the same code path.

With ranks that only sample (rollout.sampler_ranks, `relate_fast.rollout.split`), the collectives of
training run among the training ranks only: `use_group` points every function here at their group
(`job_size` still counts every process of the job).
"""
from __future__ import annotations

import os
from typing import Any, List

import torch

__all__ = ["init_distributed", "close_split_job", "device", "barrier", "all_ranks_true", "max_over_ranks", "all_gather_objects",
           "replicas_identical", "all_reduce", "use_group", "training_group", "TrainingRanks", "job_size"]

_GROUP = None  # the process group of the training ranks (None: every rank of the job trains)
_OWN = None  # a process group of this rank alone (DeepSpeed's model-parallel group when _GROUP is set)


def use_group(group, own=None) -> None:
    """Runs this module's collectives within `group` from now on (None: the whole job); `own` is a
    group of this rank alone."""
    global _GROUP, _OWN
    _GROUP, _OWN = group, own


class TrainingRanks:
    """DeepSpeed's `mpu` when only some ranks train: data parallelism over their group, no model
    parallelism (each rank its own model-parallel group)."""

    def get_data_parallel_group(self):
        return _GROUP

    def get_data_parallel_world_size(self) -> int:
        import torch.distributed as dist

        return dist.get_world_size(_GROUP)

    def get_data_parallel_rank(self) -> int:
        import torch.distributed as dist

        return dist.get_rank(_GROUP)

    def get_data_parallel_group_ranks(self):
        import torch.distributed as dist

        return dist.get_process_group_ranks(_GROUP)

    def get_model_parallel_group(self):
        return _OWN

    def get_model_parallel_world_size(self) -> int:
        return 1

    def get_model_parallel_rank(self) -> int:
        return 0


def training_group():
    """The process group the training collectives use (None: the default group, every rank)."""
    return _GROUP


def init_distributed():
    """torch.distributed from torchrun's environment, or a one-process group (DeepSpeed needs one).
    Returns (rank, world size)."""
    import torch.distributed as dist

    if dist.is_initialized():  # e.g. by an in-process vLLM engine; DeepSpeed still reads LOCAL_RANK
        os.environ.setdefault("LOCAL_RANK", "0" if dist.get_world_size() == 1 else str(dist.get_rank()))
        return dist.get_rank(), dist.get_world_size()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if "RANK" not in os.environ:
        # one process: an in-memory store, no port, and no launcher variables left in os.environ (a
        # subprocess started later, a benchmark or a second run, would take them for a torchrun job's
        # and join this process's port); DeepSpeed reads LOCAL_RANK only
        os.environ.setdefault("LOCAL_RANK", "0")
        if torch.cuda.is_available():
            torch.cuda.set_device(0)
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)
        return 0, 1
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def close_split_job() -> None:
    """The process groups of a job with sampling ranks (rollout.sampler_ranks) destroyed before the
    interpreter exits, on every rank as it finishes. Left to the interpreter's teardown, gloo's worker
    threads can still hold finished work whose tensors need the GIL then, and the process dies with
    SIGABRT ("terminate called without an active exception"; pytorch/pytorch#190489, #179291): seen on
    a sampling rank that left while the trainers were still saving (in CI, and in 1 of 22 launches on
    2 CPU cores here; none in 16 since).
    Only split jobs: their ranks end at different times by design, and their process is torchrun's
    (a caller that runs main() again in-process keeps its group, which DeepSpeed has cached)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
        use_group(None)


def device() -> torch.device:
    """This rank's device: its GPU under torchrun (LOCAL_RANK), else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size(_GROUP) if dist.is_initialized() else 1


def job_size() -> int:
    """Every process of the job, sampling ranks included (what a per-GPU rate divides by)."""
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_initialized() else 1


def all_reduce(t: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """`t` reduced in place over the training ranks (sum or max); `t` itself without a process group."""
    import torch.distributed as dist

    if _world() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX, group=_GROUP)
    return t


def barrier() -> None:
    import torch.distributed as dist

    if _world() > 1:
        dist.barrier(group=_GROUP)


def all_ranks_true(ok) -> bool:
    """True when `ok` holds on every rank. `ok` may be a bool or a 0-d bool tensor on this rank's
    device (then the only host sync is this call's)."""
    import torch.distributed as dist

    t = torch.as_tensor(ok, device=device()).reshape(1).to(torch.int32)
    bad = 1 - t
    if _world() > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX, group=_GROUP)
    return bool(bad.item() == 0)


def max_over_ranks(n: int) -> int:
    """The largest of every rank's integer `n` (one host sync; `n` itself without a process group)."""
    import torch.distributed as dist

    if _world() == 1:
        return int(n)
    t = torch.tensor([int(n)], dtype=torch.int64, device=device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_GROUP)
    return int(t.item())


def all_gather_objects(obj: Any) -> List[Any]:
    """[obj of rank 0, obj of rank 1, ...] (picklable objects; a list of one without a process group)."""
    import torch.distributed as dist

    if _world() == 1:
        return [obj]
    parts: List[Any] = [None] * _world()
    dist.all_gather_object(parts, obj, group=_GROUP)
    return parts


def replicas_identical(module: torch.nn.Module) -> tuple:
    """(identical, lo, hi): whether every rank holds the same parameters, by a float64 checksum
    compared across ranks (min and max of the per-rank sums)."""
    import torch.distributed as dist

    with torch.no_grad():
        s = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1).to(device())
        lo, hi = s.clone(), s.clone()
        if _world() > 1:
            dist.all_reduce(lo, op=dist.ReduceOp.MIN, group=_GROUP)
            dist.all_reduce(hi, op=dist.ReduceOp.MAX, group=_GROUP)
    return lo.item() == hi.item(), lo.item(), hi.item()
