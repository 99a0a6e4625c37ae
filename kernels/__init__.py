"""Triton kernels of relate_fast, installed as ``relate_fast.kernels`` (issue 3 adds them)."""
