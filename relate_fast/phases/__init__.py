"""The phases the trainer runs before GRPO, each in its own module and each resumable by the trainer
(a finished phase is recorded in the run's state and skipped on resume):

- `cold_start`: supervised fine-tuning on the reference ads (the reference policy of the KL term);
- `ctcvr`: the CTCVR reward model trained on click-simulator logs.

The GRPO phase itself is `relate_fast.step` (one step) driven by `relate_fast.trainer.Trainer`.
"""
