"""model.auto_checkpointing's memory plan (relate_fast.memory_plan): the fewest checkpointed layers that fit,
the per-rank state sizes, the measured activations and the linear model the plan rests on, the config's
clear errors. (What it predicts against what a GPU measures is recorded per run in memory_plan.json and
summary.json; no GPU here.)"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from relate_fast.memory_plan import (FRAGMENTATION, GIB, activation_bytes_per_token, plan_checkpointing, predicted_peak,
                                     saved_bytes, training_state_bytes)
from relate_fast.models import checkpoint_layers


def _model(layers=4):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    return Qwen3ForCausalLM(cfg).train()


def test_the_plan_is_the_fewest_checkpointed_layers_that_fit():
    L, T, a, h, states = 8, 1000, 100.0, 10.0, 5000.0

    def peak(k):  # the module docstring's formula, written out again (no step peak above the backward's)
        return (1 + FRAGMENTATION) * (states + T * ((L - k) * a + k * h) + (T * a if k else 0))

    assert peak(0) == pytest.approx(1.1 * 805000) and peak(1) == pytest.approx(1.1 * (805000 - 90000 + 100000))
    for budget in [peak(0) + 1, peak(0), peak(0) - 1, peak(3), peak(5) - 1, peak(L), 0.5 * peak(L)]:
        plan = plan_checkpointing(layers=L, tokens=T, activation=a, kept=h, states=states, budget=budget)
        fitting = [k for k in range(L + 1) if peak(k) <= budget]
        assert plan.checkpointed_layers == (fitting[0] if fitting else L), budget
        assert plan.fits == bool(fitting) and plan.predicted_peak == pytest.approx(peak(plan.checkpointed_layers))
        # asked again for a full micro-batch, the same choice; for fewer tokens never more layers
        assert plan.layers_for(T) == plan.checkpointed_layers and plan.layers_for(T // 4) <= plan.checkpointed_layers
    # peak(1) > peak(0) here (the recomputed layer costs more than one layer's savings): never 1 after 0
    assert plan_checkpointing(layers=L, tokens=T, activation=a, kept=h, states=states,
                              budget=peak(0) - 1).checkpointed_layers == 2
    over = plan_checkpointing(layers=L, tokens=T, activation=a, kept=h, states=states, budget=1.0)
    assert not over.fits and "lower grpo.micro_batch_tokens" in over.describe()
    fine = plan_checkpointing(layers=L, tokens=T, activation=a, kept=h, states=states, budget=peak(0),
                              engine=0.0, others=0.0)
    assert fine.describe().startswith("memory plan: no checkpointing for 1000 tokens")
    # the engine and the other processes count against the budget
    assert plan_checkpointing(layers=L, tokens=T, activation=a, kept=h, states=states, budget=peak(0),
                              engine=1.0).checkpointed_layers > 0
    # the optimizer step's own peak (no activations then) is a floor no checkpointing goes under
    step_bound = plan_checkpointing(layers=L, tokens=T, activation=a, kept=h, states=states, budget=peak(0) - 1,
                                    step_states=peak(0) / 1.1 + 1)
    assert step_bound.checkpointed_layers == L and not step_bound.fits
    assert step_bound.predicted_peak == pytest.approx(peak(0) + 1.1)
    # without the allocator's slack (the CPU's plan), the formula's bare sum
    bare = plan_checkpointing(layers=L, tokens=T, activation=a, kept=h, states=states, budget=peak(0), fragmentation=0.0)
    assert bare.checkpointed_layers == 0 and bare.predicted_peak == pytest.approx(peak(0) / 1.1)


def test_a_plan_with_impossible_sizes_is_refused():
    with pytest.raises(ValueError, match="keeps less"):
        plan_checkpointing(layers=2, tokens=10, activation=1.0, kept=2.0, states=0, budget=1e9)
    with pytest.raises(ValueError, match="layers >= 1"):
        plan_checkpointing(layers=0, tokens=10, activation=1.0, kept=1.0, states=0, budget=1e9)
    with pytest.raises(ValueError, match="0..2"):
        predicted_peak(3, layers=2, tokens=1, activation=1.0, kept=1.0, states=0)


def test_state_bytes_per_parameter_follow_zero_sharding():
    P = 1000
    assert training_state_bytes(P, world=1, dtype="bfloat16", zero_stage=2) == (16 * P, 20 * P)
    assert training_state_bytes(P, world=4, dtype="bfloat16", zero_stage=2) == ((2 + 14 / 4) * P, (2 + 18 / 4) * P)
    assert training_state_bytes(P, world=4, dtype="bfloat16", zero_stage=1) == ((4 + 12 / 4) * P, (4 + 16 / 4) * P)
    assert training_state_bytes(P, world=4, dtype="bfloat16", zero_stage=None) == (8 * P, 8 * P)  # torch's AdamW
    assert training_state_bytes(P, world=2, dtype="float32", zero_stage=2) == ((4 + 16 / 2) * P, (4 + 20 / 2) * P)


DS_STATES = r"""
import gc, json, sys, torch
from relate_fast.config import load_config
from relate_fast.distributed import init_distributed
from relate_fast.updater import PolicyUpdater
from transformers import Qwen3Config, Qwen3ForCausalLM

init_distributed()

def live(model=None):  # every tensor storage alive now: the Python-held ones, and the gradients autograd holds
    gc.collect()
    seen = {}
    grads = [p.grad for p in model.parameters()] if model is not None else []
    for t in [o for o in gc.get_objects() if isinstance(o, torch.Tensor)] + grads:
        if t is not None and t.device.type == "cpu":
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
    return sum(seen.values())

def measure(stage, dtype):
    base = live()  # what the process holds besides this case's model and optimizer
    torch.manual_seed(0)
    cfg = load_config(None, (["--deepspeed.enabled", "false"] if stage is None else ["--deepspeed.zero_stage", str(stage)])
                      + ["--model.dtype", dtype, "--deepspeed.reduce_bucket_size", "1000"])
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=500, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, head_dim=16)).to(getattr(torch, dtype))
    up = PolicyUpdater(model.train(), cfg, 1)
    in_step = []
    for owner, name in [(getattr(up.optimizer, "optimizer", up.optimizer), "step"), (up.optimizer, "free_grad_in_param_list")]:
        if hasattr(owner, name):  # DeepSpeed frees the bf16 gradients here, after their fp32 copy is made
            inner = getattr(owner, name)
            setattr(owner, name, lambda *a, inner=inner, **k: (in_step.append(live(model)), inner(*a, **k))[1])
    ids = torch.randint(0, 500, (1, 12))
    for _ in range(2):  # the moments exist from the first step on: measure the second
        in_step.clear()
        loss = up.model(input_ids=ids, labels=ids).loss
        up.backward(loss, True)
        del loss
        backward = live(model)
        up.step()
    return {"params": sum(p.numel() for p in model.parameters()), "backward": backward - base, "step": max(in_step) - base}

print(json.dumps([measure(stage, dtype) for stage, dtype in json.loads(sys.argv[1])]))
"""


def test_state_bytes_match_the_live_tensors_of_a_real_optimizer(tmp_path):
    """The plan's state sizes against every tensor alive on one rank, after a backward and at the step's
    peak, in DeepSpeed's ZeRO optimizers (and torch's AdamW without DeepSpeed): within the reduce bucket."""
    pytest.importorskip("deepspeed")
    script = tmp_path / "states.py"
    script.write_text(DS_STATES)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None)
    cases = [(2, "bfloat16"), (1, "float32"), (None, "bfloat16")]  # one process: DeepSpeed's import once
    res = subprocess.run([sys.executable, str(script), json.dumps(cases)], env=env, capture_output=True, text=True,
                         timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    for (stage, dtype), got in zip(cases, json.loads(res.stdout.strip().splitlines()[-1])):
        backward, step = training_state_bytes(got["params"], world=1, dtype=dtype, zero_stage=stage)
        assert got["backward"] == pytest.approx(backward, rel=0.03), (stage, dtype)
        assert got["step"] == pytest.approx(step, rel=0.03), (stage, dtype)


def _saved_bytes(model, tokens):
    """What autograd keeps from a whole causal-LM forward (logits included), not the plan's trunk probe."""
    ids = torch.randint(0, 61, (1, tokens), generator=torch.Generator().manual_seed(2))
    return saved_bytes(model, lambda: model(input_ids=ids, use_cache=False))


def test_activations_are_measured_per_token_and_layer_and_checkpointing_removes_a_layers_share():
    model = _model(layers=4)
    a = activation_bytes_per_token(model, 24)
    assert a == pytest.approx(activation_bytes_per_token(model, 48), rel=0.02)  # linear in the tokens
    assert a > model.config.hidden_size * 4  # far more than the layer's input, which a checkpointed layer keeps
    assert not any(getattr(l, "gradient_checkpointing", False) for l in model.model.layers)  # flags restored
    # the plan's linear model: each checkpointed layer frees one layer's activations (its input is kept by
    # the checkpoint, which this count does not see), whichever layers checkpoint_layers picks
    T = 40
    plain = _saved_bytes(model, T)
    for k in (1, 2, 4):
        checkpoint_layers(model, k)
        assert plain - _saved_bytes(model, T) == pytest.approx(k * a * T, rel=0.01), k
    checkpoint_layers(model, 0)


def test_auto_checkpointing_errors_name_the_field(monkeypatch):
    from relate_fast.config import load_config
    from relate_fast.preflight import check_inputs

    with pytest.raises(ValueError, match="model.checkpoint_layers.*auto_checkpointing"):
        load_config(None, ["--model.auto_checkpointing", "true", "--model.gradient_checkpointing", "true",
                           "--model.checkpoint_layers", "2"])
    with pytest.raises(ValueError, match="model.memory_budget_gib.*off"):
        load_config(None, ["--model.memory_budget_gib", "40"])
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="model.auto_checkpointing.*model.memory_budget_gib"):
        check_inputs(load_config(None, ["--model.auto_checkpointing", "true"]))
    cfg = load_config(None, ["--model.auto_checkpointing", "true", "--model.memory_budget_gib", "0.5"])
    assert cfg.model.memory_budget_gib * GIB == 0.5 * 2 ** 30
