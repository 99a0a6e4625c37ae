"""A rollout batch: B responses with the prompts they answer, as the reward function scores them.

The trainer builds one per step from the engine's completions (relate_fast.step); other stacks build
one from their own rollouts to call relate_fast.rewards.RewardFunction.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

__all__ = ["RolloutBatch"]


@dataclass
class RolloutBatch:
    """B responses: ``prompts[i]`` is the AdPrompt response i answers (repeated G times per group)."""

    prompts: Sequence  # [B] AdPrompt
    texts: Sequence[str]  # [B] decoded completions
    token_ids: Optional[Sequence[Sequence[int]]] = None  # [B] completion token ids (token components)
    group_size: int = 1

    def __post_init__(self):
        if len(self.prompts) != len(self.texts):
            raise ValueError(f"RolloutBatch: {len(self.prompts)} prompts but {len(self.texts)} texts")
        for i, t in enumerate(self.texts):
            if not isinstance(t, str):
                raise TypeError(f"RolloutBatch.texts[{i}] must be str, got {type(t).__name__}")
        if self.token_ids is not None and len(self.token_ids) != len(self.texts):
            raise ValueError(f"RolloutBatch: {len(self.token_ids)} token-id sequences but {len(self.texts)} texts")
        if not isinstance(self.group_size, int) or self.group_size < 1 or len(self.texts) % self.group_size:
            raise ValueError(f"RolloutBatch: group_size {self.group_size!r} must be an int >= 1 dividing "
                             f"the batch size {len(self.texts)}")

    def __len__(self) -> int:
        return len(self.texts)
