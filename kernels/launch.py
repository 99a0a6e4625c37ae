"""What the kernels ask of the device before a launch, asked once: its SM count, its compute
capability, the launch options a CUDA launch takes (the interpreter takes none), and whether the
Triton interpreter runs the kernels (TRITON_INTERPRET=1: on CPU tensors, how CI tests them)."""
from __future__ import annotations

import functools
import os

import torch

__all__ = ["sm_count", "capability", "launch_opts", "interpreting"]


@functools.lru_cache(maxsize=None)
def sm_count(device: torch.device) -> int:
    """The GPU's SM count, cached: uncached it is 10-20 us of CPU on every launch that asks."""
    return torch.cuda.get_device_properties(device).multi_processor_count


@functools.lru_cache(maxsize=None)
def capability(device: torch.device):
    """(major, minor), cached: asked on every loss call, before the GPU has work."""
    return torch.cuda.get_device_capability(device)


def launch_opts(dev: torch.device, num_warps) -> dict:
    """num_warps for a CUDA launch (default 8); nothing under the interpreter."""
    return {"num_warps": num_warps or 8} if dev.type == "cuda" else {}


def interpreting() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
