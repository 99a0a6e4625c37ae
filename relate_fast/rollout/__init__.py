"""Rollout engines behind one interface: vLLM (in-process, weights pushed in place) and HF generate.

    engine = make_engine(cfg.rollout, model_folder=..., tokenizer=tok, policy=model)
    completions = engine.generate(prompt_ids, n=G, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=s)
    engine.mark_stale()              # after every update or restore: the policy's weights changed
    engine.ensure_weights(model)     # pushes them when the engine's are not the policy's (HF: nothing to copy)
"""
from relate_fast.rollout.base import RolloutEngine, make_engine  # noqa: F401
