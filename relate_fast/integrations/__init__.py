"""Use relate_fast's fused loss and matcher inside other GRPO stacks.

- ``relate_fast.integrations.trl``: ``RelateGRPOTrainer``, TRL's GRPOTrainer with the fused loss
  and token-level rewards (needs trl).
"""
