"""The OpenRLHF drop-in against the real OpenRLHF 0.11.2 `PolicyLoss` (`bash scripts/setup.sh peers` installs
the package without its GPU stack). `openrlhf.models` imports flash-attn and peft when it loads (its ring
attention and LoRA), and flash-attn has no CPU wheel, so the test loads `openrlhf/models/loss.py` and the
`utils.py` beside it from the installed package without running `openrlhf/models/__init__.py`. Skipped where
OpenRLHF is not installed. The last test runs OpenRLHF's own Actor, in a process whose path holds a stand-in for
flash-attn's padding helpers (tests/helpers/flash_attn_standin: called only when OpenRLHF packs samples)."""
import importlib
import importlib.util
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from relate_fast.integrations.openrlhf import FusedPolicyLoss
from tests.test_integration_verl_openrlhf import _batch


@pytest.fixture(scope="module")
def openrlhf_loss():
    spec = importlib.util.find_spec("openrlhf")
    if spec is None:
        pytest.skip("OpenRLHF is not installed (bash scripts/setup.sh peers)")
    pytest.importorskip("deepspeed")  # openrlhf/models/utils.py imports it
    saved = {k: sys.modules.get(k) for k in ("openrlhf.models", "openrlhf.models.utils", "openrlhf.models.loss")}
    models = types.ModuleType("openrlhf.models")
    models.__path__ = [str(Path(spec.submodule_search_locations[0]) / "models")]
    sys.modules["openrlhf.models"] = models
    try:
        yield importlib.import_module("openrlhf.models.loss")
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


@pytest.mark.parametrize("token_level", [True, False])
@pytest.mark.parametrize("eps_high", [0.2, 0.28])
def test_the_drop_in_equals_openrlhfs_policy_loss(openrlhf_loss, token_level, eps_high):
    hidden, weight, targets, mask, logp, old, adv = _batch(4)
    mask[1, 0] = 1  # OpenRLHF's per-sequence mean divides by the sequence's token count: no empty rows
    ours, clip = FusedPolicyLoss(0.2, eps_high, token_level_loss=token_level)(hidden, weight, targets, old, adv, mask)
    theirs, their_clip, *_ = openrlhf_loss.PolicyLoss(0.2, eps_high, token_level_loss=token_level)(
        logp, old, adv[:, None].expand_as(logp), mask)
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-6)
    assert float(clip) == pytest.approx(float(their_clip), abs=1e-6)


@pytest.mark.parametrize("token_level", [True, False])
def test_the_drop_in_takes_openrlhfs_loss_batch_info(openrlhf_loss, token_level):
    """OpenRLHF 0.11's actor normalises a micro-batch's loss by the whole optimizer step's token (or sequence)
    count over all ranks (`loss_batch_info`, its `aggregate_loss`); the drop-in takes the same keywords."""
    hidden, weight, targets, mask, logp, old, adv = _batch(4)
    mask[1, 0] = 1
    info = dict(dp_size=2, batch_num_tokens=float(mask.sum()) * 3.0, global_batch_size=float(mask.shape[0]) * 3.0)
    ours, _ = FusedPolicyLoss(0.2, 0.28, token_level_loss=token_level)(hidden, weight, targets, old, adv, mask, **info)
    theirs, *_ = openrlhf_loss.PolicyLoss(0.2, 0.28, token_level_loss=token_level)(
        logp, old, adv[:, None].expand_as(logp), mask, **info)
    torch.testing.assert_close(ours.double(), theirs.double(), rtol=1e-5, atol=1e-6)
    local, *_ = openrlhf_loss.PolicyLoss(0.2, 0.28, token_level_loss=token_level)(logp, old, adv[:, None].expand_as(logp), mask)
    assert float(theirs) == pytest.approx(float(local) * 2 / 3, rel=1e-5)  # the keywords change the loss


def test_openrlhfs_dual_clip_is_theirs_alone(openrlhf_loss):
    """OpenRLHF's optional dual clip bounds negative-advantage losses; RELATE's eq. 6 has none: the drop-in
    equals PolicyLoss without it, and differs from it with it once ratios pass the bound."""
    hidden, weight, targets, mask, logp, old, adv = _batch(5)
    mask[1, 0] = 1
    old = logp.detach() - 2.0  # ratios e^2 ≈ 7.4
    ours, _ = FusedPolicyLoss(0.2, 0.2)(hidden, weight, targets, old, adv, mask)
    plain, *_ = openrlhf_loss.PolicyLoss(0.2, 0.2)(logp, old, adv[:, None].expand_as(logp), mask)
    dual, *_ = openrlhf_loss.PolicyLoss(0.2, 0.2, dual_clip=3.0)(logp, old, adv[:, None].expand_as(logp), mask)
    torch.testing.assert_close(ours.double(), plain, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(plain, dual)


# OpenRLHF's own Actor (openrlhf/models/actor.py) against the drop-in's recipe on the same model and batch, in a
# process of its own: the flash-attn stand-in goes on that process's path only
ACTOR_CHECK = r'''
import json, sys, torch
from openrlhf.models.actor import Actor
from openrlhf.models.loss import PolicyLoss
from relate_fast.config import TinyModelConfig
from relate_fast.integrations.openrlhf import FusedPolicyLoss
from relate_fast.models import build_tiny_model

folder = build_tiny_model(TinyModelConfig(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                          num_attention_heads=2, num_key_value_heads=1, head_dim=16), sys.argv[1])
# OpenRLHF loads a path in bf16 or fp16 only; given a model, its Actor wraps it as it is (fp32: a tight comparison)
from transformers import AutoModelForCausalLM
actor = Actor(AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32, attn_implementation="sdpa"))
actor.packing_samples = False  # set only on its path-loading branch: its default there
g = torch.Generator().manual_seed(0)
B, P, A = 4, 7, 6
# OpenRLHF's experience layout: prompts padded on the left, responses on the right
seqs = torch.randint(3, 300, (B, P + A), generator=g)
attention_mask = torch.ones(B, P + A, dtype=torch.long)
attention_mask[0, :3] = 0
attention_mask[2, :5] = 0
action_mask = torch.ones(B, A, dtype=torch.bool)
action_mask[1, 2:] = False
attention_mask[1, P + 2:] = 0
seqs[attention_mask == 0] = 0
out = {}
for token_level in (True, False):
    logp = actor(seqs, action_mask=action_mask, attention_mask=attention_mask)
    old = logp.detach() + torch.randn(B, A, generator=g) * 0.3 * action_mask
    adv = torch.randn(B, generator=g)
    theirs, their_clip, *_ = PolicyLoss(0.2, 0.28, token_level_loss=token_level)(
        logp, old, adv[:, None].expand(B, A), action_mask)
    actor.zero_grad()
    theirs.backward()
    their_grads = [p.grad.clone() for p in actor.parameters()]
    actor.zero_grad()
    # the recipe of relate_fast/integrations/openrlhf.py as written (the actor's position ids)
    pos = (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)
    hidden = actor.model.model(input_ids=seqs, attention_mask=attention_mask,
                               position_ids=pos).last_hidden_state[:, -A - 1:-1]
    ours, our_clip = FusedPolicyLoss(0.2, 0.28, token_level_loss=token_level)(
        hidden, actor.model.lm_head.weight, seqs[:, -A:], old, adv, action_mask.float())
    ours.backward()
    grad_diff = max(float((p.grad - q).abs().max()) for p, q in zip(actor.parameters(), their_grads))
    grad_scale = max(float(q.abs().max()) for q in their_grads)
    out[str(token_level)] = {"theirs": float(theirs), "ours": float(ours), "their_clip": float(their_clip),
                             "our_clip": float(our_clip), "grad_diff": grad_diff, "grad_scale": grad_scale}
json.dump(out, open(sys.argv[2], "w"))
'''


def test_the_recipe_equals_openrlhfs_own_actor_and_loss(tmp_path):
    """OpenRLHF's real Actor (its log-probs from the full logits, left-padded prompts, its position ids) and its
    PolicyLoss, against the drop-in's recipe as its docstring writes it, on the same tiny Qwen3 (fp32) and batch:
    the same loss, clip ratio and gradients of every parameter, both `token_level_loss` settings. The actor imports with tests/helpers/flash_attn_standin on the
    path (OpenRLHF imports flash-attn's padding helpers at module level and calls them only when it packs
    samples, which this leaves off)."""
    for name in ("openrlhf", "peft", "deepspeed"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed (bash scripts/setup.sh train peers)")
    script = tmp_path / "check.py"
    script.write_text(ACTOR_CHECK)
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join([str(root), str(root / "tests" / "helpers" / "flash_attn_standin"),
                            os.environ.get("PYTHONPATH", "")])
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "m"), str(tmp_path / "out.json")],
                         env=dict(os.environ, PYTHONPATH=path), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    for token_level, r in json.loads((tmp_path / "out.json").read_text()).items():
        assert r["ours"] == pytest.approx(r["theirs"], rel=1e-5, abs=1e-6), (token_level, r)
        assert r["our_clip"] == pytest.approx(r["their_clip"], abs=1e-6), (token_level, r)
        assert r["grad_scale"] > 0 and r["grad_diff"] <= 1e-5 * r["grad_scale"] + 1e-7, (token_level, r)
