"""relate_fast: RELATE (GRPO with a multi-dimensional reward and token-level credit assignment).

Submodules import lazily so that ``import relate_fast.matcher`` in a reward worker does not pull
in torch.
"""
__version__ = "0.1.0"

__all__ = ["__version__"]
