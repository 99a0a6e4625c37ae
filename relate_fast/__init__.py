"""relate_fast: RELATE (GRPO with a multi-dimensional reward and token-level credit assignment).

``from relate_fast import fused_grpo_loss, fused_logprobs, group_advantages`` imports torch;
``import relate_fast.matcher`` alone does not (reward workers stay light): the loss functions are
loaded on first access.
"""
__version__ = "0.1.0"

_LAZY = {"fused_grpo_loss": "relate_fast.loss", "fused_logprobs": "relate_fast.loss",
         "group_advantages": "relate_fast.loss"}

__all__ = ["__version__", *_LAZY]


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'relate_fast' has no attribute {name!r}")
