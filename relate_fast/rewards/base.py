"""The reward registry: small pure components, each declaring its granularity.

A component is a function ``fn(batch, ctx, **params)`` registered under a name:

- granularity "sentence": returns a float array [B], one value per response;
- granularity "token": returns a list of B float32 arrays, one value per completion token
  (already signed and scaled: RELATE's r_tok = -λ·mask).

`batch` is a :class:`RolloutBatch` (prompts, decoded texts, token ids); `ctx` is a
:class:`RewardContext` holding the shared, stateful resources (blacklist, token aligner, the n-gram
window, the embedding model, the CTCVR model, the judge). Components never hold state themselves, so
a preset is just a list of (name, weight, params) and the same function serves training and
evaluation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, Optional, Sequence

import numpy as np

from relate_fast.rollout.batch import RolloutBatch  # what a component scores (defined with the rollouts)

__all__ = ["RolloutBatch", "Component", "COMPONENTS", "register_component", "get_component",
           "require_finite"]

SENTENCE, TOKEN = "sentence", "token"


@dataclass(frozen=True)
class Component:
    name: str
    granularity: str
    fn: Callable
    help: str
    needs: tuple = ()  # RewardContext resources it uses (for error messages and lazy loading)


COMPONENTS: Dict[str, Component] = {}


def register_component(name: str, granularity: str, *, needs: Sequence[str] = ()):
    """Decorator: registers ``fn(batch, ctx, **params)`` under `name`; the docstring's first line is its help."""
    if granularity not in (SENTENCE, TOKEN):
        raise ValueError(f"granularity must be {SENTENCE!r} or {TOKEN!r}, got {granularity!r}")

    def deco(fn):
        if name in COMPONENTS:
            raise ValueError(f"reward component {name!r} is already registered")
        doc = (fn.__doc__ or "").strip().splitlines()
        COMPONENTS[name] = Component(name, granularity, fn, doc[0] if doc else "", tuple(needs))
        return fn

    return deco


def get_component(name: str) -> Component:
    try:
        return COMPONENTS[name]
    except KeyError:
        raise ValueError(f"unknown reward component {name!r}; known: {sorted(COMPONENTS)}") from None


def require_finite(name: str, values) -> None:
    """A NaN or inf from a component is an error naming it (it would poison every advantage)."""
    arrays = values if isinstance(values, list) else [values]
    for i, a in enumerate(arrays):
        a = np.asarray(a)
        if not np.all(np.isfinite(a)):
            bad = np.flatnonzero(~np.isfinite(a.ravel()))[0]
            where = f"response {i}, token {bad}" if isinstance(values, list) else f"response {bad}"
            raise FloatingPointError(f"reward component {name!r} returned a non-finite value "
                                     f"({a.ravel()[bad]}) at {where}")
