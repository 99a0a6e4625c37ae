"""Which prompts each GRPO step samples on each rank, and their token ids.

Every epoch is a seeded permutation of the training prompts; a step takes the next
`prompts_per_step × world` of it, strided over the ranks (rank r takes positions r, r + world, ...),
so no prompt's group is split across ranks and a resumed run samples exactly what the uninterrupted
one would have.
"""
from __future__ import annotations

import random
from typing import Dict, List, Sequence

from relate_fast.data.ads import AdPrompt

__all__ = ["PromptSchedule"]


class PromptSchedule:
    def __init__(self, rows: Sequence[AdPrompt], tokenizer, *, prompts_per_step: int, seed: int, rank: int = 0,
                 world: int = 1, max_prompt_tokens: int):
        self.rows, self.tok = list(rows), tokenizer
        self.per_rank, self.seed, self.rank, self.world = prompts_per_step, seed, rank, world
        self.max_prompt_tokens = max_prompt_tokens
        self._ids: Dict[str, List[int]] = {}

    def step_rows(self, step: int) -> List[AdPrompt]:
        """This rank's prompts of GRPO step `step` (0-based)."""
        n, per_step = len(self.rows), self.per_rank * self.world
        out = []
        for k in range(self.per_rank):
            epoch, i = divmod(step * per_step + k * self.world + self.rank, n)
            perm = random.Random(self.seed * 1_000_003 + epoch).sample(range(n), n)
            out.append(self.rows[perm[i]])
        return out

    def ids(self, row: AdPrompt) -> List[int]:
        """The prompt's token ids under the policy's chat template (cached); too long is an error."""
        ids = self._ids.get(row.id)
        if ids is None:
            from relate_fast.models import prompt_ids

            ids = prompt_ids(self.tok, row.prompt)
            if len(ids) > self.max_prompt_tokens:
                raise ValueError(f"prompt {row.id}: {len(ids)} tokens > data.max_prompt_tokens "
                                 f"({self.max_prompt_tokens})")
            self._ids[row.id] = ids
        return ids
