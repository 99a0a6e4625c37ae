"""How a setting is declared: a dataclass field with its help text and the values it takes.

    steps: int = setting(40, "GRPO steps.", ge=0, safe=True)
    engine: str = setting("auto", "Rollout engine.", choices=("auto", "vllm", "hf"))

The metadata is read in one place each: `help` by `--help` (config.format_help), `safe_on_resume` by
config.SAFE_CHANGES, `choices` and the bounds by `check_fields`, which runs when a config loads and
names the field in its error. Choices held by a registry elsewhere are given as a function returning
them (looked up when checked, so this module and config.py import no registry at import time).
Constraints between fields stay in config.validate.
"""
from __future__ import annotations

import dataclasses
from dataclasses import field
from typing import Callable, Optional, Sequence, Union

__all__ = ["setting", "check_fields", "choices_of", "describe"]

Choices = Union[Sequence, Callable[[], Sequence], None]


def setting(default, help: str, *, safe: bool = False, choices: Choices = None, ge=None, gt=None, le=None, lt=None):
    """A field with its help text. `safe`: it may change when a run resumes, because it changes how the
    run goes or how long, not what it computes. `choices`: the values allowed (or a function returning
    them). `ge`/`gt`/`le`/`lt`: bounds of a number (None, where the field allows it, is not checked)."""
    meta = {"help": help, "safe_on_resume": safe, "choices": choices, "ge": ge, "gt": gt, "le": le, "lt": lt}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


def choices_of(f: dataclasses.Field) -> Optional[tuple]:
    c = f.metadata.get("choices")
    return tuple(c() if callable(c) else c) if c is not None else None


def _bounds(meta) -> str:
    ge, gt, le, lt = (meta.get(k) for k in ("ge", "gt", "le", "lt"))
    low = f"[{ge}" if ge is not None else f"({gt}" if gt is not None else None
    high = f"{le}]" if le is not None else f"{lt})" if lt is not None else None
    if low and high:
        return f"in {low}, {high}"
    if low:
        return f">= {ge}" if ge is not None else f"> {gt}"
    if high:
        return f"<= {le}" if le is not None else f"< {lt}"
    return ""


def _in_bounds(v, meta) -> bool:
    ge, gt, le, lt = (meta.get(k) for k in ("ge", "gt", "le", "lt"))
    return ((ge is None or v >= ge) and (gt is None or v > gt) and (le is None or v <= le)
            and (lt is None or v < lt))


def describe(f: dataclasses.Field) -> str:
    """The allowed values in words, for --help ('' when any value of the type goes)."""
    c = choices_of(f)
    if c is not None:
        return "one of " + ", ".join(map(str, c))
    return _bounds(f.metadata)


def check_fields(obj, prefix: str = "") -> None:
    """Every field of a dataclass tree against its choices and bounds; the first violation is a
    ValueError naming the dotted field."""
    for f in dataclasses.fields(obj):
        value, key = getattr(obj, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            check_fields(value, key + ".")
            continue
        if value is None:
            continue
        c = choices_of(f)
        if c is not None and value not in c:
            raise ValueError(f"{key}: must be one of {', '.join(map(str, c))}, got {value!r}")
        if _bounds(f.metadata) and not _in_bounds(value, f.metadata):
            raise ValueError(f"{key}: must be {_bounds(f.metadata)}, got {value!r}")
