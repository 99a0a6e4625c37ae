"""The chunked GRPO loss against a plain float64 torch reference (full logits + autograd), for both
backends: "torch" and "triton" (the Triton row kernels, run by the interpreter on CPU tensors:
TRITON_INTERPRET=1 is set in conftest)."""
import os
import subprocess
import sys

import pytest
import torch

from relate_fast import fused_grpo_loss, fused_logprobs, group_advantages
from relate_fast.loss import BACKENDS, LOSS_TYPES

# CPU tensors reach the Triton kernels only through the interpreter (a GPU machine runs -m gpu instead)
backends = pytest.mark.parametrize("backend", [
    pytest.param(b, marks=pytest.mark.skipif(b == "triton" and os.environ.get("TRITON_INTERPRET") != "1",
                                             reason="CPU tensors need TRITON_INTERPRET=1")) for b in BACKENDS])


def reference(hidden, weight, targets, mask, advantages, *, token_rewards=None, alpha=1.0, old_logprobs=None,
              ref_logprobs=None, beta=0.0, eps_low=0.2, eps_high=0.2, temperature=1.0, loss_type="grpo",
              max_completion_length=None, num_items=None, sampler_logprobs=None, tis_cap=2.0):
    """Straight from the method's equations, in float64 with materialised logits."""
    h = hidden.detach().double().requires_grad_(True)
    w = weight.detach().double().requires_grad_(weight.requires_grad)
    logits = h @ w.t() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets[..., None]).squeeze(-1)
    B, T = targets.shape
    A = advantages.double()
    A = A[:, None].expand(B, T) if A.dim() == 1 else A
    if token_rewards is not None:
        A = A + alpha * token_rewards.double()
    old = logp.detach() if old_logprobs is None else old_logprobs.double()
    if sampler_logprobs is not None and tis_cap is not None:  # truncated importance sampling (behaviour = sampler)
        A = A * torch.clamp(torch.exp(old - sampler_logprobs.double()), max=tis_cap)
    ratio = torch.exp(logp - old)
    per = -torch.minimum(ratio * A, torch.clamp(ratio, 1 - eps_low, 1 + eps_high) * A)
    if beta != 0.0:
        d = ref_logprobs.double() - logp
        per = per + beta * (torch.exp(d) - d - 1)
    m = mask.double()
    if loss_type == "grpo":
        loss = ((per * m).sum(1) / m.sum(1).clamp(min=1)).mean()
    elif loss_type == "bnpo":
        loss = (per * m).sum() / m.sum().clamp(min=1)
    elif loss_type == "dr_grpo":
        loss = (per * m).sum() / (B * (max_completion_length or T))
    elif loss_type == "dapo":
        loss = (per * m).sum() / (num_items if num_items is not None else m.sum().clamp(min=1))
    else:
        loss = (per * m).sum() / B
    loss.backward()
    return loss.detach(), h.grad, (w.grad if weight.requires_grad else None), logp.detach()


def make(B=3, T=7, H=16, V=37, dtype=torch.float32, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    hidden = (torch.randn(B, T, H, generator=g) * scale).to(dtype)
    weight = (torch.randn(V, H, generator=g) / H**0.5).to(dtype)
    targets = torch.randint(0, V, (B, T), generator=g)
    mask = torch.rand(B, T, generator=g) > 0.25
    mask[-1] = False  # a sequence with no tokens
    mask[0, :2] = True
    return hidden, weight, targets, mask, g


def run_both(hidden, weight, targets, mask, adv, tol, chunk_size=4, backend="torch", recompute=False, **kw):
    h = hidden.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    loss, metrics = fused_grpo_loss(h, w, targets, mask, adv, chunk_size=chunk_size, backend=backend,
                                    recompute=recompute, **kw)
    loss.backward()
    ref_loss, ref_gh, ref_gw, _ = reference(hidden, w, targets, mask, adv, **kw)
    assert torch.isfinite(loss) and torch.isfinite(h.grad).all() and torch.isfinite(w.grad).all()
    for got, want in ((loss, ref_loss), (h.grad, ref_gh), (w.grad, ref_gw)):
        # absolute tolerance relative to the tensor's scale (gradients reach the hundreds at extreme logits)
        torch.testing.assert_close(got.double(), want, rtol=tol, atol=tol * max(1.0, want.abs().max().item()))
    return loss, metrics


@backends
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
@pytest.mark.parametrize("per_token", [False, True])
@pytest.mark.parametrize("beta", [0.0, 0.1])
def test_matches_reference_fp32(loss_type, per_token, beta, backend):
    hidden, weight, targets, mask, g = make()
    B, T = targets.shape
    adv = torch.randn(B, T, generator=g) if per_token else torch.randn(B, generator=g)
    ref_lp = fused_logprobs(hidden, weight, targets) + 0.3 * torch.randn(B, T, generator=g)
    old_lp = fused_logprobs(hidden, weight, targets) + 0.4 * torch.randn(B, T, generator=g)  # some ratios clip
    run_both(hidden, weight, targets, mask, adv, 1e-5, token_rewards=-(torch.rand(B, T, generator=g) > 0.7).float(),
             alpha=0.5, old_logprobs=old_lp, ref_logprobs=ref_lp, beta=beta, eps_low=0.2, eps_high=0.28,
             temperature=0.7, loss_type=loss_type, max_completion_length=11, num_items=23, backend=backend)


@backends
def test_on_policy_default_and_chunking_does_not_matter(backend):
    hidden, weight, targets, mask, g = make(B=2, T=9, V=53)
    adv = torch.randn(2, generator=g)
    losses = [run_both(hidden, weight, targets, mask, adv, 1e-5, chunk_size=c, backend=backend)[0]
              for c in (1, 5, 18, 1000)]
    assert all(torch.allclose(losses[0], x, atol=1e-6) for x in losses)


@backends
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16bit_inputs_match_fp32_reference_on_the_same_inputs(backend, dtype):
    hidden, weight, targets, mask, g = make(dtype=dtype, V=61)
    adv = torch.randn(3, 7, generator=g)
    old_lp = fused_logprobs(hidden, weight, targets).float() + 0.3 * torch.randn(3, 7, generator=g)
    run_both(hidden, weight, targets, mask, adv, 2e-2, old_logprobs=old_lp, loss_type="bnpo", backend=backend)


@backends
def test_extreme_logits_stay_finite(backend):
    hidden, weight, targets, mask, g = make(scale=300.0)  # logits in the thousands: naive softmax overflows
    lp = fused_logprobs(hidden, weight, targets, backend=backend)
    assert torch.isfinite(lp).all() and lp.min() < -100
    loss, metrics = run_both(hidden, weight, targets, mask, torch.randn(3, generator=g), 1e-4,
                             old_logprobs=lp + 0.1, beta=0.05, ref_logprobs=lp - 0.1, backend=backend)
    assert all(torch.isfinite(v) for k, v in metrics.items() if k != "ratio_max")


@backends
def test_padding_never_poisons_the_loss(backend):
    hidden, weight, targets, mask, g = make()
    old = fused_logprobs(hidden, weight, targets)
    ref = old.clone()
    ref[~mask] = 1e4  # garbage in padding: k3 = inf there
    loss, metrics = run_both(hidden, weight, targets, mask, torch.randn(3, generator=g), 1e-5,
                             old_logprobs=old, ref_logprobs=torch.where(mask, ref, old), beta=0.1, backend=backend)
    hidden_garbage = hidden.clone()
    hidden_garbage[~mask] = 1e4  # padding rows with huge logits must not matter either
    h = hidden_garbage.requires_grad_(True)
    loss2, metrics2 = fused_grpo_loss(h, weight, targets, mask, torch.randn(3, generator=g), old_logprobs=old,
                                      ref_logprobs=ref, beta=0.1, backend=backend)
    loss2.backward()
    assert torch.isfinite(loss2) and torch.isfinite(h.grad).all() and torch.isfinite(metrics2["kl"])


@backends
def test_metrics_are_masked_means_and_detached(backend):
    hidden, weight, targets, mask, g = make()
    adv = torch.randn(3, generator=g)
    old_lp = fused_logprobs(hidden, weight, targets) + 0.5 * torch.randn(3, 7, generator=g)
    ref_lp = old_lp - 0.1
    _, metrics = fused_grpo_loss(hidden.requires_grad_(), weight, targets, mask, adv, old_logprobs=old_lp,
                                 ref_logprobs=ref_lp, beta=0.1, return_entropy=True, backend=backend)
    lp = fused_logprobs(hidden.detach(), weight, targets)
    ratio = torch.exp(lp - old_lp)
    A = adv[:, None].expand(3, 7)
    m = mask.float()
    high = ((A > 0) & (ratio > 1.2)).float()
    low = ((A < 0) & (ratio < 0.8)).float()
    mean = lambda x: (x * m).sum() / m.sum()  # noqa: E731
    d = ref_lp - lp
    torch.testing.assert_close(metrics["clip_high"], mean(high))
    torch.testing.assert_close(metrics["clip_low"], mean(low))
    torch.testing.assert_close(metrics["clip_ratio"], mean(high + low))
    torch.testing.assert_close(metrics["ratio_mean"], mean(ratio))
    torch.testing.assert_close(metrics["kl"], mean(torch.exp(d) - d - 1))
    torch.testing.assert_close(metrics["ratio_max"], ratio[mask].max())
    _, ent = fused_logprobs(hidden.detach(), weight, targets, return_entropy=True)
    torch.testing.assert_close(metrics["entropy"], mean(ent))
    assert all(not v.requires_grad for v in metrics.values())


@backends
def test_no_weight_grad_when_frozen(backend):
    hidden, weight, targets, mask, g = make()
    adv = torch.randn(3, generator=g)
    h = hidden.clone().requires_grad_(True)
    loss, _ = fused_grpo_loss(h, weight, targets, mask, adv, chunk_size=4, backend=backend)
    loss.backward()
    assert h.grad is not None and weight.grad is None
    _, ref_gh, ref_gw, _ = reference(hidden, weight, targets, mask, adv)
    assert ref_gw is None
    torch.testing.assert_close(h.grad.double(), ref_gh, rtol=1e-5, atol=1e-6)


@backends
def test_fused_logprobs_and_entropy_equal_reference(backend):
    hidden, weight, targets, _, _ = make(V=41)
    lp, ent = fused_logprobs(hidden, weight, targets, temperature=0.8, return_entropy=True, chunk_size=5,
                             backend=backend)
    logits = hidden.double() @ weight.double().t() / 0.8
    ref = torch.log_softmax(logits, -1)
    torch.testing.assert_close(lp.double(), ref.gather(-1, targets[..., None]).squeeze(-1), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent.double(), -(ref.exp() * ref).sum(-1), rtol=1e-5, atol=1e-5)
    assert lp.dtype == torch.float32 and not lp.requires_grad


def test_group_advantages_eq8():
    r = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0, 0.0, 10.0])
    a = group_advantages(r, 5)
    g1 = r[:5]
    torch.testing.assert_close(a[:5], (g1 - g1.mean()) / (g1.std(unbiased=True) + 1e-6))
    torch.testing.assert_close(group_advantages(r, 5, scale=False)[5:], r[5:] - r[5:].mean())
    assert torch.equal(group_advantages(torch.tensor([3.0, 4.0]), 1), torch.zeros(2))
    with pytest.raises(ValueError, match="not a multiple of group_size=3"):
        group_advantages(r, 3)


def test_bad_input_is_named():
    hidden, weight, targets, mask, g = make()
    adv = torch.randn(3)
    with pytest.raises(ValueError, match="beta != 0 needs ref_logprobs"):
        fused_grpo_loss(hidden, weight, targets, mask, adv, beta=0.1)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        fused_grpo_loss(hidden, weight, targets, mask, adv, loss_type="ppo")
    with pytest.raises(ValueError, match=r"advantages must have shape \[3\] or \[3, 7\]"):
        fused_grpo_loss(hidden, weight, targets, mask, torch.randn(4))
    with pytest.raises(ValueError, match=r"mask must have shape \(3, 7\)"):
        fused_grpo_loss(hidden, weight, targets, mask[:, :3], adv)
    with pytest.raises(TypeError, match="targets must be an integer tensor"):
        fused_grpo_loss(hidden, weight, targets.float(), mask, adv)
    with pytest.raises(TypeError, match="weight has dtype torch.bfloat16 but hidden has torch.float32"):
        fused_grpo_loss(hidden, weight.bfloat16(), targets, mask, adv)
    with pytest.raises(ValueError, match=r"weight must have shape \[V, 16\]"):
        fused_grpo_loss(hidden, weight[:, :5], targets, mask, adv)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 37\)"):
        fused_grpo_loss(hidden, weight, targets + 100, mask, adv)
    with pytest.raises(TypeError, match="hidden must be a torch.Tensor"):
        fused_logprobs(hidden.numpy(), weight, targets)
    with pytest.raises(ValueError, match=r"old_logprobs must have shape \(3, 7\)"):
        fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=torch.zeros(3))


def test_matcher_import_does_not_import_torch():
    code = "import sys, relate_fast.matcher; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def trl_1_16_loss(per_token_logps, old_per_token_logps, ref_per_token_logps, advantages, mask, *, beta, epsilon_low,
                  epsilon_high, loss_type, max_completion_length, num_items_in_batch):
    """TRL 1.16.0's GRPOTrainer._compute_loss from the log-probs on (token-level importance sampling,
    one process, no gradient accumulation, no vLLM correction), transcribed from trl/trainer/grpo_trainer.py.
    The TRL integration (issue 7) checks against TRL itself; this pins the shared formulas here."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    coef_1 = torch.exp(per_token_logps - old_per_token_logps)
    if beta != 0.0:
        per_token_kl = torch.exp(ref_per_token_logps - per_token_logps) - (ref_per_token_logps - per_token_logps) - 1
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    per_token_loss = -torch.min(coef_1 * advantages, coef_2 * advantages)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return (per_token_loss * mask).sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    if loss_type == "dapo":
        return (per_token_loss * mask).sum() / num_items_in_batch.clamp(min=1.0)
    raise ValueError(loss_type)


@backends
@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_trl_parity_of_the_per_token_loss(loss_type, beta, backend):
    hidden, weight, targets, mask, g = make(B=4, T=6, V=45, seed=11)
    adv = torch.randn(4, generator=g)
    old = fused_logprobs(hidden, weight, targets) + 0.3 * torch.randn(4, 6, generator=g)
    ref = old - 0.2 * torch.rand(4, 6, generator=g)
    num_items = mask.sum().double() + 3  # the global count: other ranks' tokens included
    h = hidden.clone().requires_grad_(True)
    loss, _ = fused_grpo_loss(h, weight, targets, mask, adv, old_logprobs=old, ref_logprobs=ref, beta=beta,
                              eps_low=0.2, eps_high=0.28, loss_type=loss_type, max_completion_length=9,
                              num_items=num_items.item(), backend=backend)
    loss.backward()
    hd = hidden.double().requires_grad_(True)
    logp = torch.log_softmax(hd @ weight.double().t(), -1).gather(-1, targets[..., None]).squeeze(-1)
    want = trl_1_16_loss(logp, old.double(), ref.double(), adv.double(), mask.double(), beta=beta, epsilon_low=0.2,
                         epsilon_high=0.28, loss_type=loss_type, max_completion_length=9, num_items_in_batch=num_items)
    want.backward()
    torch.testing.assert_close(loss.double(), want.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(h.grad.double(), hd.grad, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- degenerate and bad input


@pytest.mark.parametrize("B,T", [(0, 5), (3, 0), (0, 0)])
def test_empty_batch_gives_zero_loss_and_zero_grads(B, T):
    hidden = torch.randn(B, T, 16, requires_grad=True)
    weight = torch.randn(37, 16, requires_grad=True)
    targets = torch.zeros(B, T, dtype=torch.long)
    mask = torch.ones(B, T)
    for loss_type in ("grpo", "bnpo", "dr_grpo", "dapo", "seq_sum"):
        loss, metrics = fused_grpo_loss(hidden, weight, targets, mask, torch.zeros(B), loss_type=loss_type)
        assert float(loss) == 0.0 and float(metrics["clip_ratio"]) == 0.0
        loss.backward()
        assert hidden.grad.shape == hidden.shape and weight.grad is not None and not weight.grad.any()
    assert fused_logprobs(hidden.detach(), weight.detach(), targets).shape == (B, T)


@pytest.mark.parametrize("arg", ["advantages", "token_rewards", "old_logprobs", "ref_logprobs"])
def test_check_finite_names_the_argument(arg):
    g = torch.Generator().manual_seed(0)
    B, T, H, V = 3, 4, 8, 11
    kw = dict(token_rewards=torch.zeros(B, T), old_logprobs=-torch.rand(B, T, generator=g),
              ref_logprobs=-torch.rand(B, T, generator=g), beta=0.1)
    adv = torch.randn(B, generator=g)
    mask = torch.ones(B, T)
    mask[2, 3] = 0
    args = (torch.randn(B, T, H, generator=g), torch.randn(V, H, generator=g), torch.randint(0, V, (B, T), generator=g), mask)
    # a NaN where the mask is 0 is padding: allowed
    if arg != "advantages":
        kw[arg][2, 3] = float("nan")
        fused_grpo_loss(*args, adv, check_finite=True, **kw)
        kw[arg][1, 2] = float("nan")
    else:
        adv[1] = float("nan")
    with pytest.raises(ValueError, match=f"{arg} has a non-finite value on a counted token \\(row 1"):
        fused_grpo_loss(*args, adv, check_finite=True, **kw)
    loss, _ = fused_grpo_loss(*args, adv, **kw)  # unchecked: the NaN flows into the loss, as documented
    assert not torch.isfinite(loss)


def test_loss_types_and_advantage_estimators_are_registries():
    """As verl's core_algos: a loss type or an advantage estimator is a pure function in a registry,
    which the loss, the trainer's config and its batching read; registering one makes it usable."""
    from relate_fast.config import load_config
    from relate_fast.loss import ADVANTAGE_ESTIMATORS, register_loss_type
    from relate_fast.loss.objective import LOSS_REGISTRY

    assert set(LOSS_TYPES) == set(LOSS_REGISTRY) == {"grpo", "bnpo", "dr_grpo", "dapo", "seq_sum"}
    assert {n for n, t in LOSS_REGISTRY.items() if t.token_normalised} == {"bnpo", "dapo"}
    r = torch.tensor([1.0, 2.0, 6.0, 0.0, 0.0, 3.0], dtype=torch.float64)
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS["group_center"](r, 3), torch.tensor([-2.0, -1, 3, -1, -1, 2], dtype=torch.float64))
    torch.testing.assert_close(ADVANTAGE_ESTIMATORS["group_z"](r, 3), group_advantages(r, 3))
    assert load_config(None, ["--grpo.advantage", "group_center"]).grpo.advantage == "group_center"
    with pytest.raises(ValueError, match="grpo.advantage: must be one of group_z, group_center"):
        load_config(None, ["--grpo.advantage", "ppo"])
    hidden, weight, targets, mask, g = make()
    adv = torch.randn(targets.shape[0], generator=g)
    with pytest.raises(ValueError, match="loss_type must be one of"):
        fused_grpo_loss(hidden, weight, targets, mask, adv, loss_type="half_mean")
    try:
        @register_loss_type("half_mean", token_normalised=False)
        def _half_mean(m, max_completion_length, num_items):  # half of grpo's
            return 0.5 * LOSS_REGISTRY["grpo"].weights(m, max_completion_length, num_items)

        half, _ = fused_grpo_loss(hidden, weight, targets, mask, adv, loss_type="half_mean")
        full, _ = fused_grpo_loss(hidden, weight, targets, mask, adv, loss_type="grpo")
        torch.testing.assert_close(half, 0.5 * full)
        assert load_config(None, ["--grpo.loss_type", "half_mean"]).grpo.loss_type == "half_mean"
        with pytest.raises(ValueError, match="already registered"):
            register_loss_type("half_mean", token_normalised=False)(_half_mean)
    finally:
        LOSS_REGISTRY.pop("half_mean", None)


@backends
@pytest.mark.parametrize("loss_type", ["grpo", "dapo"])
@pytest.mark.parametrize("with_old", [False, True])
def test_sampler_logprobs_weight_the_advantages_by_truncated_importance(backend, loss_type, with_old):
    """The correction for a sampler that is not the trainer: A·min(exp(old - sampler), C) per token,
    against float64, with the trainer's old log-probs or (one update) its current ones; the metrics give
    the gap and the weights; tis_cap None measures without weighting; no sampler = the loss as before."""
    hidden, weight, targets, mask, g = make(B=4, T=9)
    B, T = targets.shape
    adv = torch.randn(B, generator=g)
    lp = fused_logprobs(hidden, weight, targets)
    old = lp + 0.3 * torch.randn(B, T, generator=g) if with_old else None
    sampler = lp + 0.8 * torch.randn(B, T, generator=g)  # some weights pass the cap of 2
    common = dict(token_rewards=-(torch.rand(B, T, generator=g) > 0.7).float(), alpha=0.5, old_logprobs=old,
                  eps_low=0.2, eps_high=0.28, loss_type=loss_type, num_items=17, backend=backend)
    _, m = run_both(hidden, weight, targets, mask, adv, 1e-5, sampler_logprobs=sampler, tis_cap=2.0, **common)
    o = (old if with_old else lp)
    gap, w, mk = o - sampler, torch.exp(o - sampler).clamp(max=2.0), mask.bool()
    torch.testing.assert_close(m["sampler_gap"], gap[mk].mean(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(m["tis_weight_mean"], w[mk].mean(), rtol=1e-5, atol=1e-5)
    assert m["tis_weight_max"] <= 2.0 and 0 < m["tis_truncated"] < 1
    torch.testing.assert_close(m["tis_truncated"], (w[mk] >= 2.0).float().mean())
    measured, mm = fused_grpo_loss(hidden, weight, targets, mask, adv, sampler_logprobs=sampler, tis_cap=None, **common)
    plain, pm = fused_grpo_loss(hidden, weight, targets, mask, adv, **common)
    assert torch.equal(measured, plain) and "tis_weight_mean" not in mm and "sampler_gap" in mm
    assert "sampler_gap" not in pm
    # the packed entry point takes them alike: [N] vectors with the loss weights given
    from relate_fast.loss import fused_grpo_loss_tokens
    from relate_fast.loss.objective import token_weights

    coef = token_weights(mask, loss_type, None, 17)
    adv_t = adv[:, None].expand(B, T) + 0.5 * common["token_rewards"]
    flat = lambda x: None if x is None else x.reshape(-1)  # noqa: E731
    tok_loss, tm = fused_grpo_loss_tokens(hidden.reshape(B * T, -1), weight, targets.reshape(-1), flat(coef), flat(adv_t),
                                          old_logprobs=flat(old), eps_low=0.2, eps_high=0.28, backend=backend,
                                          sampler_logprobs=flat(sampler), tis_cap=2.0)
    full, fm = fused_grpo_loss(hidden, weight, targets, mask, adv, sampler_logprobs=sampler, tis_cap=2.0, **common)
    torch.testing.assert_close(tok_loss, full, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(tm["tis_weight_mean"], fm["tis_weight_mean"])
    with pytest.raises(ValueError, match="tis_cap must be a number > 0"):
        fused_grpo_loss(hidden, weight, targets, mask, adv, sampler_logprobs=sampler, tis_cap=0, **common)
    with pytest.raises(ValueError, match="sampler_logprobs"):
        fused_grpo_loss(hidden, weight, targets, mask, adv, sampler_logprobs=sampler[:, :3], **common)
