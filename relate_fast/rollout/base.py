"""The rollout-engine interface every engine implements (the factory is `relate_fast.rollout.make_engine`)."""
from __future__ import annotations

from typing import List, Sequence

__all__ = ["RolloutEngine"]


class RolloutEngine:
    """Samples `n` completions per prompt. Completions are token ids, EOS included when the model
    stopped (it is a token the policy chose, so the loss trains it); nothing is re-tokenized."""

    name = "base"

    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, *, max_new_tokens: int, temperature: float,
                 top_p: float = 1.0, seed: int = 0, logprobs: bool = False) -> List[List[List[int]]]:
        """`logprobs`: also keep, in `last_logprobs` (the completions' nesting, one float per token), each
        sampled token's log-prob under the distribution it was sampled from (after temperature and
        top-p): the behaviour policy of an importance-weighted loss."""
        raise NotImplementedError

    #: the sampled tokens' log-probs of the last `generate(..., logprobs=True)`, else None
    last_logprobs = None

    #: True while the engine's weights are not the policy's: dummy weights, discarded by sleep, or the
    #: policy changed since the last push (`mark_stale`)
    needs_weights = False
    #: seconds of the last `generate`'s parts, where the engine measures them (vLLM: wake, generate, sleep)
    timings: dict = {}

    def mark_stale(self) -> None:
        """The policy's weights changed (an update, a restored checkpoint): the next `ensure_weights` pushes."""
        self.needs_weights = True

    def ensure_weights(self, model) -> bool:
        """Makes the engine sample from `model`'s current weights, pushing them only when its own are not
        (the one place that pushes). Returns whether it pushed."""
        if not self.needs_weights:
            return False
        self.push_weights(model)
        self.needs_weights = False
        return True

    def push_weights(self, model) -> None:
        """Copies `model`'s current weights into the engine (engines implement it; callers use
        `ensure_weights`)."""
        raise NotImplementedError

    def close(self) -> None:
        pass
