"""Triton kernels of relate_fast, installed as ``relate_fast.kernels``: grpo_loss.py (the fused loss's row
kernels), logits_gemm.py (the logits GEMM with its row statistics in the epilogue), launch.py (what a
launch asks of the device, asked once)."""
