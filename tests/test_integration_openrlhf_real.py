"""The OpenRLHF drop-in against the real OpenRLHF 0.11.2 `PolicyLoss` (`bash scripts/setup.sh peers` installs
the package without its GPU stack). `openrlhf.models` imports flash-attn and peft when it loads (its ring
attention and LoRA), and flash-attn has no CPU wheel, so the test loads `openrlhf/models/loss.py` and the
`utils.py` beside it from the installed package without running `openrlhf/models/__init__.py`. Skipped where
OpenRLHF is not installed."""
import importlib
import importlib.util
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
