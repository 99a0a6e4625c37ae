"""Use relate_fast's fused loss and RELATE's token-level rewards inside other GRPO stacks.

- ``relate_fast.integrations.trl``: ``RelateGRPOTrainer``, TRL's GRPOTrainer with the fused loss
  (tested against trl 1.16.0's own loss: equal loss and gradients).
- ``relate_fast.integrations.verl``: the policy loss "relate" and the advantage estimator
  "relate_grpo" for verl's registries (written against verl 0.9.1).
- ``relate_fast.integrations.openrlhf``: ``FusedPolicyLoss``, a drop-in for OpenRLHF's PolicyLoss
  that works on hidden states.
"""
