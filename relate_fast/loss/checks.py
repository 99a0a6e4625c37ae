"""Argument checks at the boundary of the fused loss: each error names the argument and what is wrong."""
from __future__ import annotations

import torch

__all__ = ["check_tensor", "check_target_range", "non_finite_on_mask", "check_finite_on_mask"]


def check_tensor(x, name, *, dims=None, shape=None, floating=None, device=None):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if dims is not None and x.dim() not in dims:
        raise ValueError(f"{name} must have {' or '.join(map(str, dims))} dimensions, got shape {tuple(x.shape)}")
    if shape is not None and tuple(x.shape) != tuple(shape):
        raise ValueError(f"{name} must have shape {tuple(shape)}, got {tuple(x.shape)}")
    if floating is True and not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if floating is False and (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool):
        raise TypeError(f"{name} must be an integer tensor, got dtype {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device}, expected {device} (the device of hidden)")


def check_target_range(targets, V):
    # CPU only: on a GPU this check would cost a host sync per call (an out-of-range id there
    # fails in the gather instead).
    if targets.device.type == "cpu" and targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= V):
        raise ValueError(f"targets must lie in [0, {V}) (the rows of weight)")


def non_finite_on_mask(mask, **tensors):
    """(name, row, position) of the first named tensor with a NaN/inf where mask != 0, else None.
    Tensors are [B, T] or [B] (one value per row); None entries are skipped. One host sync."""
    counted = mask != 0
    present = [(name, x if x.dim() == 2 else x[:, None].expand_as(mask)) for name, x in tensors.items() if x is not None]
    if not present:
        return None
    bad = [(~torch.isfinite(x)) & counted for _, x in present]
    for (name, _), b, any_bad in zip(present, bad, torch.stack([b.any() for b in bad]).tolist()):
        if any_bad:
            row, pos = b.nonzero()[0].tolist()
            return name, row, pos
    return None


def check_finite_on_mask(mask, **tensors):
    found = non_finite_on_mask(mask, **tensors)
    if found is not None:
        name, row, pos = found
        raise ValueError(f"{name} has a non-finite value on a counted token (row {row}, position {pos})")
