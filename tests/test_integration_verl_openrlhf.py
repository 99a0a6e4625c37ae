"""verl and OpenRLHF integrations, and the parity suite: our per-token objective against TRL's,
verl's and OpenRLHF's formulas on random inputs for every variant we share with them."""
import numpy as np
import pytest
import torch

from relate_fast import fused_grpo_loss
from relate_fast.integrations.openrlhf import FusedPolicyLoss
from relate_fast.integrations.verl import agg_loss, relate_grpo_advantage, relate_policy_loss
from tests import verl_reference as ref


def _batch(seed=0, B=6, T=9, V=37, H=16):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=g, dtype=torch.float64)
    weight = torch.randn(V, H, generator=g, dtype=torch.float64) * 0.5
    targets = torch.randint(0, V, (B, T), generator=g)
    mask = (torch.rand(B, T, generator=g) > 0.2).double()
    mask[1] = 0  # an empty response
    logp = torch.log_softmax(hidden @ weight.T, -1).gather(-1, targets[..., None])[..., 0]
    old = logp.detach() + torch.randn(B, T, generator=g, dtype=torch.float64) * 0.3  # ratios well outside the clip
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    return hidden, weight, targets, mask, logp, old, adv


class _Cfg(dict):
    def get(self, k, d=None):
        return super().get(k, d)


# (our loss_type, verl loss_agg_mode)
MODES = [("bnpo", "token-mean"), ("grpo", "seq-mean-token-mean"), ("seq_sum", "seq-mean-token-sum"),
         ("dr_grpo", "seq-mean-token-sum-norm")]


@pytest.mark.parametrize("loss_type, agg", MODES)
def test_fused_loss_equals_verl_vanilla_without_dual_clip(loss_type, agg):
    hidden, weight, targets, mask, logp, old, adv = _batch()
    ours, _ = fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old, eps_low=0.2, eps_high=0.28,
                              loss_type=loss_type, backend="torch")
    theirs, _ = ref.policy_loss_vanilla(old, logp, adv[:, None].expand_as(logp), mask, agg, 0.2, 0.28, clip_ratio_c=1e9)
    if loss_type == "grpo":  # ours averages over all B sequences, verl over non-empty ones
        theirs = theirs * (mask.sum(-1) > 0).sum() / mask.shape[0]
    if loss_type in ("seq_sum", "dr_grpo"):
        theirs = theirs * (mask.sum(-1) > 0).sum() / mask.shape[0]
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-6)  # the loss accumulates in fp32


def test_dual_clip_is_verls_alone():
    """verl clips negative-advantage ratios above clip_ratio_c (dual clip); RELATE's eq. 6 does not.
    With ratios beyond 3 the two differ, and only there."""
    hidden, weight, targets, mask, logp, old, adv = _batch(1)
    old = logp.detach() - 2.0  # ratio e^2 ≈ 7.4 > 3
    ours, _ = fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old, loss_type="bnpo", backend="torch")
    with_dual, _ = ref.policy_loss_vanilla(old, logp, adv[:, None].expand_as(logp), mask, "token-mean", 0.2, 0.2)
    without, _ = ref.policy_loss_vanilla(old, logp, adv[:, None].expand_as(logp), mask, "token-mean", 0.2, 0.2, 1e9)
    torch.testing.assert_close(ours.double(), without, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(ours.double(), with_dual, rtol=1e-3)


def test_k3_kl_equals_verls_low_var_kl():
    hidden, weight, targets, mask, logp, old, adv = _batch(2)
    g = torch.Generator().manual_seed(5)
    ref_lp = logp.detach() + torch.randn(logp.shape, generator=g, dtype=torch.float64) * 0.5
    _, m = fused_grpo_loss(hidden, weight, targets, mask, adv, ref_logprobs=ref_lp, beta=0.1, backend="torch")
    k3 = ref.kl_penalty_forward(logp.detach(), ref_lp, "k3")
    torch.testing.assert_close(m["kl"].double(), (k3 * mask).sum() / mask.sum(), rtol=1e-5, atol=1e-6)
    # k1 and k2 are verl options RELATE does not use: the fused loss implements k3 only (documented)


def test_relate_policy_loss_equals_verl_vanilla_per_agg_mode():
    _, _, _, mask, logp, old, adv = _batch(3)
    g = torch.Generator().manual_seed(1)
    adv_tok = torch.randn(logp.shape, generator=g, dtype=torch.float64)
    cfg = _Cfg(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, global_batch_info={})
    for agg in ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean"):
        ours, metrics = relate_policy_loss(old, logp, adv_tok, mask, agg, cfg)
        theirs, _ = ref.policy_loss_vanilla(old, logp, adv_tok, mask, agg, 0.2, 0.28, clip_ratio_c=1e9)
        torch.testing.assert_close(ours, theirs)
        torch.testing.assert_close(agg_loss(logp, mask, agg), ref.agg_loss(logp, mask, agg))
    assert 0 <= metrics["actor/pg_clipfrac"] <= 1


def test_relate_grpo_advantage_keeps_token_rewards():
    g = torch.Generator().manual_seed(0)
    B, T = 8, 6
    mask = torch.ones(B, T)
    mask[2, 3:] = 0
    index = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    sentence = torch.randn(B, generator=g)
    last = mask.sum(-1).long() - 1
    outcome_only = torch.zeros(B, T)
    outcome_only[torch.arange(B), last] = sentence
    # with no token rewards: exactly verl's GRPO estimator
    a, _ = relate_grpo_advantage(outcome_only, mask, index)
    torch.testing.assert_close(a, ref.grpo_outcome_advantage(outcome_only, mask, index))
    # with token rewards: A = z(r_i) + α·r_tok, where verl's estimator would have summed them into r_i
    r_tok = -(torch.rand(B, T, generator=g) > 0.7).float() * 0.5 * mask
    r_tok[torch.arange(B), last] = 0
    a, _ = relate_grpo_advantage(outcome_only + r_tok, mask, index, config=_Cfg(relate_alpha=2.0))
    z = ref.grpo_outcome_advantage(outcome_only, mask, index)
    torch.testing.assert_close(a, z + 2.0 * r_tok)


def _openrlhf_policy_loss(log_probs, old_log_probs, advantages, action_mask, eps_low, eps_high, token_level):
    """OpenRLHF's PolicyLoss.forward (openrlhf/models/loss.py), restated for where OpenRLHF is not installed;
    tests/test_integration_openrlhf_real.py compares with the real one."""
    ratio = (log_probs - old_log_probs).exp()
    surr1 = ratio * advantages
    surr2 = ratio.clamp(1 - eps_low, 1 + eps_high) * advantages
    loss = -torch.min(surr1, surr2)
    if token_level:
        return (loss * action_mask).sum() / action_mask.sum()
    return ((loss * action_mask).sum(-1) / action_mask.sum(-1)).mean()


@pytest.mark.parametrize("token_level", [True, False])
def test_openrlhf_drop_in_equals_its_policy_loss(token_level):
    hidden, weight, targets, mask, logp, old, adv = _batch(4)
    mask[1, 0] = 1  # OpenRLHF's per-sequence mean divides by the sequence's token count: no empty rows
    fn = FusedPolicyLoss(0.2, 0.28, token_level_loss=token_level)
    ours, clip = fn(hidden, weight, targets, old, adv, mask)
    theirs = _openrlhf_policy_loss(logp, old, adv[:, None], mask, 0.2, 0.28, token_level)
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-6)
    assert 0 <= float(clip) <= 1
