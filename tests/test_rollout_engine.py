"""The rollout-engine protocol every engine shares (relate_fast.rollout.base): the weights are pushed in
one place, `ensure_weights`, and only when the engine's are not the policy's."""
import pytest

from relate_fast.rollout.base import RolloutEngine
from relate_fast.rollout.hf import HFEngine


class Counting(RolloutEngine):
    def __init__(self, needs_weights=False):
        self.needs_weights, self.pushed = needs_weights, []

    def push_weights(self, model):
        self.pushed.append(model)


def test_ensure_weights_pushes_only_stale_weights_once():
    e = Counting()
    assert not e.ensure_weights("m0") and e.pushed == []  # current: nothing to copy
    e.mark_stale()
    assert e.ensure_weights("m1") and e.pushed == ["m1"] and not e.needs_weights
    assert not e.ensure_weights("m1") and e.pushed == ["m1"]
    fresh = Counting(needs_weights=True)  # dummy weights, or discarded by sleep
    assert fresh.ensure_weights("m2") and fresh.pushed == ["m2"]


def test_hf_engine_samples_from_the_module_it_was_given_last():
    e = HFEngine("policy", tokenizer=None)
    assert not e.ensure_weights("other") and e.model == "policy"
    e.mark_stale()
    assert e.ensure_weights("other") and e.model == "other"


def test_hf_engine_with_its_own_copy_samples_the_pushed_weights_only(tmp_path):
    """rollout.overlap thread: HF generate samples from its own copy of the policy, which the update
    does not touch until the next push (what lets it sample while the policy learns)."""
    import torch

    from relate_fast.data import sample_ads
    from relate_fast.models import prompt_ids

    _, model, tok = _tiny(tmp_path)
    e = HFEngine(model, tok, own_copy=True)
    assert e.needs_weights and e.model is None
    with pytest.raises(RuntimeError, match="own copy of the policy"):
        e.generate([[1, 2]], 1, max_new_tokens=2, temperature=1.0)
    assert e.ensure_weights(model) and e.model is not model
    prompts = [prompt_ids(tok, r.prompt) for r in sample_ads("train", langs=["en"])[:2]]
    kw = dict(max_new_tokens=6, temperature=1.0, seed=5)
    before = e.generate(prompts, 2, **kw)
    with torch.no_grad():  # "an update" of the policy: the engine's copy keeps the old weights
        for p in model.parameters():
            p.add_(torch.randn_like(p))
    assert e.generate(prompts, 2, **kw) == before
    e.mark_stale()
    e.ensure_weights(model)
    assert all(torch.equal(a, b) for a, b in zip(e.model.parameters(), model.parameters()))
    assert e.generate(prompts, 2, **kw) == HFEngine(model, tok).generate(prompts, 2, **kw)


def test_background_sampler_returns_results_and_errors_in_order():
    import threading

    from relate_fast.rollout.background import BackgroundSampler

    s = BackgroundSampler()
    with pytest.raises(RuntimeError, match="nothing was submitted"):
        s.result()
    main = threading.get_ident()
    s.submit(lambda: threading.get_ident())
    with pytest.raises(RuntimeError, match="not collected"):
        s.submit(lambda: 0)
    assert s.result() != main and not s.busy  # it ran in the worker thread

    def fails():
        raise ValueError("engine broke")

    s.submit(fails)
    with pytest.raises(ValueError, match="engine broke"):
        s.result()
    s.submit(lambda: 1)
    s.close()  # waits for the running sample
    assert not s.busy


def _tiny(tmp_path):
    from relate_fast.config import TinyModelConfig
    from relate_fast.models import build_tiny_model, load_policy

    folder = build_tiny_model(TinyModelConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                              num_attention_heads=2, num_key_value_heads=1, head_dim=32), tmp_path)
    return folder, *load_policy(folder)


def _trainer_logprobs(model, prompt, completion, temperature):
    import torch

    ids = torch.tensor([list(prompt) + list(completion)])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0].float() / temperature
    lp = torch.log_softmax(logits, dim=-1)
    P = len(prompt)
    return [lp[P - 1 + t, tok].item() for t, tok in enumerate(completion)]


def _check_sampler_logprobs(engine, model, tok, temperature, tol):
    from relate_fast.data import sample_ads
    from relate_fast.models import prompt_ids

    prompts = [prompt_ids(tok, r.prompt) for r in sample_ads("train", langs=["en"])[:2]]
    comps = engine.generate(prompts, 2, max_new_tokens=6, temperature=temperature, seed=3, logprobs=True)
    lps = engine.last_logprobs
    assert [[len(c) for c in g] for g in comps] == [[len(x) for x in g] for g in lps]
    worst = max(abs(a - b) for p, g, lg in zip(prompts, comps, lps) for c, lc in zip(g, lg)
                for a, b in zip(lc, _trainer_logprobs(model, p, c, temperature)))
    assert worst < tol, worst
    engine.generate(prompts, 1, max_new_tokens=2, temperature=temperature, seed=3)
    assert engine.last_logprobs is None  # only when asked


def test_hf_engine_returns_the_log_probs_it_sampled_from(tmp_path):
    """The sampled tokens' log-probs (the behaviour policy of the importance-weighted loss) equal the
    trainer's at the same temperature: the same module, so only float noise apart."""
    _, model, tok = _tiny(tmp_path)
    _check_sampler_logprobs(HFEngine(model, tok), model, tok, temperature=0.7, tol=1e-4)


def _vllm_logprobs_check(tmp):  # in a process of its own: an in-process vLLM leaves torch.distributed behind
    from pathlib import Path

    from relate_fast.rollout.vllm_engine import VLLMEngine

    folder, model, tok = _tiny(Path(tmp))
    engine = VLLMEngine(folder, tok, dtype="float32", max_model_len=512, kv_cache_gb=0.1)
    _check_sampler_logprobs(engine, model, tok, temperature=0.7, tol=1e-3)


def test_vllm_engine_returns_the_log_probs_it_sampled_from(tmp_path):
    """vLLM's processed log-probs of its samples against the trainer's: another implementation of the
    same weights (on the CPU: fp32), so within a small gap."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import pytest

    from relate_fast.rollout import vllm_available

    if not vllm_available():
        pytest.skip("vLLM is not installed")
    root = Path(__file__).resolve().parents[1]
    code = f"from tests.test_rollout_engine import _vllm_logprobs_check; _vllm_logprobs_check({str(tmp_path)!r})"
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=root,
                         env=dict(os.environ, PYTHONPATH=str(root)))
    assert res.returncode == 0, res.stderr[-3000:]


def test_rollout_vllm_own_process_starts_the_engine_core_in_a_process_of_its_own(monkeypatch, tmp_path):
    """rollout.vllm_own_process reaches the engine (make_engine), and the engine's start switches vLLM to its
    multiprocessing mode only for its own start (engine_process); the GPU path (CUDA IPC push) is checked by
    tests/test_gpu_rollout.py."""
    import os

    import relate_fast.rollout as rollout
    from relate_fast.config import RolloutConfig
    from relate_fast.rollout import vllm_engine

    seen = {}
    monkeypatch.setattr(vllm_engine, "VLLMEngine", lambda *a, **kw: seen.update(kw) or "engine")
    monkeypatch.setattr(rollout, "vllm_available", lambda: True)
    for own, expected in ((False, None), (True, True)):
        cfg = RolloutConfig(engine="vllm", vllm_own_process=own)
        assert rollout.make_engine(cfg, model_folder=tmp_path, tokenizer=None, policy=None) == "engine"
        assert seen["own_process"] is expected  # None: VLLM_ENABLE_V1_MULTIPROCESSING decides (off by default)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    with vllm_engine.engine_process(True, cuda=False):
        assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "1"
    assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"
