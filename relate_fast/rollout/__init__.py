"""Rollout engines behind one interface: vLLM (in-process, weights pushed in place) and HF generate.

    engine = make_engine(cfg.rollout, model_folder=..., tokenizer=tok, policy=model)
    completions = engine.generate(prompt_ids, n=G, max_new_tokens=64, temperature=1.0, top_p=1.0, seed=s)
    engine.push_weights(model)       # after every update (a no-op for HF generate on the policy itself)
"""
from relate_fast.rollout.base import RolloutEngine, make_engine  # noqa: F401
