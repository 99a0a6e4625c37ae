"""Argument checks shared by the matcher's modules."""
from __future__ import annotations

from typing import List

def _check_num_threads(num_threads) -> int:
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 0:
        raise ValueError(f"num_threads must be an int >= 0 (0 = all cores), got {num_threads!r}")
    return num_threads


def _str_list(values, name: str) -> List[str]:
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{name} must be a sequence of str, not a single {type(values).__name__}")
    try:
        values = list(values)
    except TypeError:
        raise TypeError(f"{name} must be a sequence of str, got {type(values).__name__}") from None
    for i, v in enumerate(values):
        if not isinstance(v, str):
            raise TypeError(f"{name}[{i}] must be str, got {type(v).__name__}: {v!r}")
        if not v:
            raise ValueError(f"{name}[{i}] is an empty string")
    return values
