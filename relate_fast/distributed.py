"""The few collective operations the trainer needs, in one place (one process per GPU, torchrun).

Every function works with a world of one (no process group needed beyond the one DeepSpeed wants),
so the single-process CPU default and `torchrun --nproc_per_node N` take the same code path.
"""
from __future__ import annotations

import os
from typing import Any, List

import torch

__all__ = ["init_distributed", "device", "barrier", "all_ranks_true", "max_over_ranks", "all_gather_objects", "replicas_identical"]


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


def device() -> torch.device:
    """This rank's device: its GPU under torchrun (LOCAL_RANK), else the CPU."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


def _world() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_initialized() else 1


def barrier() -> None:
    import torch.distributed as dist

    if _world() > 1:
        dist.barrier()


def all_ranks_true(ok) -> bool:
    """True when `ok` holds on every rank. `ok` may be a bool or a 0-d bool tensor on this rank's
    device (then the only host sync is this call's)."""
    import torch.distributed as dist

    t = torch.as_tensor(ok, device=device()).reshape(1).to(torch.int32)
    bad = 1 - t
    if _world() > 1:
        dist.all_reduce(bad, op=dist.ReduceOp.MAX)
    return bool(bad.item() == 0)


def max_over_ranks(n: int) -> int:
    """The largest of every rank's integer `n` (one host sync; `n` itself without a process group)."""
    import torch.distributed as dist

    if _world() == 1:
        return int(n)
    t = torch.tensor([int(n)], dtype=torch.int64, device=device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def all_gather_objects(obj: Any) -> List[Any]:
    """[obj of rank 0, obj of rank 1, ...] (picklable objects; a list of one without a process group)."""
    import torch.distributed as dist

    if _world() == 1:
        return [obj]
    parts: List[Any] = [None] * _world()
    dist.all_gather_object(parts, obj)
    return parts


def replicas_identical(module: torch.nn.Module) -> tuple:
    """(identical, lo, hi): whether every rank holds the same parameters, by a float64 checksum
    compared across ranks (min and max of the per-rank sums)."""
    import torch.distributed as dist

    with torch.no_grad():
        s = torch.stack([p.detach().double().sum() for p in module.parameters()]).sum().reshape(1).to(device())
        lo, hi = s.clone(), s.clone()
        if _world() > 1:
            dist.all_reduce(lo, op=dist.ReduceOp.MIN)
            dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    return lo.item() == hi.item(), lo.item(), hi.item()
