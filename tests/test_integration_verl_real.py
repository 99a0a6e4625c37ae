"""The verl integration against the real verl 0.9.1 package (its `core_algos` on the CPU: `bash scripts/setup.sh
verl` installs verl without its GPU stack, with Ray and tensordict). Checks what verl itself would run: our
registered loss and estimator fetched from verl's registries, against verl's own vanilla loss and GRPO estimator
with verl's own actor config; and the restatement in tests/verl_reference.py (which the parity suite uses)
against the real functions, so the restatement cannot drift from verl. Skipped where verl is not installed."""
import ast

import numpy as np
import pytest
import torch

core_algos = pytest.importorskip("verl.trainer.ppo.core_algos", reason="verl is not installed (bash scripts/setup.sh verl)")

from relate_fast import fused_grpo_loss  # noqa: E402
from relate_fast.integrations import verl as relate_verl  # noqa: E402
from tests import verl_reference as ref  # noqa: E402
from tests.test_integration_verl_openrlhf import MODES, _batch  # noqa: E402

AGG_MODES = ("token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-sum-norm", "seq-mean-token-mean")


def _actor_config(clip_ratio_c=3.0):
    from verl.workers.config.actor import FSDPActorConfig

    return FSDPActorConfig(strategy="fsdp", clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28,
                           clip_ratio_c=clip_ratio_c, ppo_mini_batch_size=4, ppo_micro_batch_size_per_gpu=2, rollout_n=1)


def _token_advantages(logp, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(logp.shape, generator=g, dtype=torch.float64)


def test_register_puts_ours_in_verls_registries():
    relate_verl.register()
    relate_verl.register()  # twice is harmless (a worker may import the integration again)
    assert core_algos.get_policy_loss_fn("relate") is relate_verl.relate_policy_loss
    assert core_algos.get_adv_estimator_fn("relate_grpo") is relate_verl.relate_grpo_advantage


@pytest.mark.parametrize("agg", AGG_MODES)
def test_the_registered_loss_is_verls_vanilla_without_its_dual_clip(agg):
    relate_verl.register()
    _, _, _, mask, logp, old, _ = _batch(3)
    adv = _token_advantages(logp)
    ours, metrics = core_algos.get_policy_loss_fn("relate")(old, logp, adv, mask, agg, _actor_config())
    theirs, their_metrics = core_algos.get_policy_loss_fn("vanilla")(old, logp, adv, mask, agg, _actor_config(clip_ratio_c=1e9))
    torch.testing.assert_close(ours, theirs)
    assert metrics["actor/pg_clipfrac"] == pytest.approx(float(their_metrics["actor/pg_clipfrac"]))
    # with verl's default dual clip (3.0) and ratios beyond it, verl's loss differs and ours does not change
    dual, _ = core_algos.get_policy_loss_fn("vanilla")(logp.detach() - 2.0, logp, adv, mask, agg, _actor_config())
    ours_far, _ = core_algos.get_policy_loss_fn("relate")(logp.detach() - 2.0, logp, adv, mask, agg, _actor_config())
    no_dual, _ = core_algos.get_policy_loss_fn("vanilla")(logp.detach() - 2.0, logp, adv, mask, agg, _actor_config(1e9))
    torch.testing.assert_close(ours_far, no_dual)
    assert not torch.allclose(dual, no_dual)


@pytest.mark.parametrize("loss_type, agg", MODES)
def test_the_fused_loss_equals_real_verls_vanilla(loss_type, agg):
    hidden, weight, targets, mask, logp, old, adv = _batch()
    ours, _ = fused_grpo_loss(hidden, weight, targets, mask, adv, old_logprobs=old, eps_low=0.2, eps_high=0.28,
                              loss_type=loss_type, backend="torch")
    theirs, _ = core_algos.compute_policy_loss_vanilla(old, logp, adv[:, None].expand_as(logp), mask, agg,
                                                       _actor_config(clip_ratio_c=1e9))
    if loss_type != "bnpo":  # ours averages over all B sequences, verl over the non-empty ones
        theirs = theirs * (mask.sum(-1) > 0).sum() / mask.shape[0]
    torch.testing.assert_close(ours.double(), theirs, rtol=1e-5, atol=1e-6)


def test_the_estimator_without_token_rewards_is_verls_grpo():
    relate_verl.register()
    g = torch.Generator().manual_seed(0)
    B, T = 8, 6
    mask = torch.ones(B, T)
    mask[2, 3:] = 0
    index = np.array([0, 0, 0, 0, 1, 1, 1, 1])
    last = mask.sum(-1).long() - 1
    outcome = torch.zeros(B, T)
    outcome[torch.arange(B), last] = torch.randn(B, generator=g)
    for norm in (True, False):
        ours, _ = core_algos.get_adv_estimator_fn("relate_grpo")(outcome, mask, index, norm_adv_by_std_in_grpo=norm)
        theirs, _ = core_algos.compute_grpo_outcome_advantage(outcome, mask, index, norm_adv_by_std_in_grpo=norm)
        torch.testing.assert_close(ours, theirs)


def test_the_restatement_matches_real_verl():
    """tests/verl_reference.py (used by the parity suite) against the functions it restates."""
    _, _, _, mask, logp, old, _ = _batch(4)
    adv = _token_advantages(logp, 2)
    for agg in AGG_MODES:
        torch.testing.assert_close(ref.agg_loss(logp, mask, agg), core_algos.agg_loss(logp, mask, agg))
        for c in (3.0, 1e9):
            theirs, _ = core_algos.compute_policy_loss_vanilla(old, logp, adv, mask, agg, _actor_config(clip_ratio_c=c))
            restated, _ = ref.policy_loss_vanilla(old, logp, adv, mask, agg, 0.2, 0.28, clip_ratio_c=c)
            torch.testing.assert_close(restated, theirs)
    g = torch.Generator().manual_seed(7)
    rewards = torch.randn(8, 6, generator=g)
    rmask = torch.ones(8, 6)
    index = np.array([0, 0, 1, 1, 1, 2, 2, 3])  # a group of one included
    torch.testing.assert_close(ref.grpo_outcome_advantage(rewards, rmask, index),
                               core_algos.compute_grpo_outcome_advantage(rewards, rmask, index)[0])
    ref_lp = logp.detach() + torch.randn(logp.shape, generator=g, dtype=torch.float64) * 0.5
    torch.testing.assert_close(ref.kl_penalty_forward(logp.detach(), ref_lp, "k3"),
                               core_algos.kl_penalty(logp.detach(), ref_lp, "low_var_kl"))


_PROBE = "import verl.trainer.ppo.core_algos as c; c.get_policy_loss_fn('relate'); c.get_adv_estimator_fn('relate_grpo')"


def _probe(**env):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **env))


def test_an_installed_relate_fast_is_a_verl_plugin():
    """`import verl` alone, in a fresh process, registers ours through relate_fast's "verl.plugins" entry point
    (pyproject.toml), as in each of verl's Ray workers. Needs relate_fast installed (its metadata holds the entry
    point): on the GPU machine it is only on PYTHONPATH, so this skips there and the next test covers it."""
    from importlib.metadata import entry_points

    if not any(e.value == "relate_fast.integrations.verl_plugin" for e in entry_points(group="verl.plugins")):
        pytest.skip("relate_fast is not installed as a distribution here (only on PYTHONPATH): no entry point to find")
    on = _probe()
    assert on.returncode == 0, on.stderr[-2000:]


def test_verl_use_external_modules_registers_ours():
    """With discovery off, VERL_USE_EXTERNAL_MODULES registers ours in a fresh process: the way where relate_fast
    is only on PYTHONPATH (bench_vs_verl.py's verl runs). Named beside it, as bench_vs_verl does for verl on
    flash-attn 4: benchmarks.fa4_compat_apply, which without FA4 here patches nothing and stops nothing, and
    benchmarks.verl_rollout_env, after which verl's platform (resolved as verl resolves it) starts its vLLM servers
    with RELATE_FAST_ROLLOUT_PYTHONPATH as their PYTHONPATH, keeping its own variables, and without it adds none.
    Imports verl once (~15 s on a 2-core VM)."""
    import os
    import subprocess
    import sys

    script = (_PROBE + "; import sys, os; print(sys.modules['benchmarks.fa4_compat_apply'].APPLIED); "
              "from verl.plugin.platform import get_platform; p = get_platform(); print(p.rollout_env_vars()); "
              "os.environ.pop('RELATE_FAST_ROLLOUT_PYTHONPATH'); print(p.rollout_env_vars())")
    by_name = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, VERL_USE_EXTERNAL_PLUGINS="none", RELATE_FAST_ROLLOUT_PYTHONPATH="/a:/b",
                                      VERL_USE_EXTERNAL_MODULES="relate_fast.integrations.verl_plugin,"
                                                                "benchmarks.fa4_compat_apply,benchmarks.verl_rollout_env"))
    assert by_name.returncode == 0, by_name.stderr[-2000:]
    applied, with_path, without = by_name.stdout.strip().splitlines()[-3:]
    assert applied == "False"
    assert ast.literal_eval(with_path) == {"NCCL_CUMEM_ENABLE": os.environ.get("NCCL_CUMEM_ENABLE", "0"), "PYTHONPATH": "/a:/b"}
    assert ast.literal_eval(without) == {"NCCL_CUMEM_ENABLE": os.environ.get("NCCL_CUMEM_ENABLE", "0")}


_RAY_SERVER = """
import ast, os, subprocess, sys
import ray
from verl.plugin.platform import get_platform

ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)


@ray.remote(num_cpus=0)
class Server:  # stands in for verl's vLLMHttpServer: its path, and that of a child (vLLM's engine core)
    def paths(self):
        child = subprocess.run([sys.executable, "-c", "import sys; print(sys.path)"], capture_output=True, text=True)
        return os.environ.get("PYTHONPATH"), sys.path, ast.literal_eval(child.stdout)


server = Server.options(runtime_env={"env_vars": get_platform().rollout_env_vars()}).remote()  # as verl starts it
print(repr(ray.get(server.paths.remote())))
ray.shutdown()
"""


@pytest.mark.slow
def test_a_vllm_server_started_as_verl_starts_it_keeps_the_path_without_fa4s_site(tmp_path):
    """bench_vs_verl on flash-attn 4 (FA4's site first on PYTHONPATH, benchmarks.verl_rollout_env among verl's
    modules): a Ray actor started with verl's `runtime_env={"env_vars": platform.rollout_env_vars()}`, as verl 0.9.1
    starts its vLLM servers, has RELATE_FAST_ROLLOUT_PYTHONPATH on its path and not FA4's site, and so has a process
    it starts (vLLM's engine core). Needs Ray (installed with verl); ~10 s."""
    import os
    import subprocess
    import sys

    from tests.test_bench_vs_verl import bv

    fa4, rollout = tmp_path / "site_fa4", os.pathsep.join([str(bv.ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    r = subprocess.run([sys.executable, "-c", _RAY_SERVER], capture_output=True, text=True, timeout=240, cwd=tmp_path,
                       env=dict(os.environ, VERL_USE_EXTERNAL_PLUGINS="none", RAY_USAGE_STATS_ENABLED="0",
                                VERL_USE_EXTERNAL_MODULES="benchmarks.verl_rollout_env",
                                RELATE_FAST_ROLLOUT_PYTHONPATH=rollout, PYTHONPATH=os.pathsep.join([str(fa4), rollout])))
    assert r.returncode == 0, r.stderr[-3000:]
    env_path, actor_path, child_path = ast.literal_eval(r.stdout.strip().splitlines()[-1])
    assert env_path == rollout
    for path in (actor_path, child_path):
        assert str(fa4) not in path and str(bv.ROOT) in path


def test_the_plugin_gives_verls_fused_forward_our_logprobs_when_the_environment_asks():
    """RELATE_FAST_VERL_LOGPROBS=1: `import verl` in a fresh process (the plugin named by VERL_USE_EXTERNAL_MODULES,
    as in a Ray worker) leaves verl's linear_cross_entropy ours, with RELATE_FAST_VERL_LOGPROBS_CHUNK's chunk or,
    unset, the integration's default; without it, verl's own."""
    import os
    import subprocess
    import sys

    probe = ("import verl, verl.utils.kernel.linear_cross_entropy as l; f = l.linear_cross_entropy; "
             "print(getattr(getattr(f, 'func', f), '__module__', '?'), getattr(f, 'keywords', {}).get('chunk_size'))")
    env = dict(os.environ, VERL_USE_EXTERNAL_PLUGINS="none", VERL_USE_EXTERNAL_MODULES="relate_fast.integrations.verl_plugin")
    env.pop("RELATE_FAST_VERL_LOGPROBS", None)
    runs = [subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, env=e)
            for e in (dict(env, RELATE_FAST_VERL_LOGPROBS="1", RELATE_FAST_VERL_LOGPROBS_CHUNK="512"),
                      dict(env, RELATE_FAST_VERL_LOGPROBS="1"), env)]
    assert all(r.returncode == 0 for r in runs), "".join(r.stderr[-2000:] for r in runs)
    assert runs[0].stdout.split()[-2:] == ["relate_fast.integrations.verl", "512"]
    assert runs[1].stdout.split()[-2:] == ["relate_fast.integrations.verl", str(relate_verl.LOGPROBS_CHUNK_TOKENS)]
    assert runs[2].stdout.split()[-2] != "relate_fast.integrations.verl"


def test_the_checked_loss_trains_with_ours_and_logs_the_gap_to_verls():
    """benchmarks/verl_check.py ("relate_checked", for the GPU run inside verl): ours as the loss, verl's
    vanilla on the same micro-batch logged beside it; on policy (old = current) the gap is zero."""
    import benchmarks.verl_check  # noqa: F401  (registers "relate_checked")

    _, _, _, mask, logp, _, _ = _batch(6)
    adv = _token_advantages(logp, 3)
    fn = core_algos.get_policy_loss_fn("relate_checked")
    loss, metrics = fn(logp.detach(), logp, adv, mask, "token-mean", _actor_config())
    ours, _ = relate_verl.relate_policy_loss(logp.detach(), logp, adv, mask, "token-mean", _actor_config())
    torch.testing.assert_close(loss, ours)
    assert metrics["actor/relate_minus_vanilla"] == pytest.approx(0.0, abs=1e-12)
    far, metrics = fn(logp.detach() - 2.0, logp, adv, mask, "token-mean", _actor_config())  # verl's dual clip acts
    assert abs(metrics["actor/relate_minus_vanilla"]) > 1e-3


def test_the_checked_loss_probes_with_advantages_of_its_own_where_the_batchs_are_all_zero():
    """All advantages 0 (equal rewards in every group) makes both losses 0 whatever the code; the probe compares
    them on the micro-batch's own log-probs with advantages drawn per sequence, and adds nothing to the gradient."""
    from benchmarks import verl_check

    _, _, _, mask, logp, _, _ = _batch(6)
    logp = logp.detach().requires_grad_()
    fn = core_algos.get_policy_loss_fn("relate_checked")
    zero = torch.zeros_like(logp)
    loss, metrics = fn(logp.detach(), logp, zero, mask, "token-mean", _actor_config())
    assert float(loss) == 0.0 and metrics["actor/relate_minus_vanilla"] == 0.0
    assert abs(metrics["actor/probe_vanilla_pg_loss"]) > 1e-3  # the probe compared something
    assert metrics["actor/probe_relate_minus_vanilla"] == pytest.approx(0.0, abs=1e-7)
    assert metrics["actor/probe_grad_rel_diff"] < 1e-6
    (grad,) = torch.autograd.grad(loss, logp)
    assert not grad.any()  # the probe's advantages never reach the step's gradient
    far = verl_check.probe(logp.detach() - 2.0, logp, mask, "token-mean", _actor_config())  # verl's dual clip acts
    assert abs(far["actor/probe_relate_minus_vanilla"]) > 1e-3 and far["actor/probe_grad_rel_diff"] > 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("loss_type, agg", MODES)
def test_on_the_gpu_the_triton_loss_equals_real_verls_vanilla_within_bf16_noise(loss_type, agg):
    """The fused loss as a verl run on the GPU computes it (triton backend, bf16 hidden states and lm_head,
    a Qwen3-sized vocabulary) against verl's own vanilla loss on float64 log-probs of the same bf16 operands;
    and its gradient against autograd through verl's loss."""
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")
    g = torch.Generator().manual_seed(0)
    B, T, H, V = 5, 67, 256, 151_936
    hidden = (torch.randn(B, T, H, generator=g) * 0.5).to("cuda", torch.bfloat16).requires_grad_()
    weight = (torch.randn(V, H, generator=g) * 0.05).to("cuda", torch.bfloat16)
    targets = torch.randint(0, V, (B, T), generator=g).cuda()
    mask = (torch.rand(B, T, generator=g) > 0.2).double().cuda()
    adv = torch.randn(B, generator=g, dtype=torch.float64).cuda()
    h64 = hidden.detach().double().requires_grad_()
    logp = torch.log_softmax(h64 @ weight.double().T, -1).gather(-1, targets[..., None])[..., 0]
    old = logp.detach() + torch.randn(B, T, generator=g, dtype=torch.float64).cuda() * 0.3
    ours, _ = fused_grpo_loss(hidden, weight, targets, mask, adv.float(), old_logprobs=old.float(), eps_low=0.2,
                              eps_high=0.28, loss_type=loss_type, backend="triton")
    theirs, _ = core_algos.compute_policy_loss_vanilla(old, logp, adv[:, None].expand_as(logp), mask, agg,
                                                       _actor_config(clip_ratio_c=1e9))
    if loss_type != "bnpo":  # ours averages over all B sequences, verl over the non-empty ones
        theirs = theirs * (mask.sum(-1) > 0).sum() / mask.shape[0]
    ours.backward()
    theirs.backward()
    assert abs(float(ours) - float(theirs)) <= 2e-2 * max(abs(float(theirs)), 1e-3)
    rel = (hidden.grad.double() - h64.grad).norm() / h64.grad.norm()
    assert rel < 2e-2, float(rel)


def _tiny_qwen3(seed=0):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, tie_word_embeddings=True)
    return Qwen3ForCausalLM(cfg).float()


def test_use_fused_logprobs_gives_verls_fused_forward_our_kernels_with_the_same_logprobs_and_gradients(monkeypatch):
    """verl's own fused-kernel forward (`forward_with_triton_backend`, what its actor runs with use_fused_kernels and
    the triton backend) with relate_fast's log-probs in place of verl's Triton kernel, against verl's torch backend
    of the same forward (`forward_with_torch_backend`, its chunked FusedLinearForPPO) on a tiny Qwen3 with tied
    embeddings, fp32: the same log-probs and entropy, and every parameter's gradient of Σ a·logp the same."""
    import verl.utils.kernel.linear_cross_entropy as lce
    from verl.models.transformers.dense_common import forward_with_torch_backend, forward_with_triton_backend

    monkeypatch.setattr(lce, "linear_cross_entropy", lce.linear_cross_entropy)  # restored after the test
    ids = torch.randint(0, 97, (2, 13), generator=torch.Generator().manual_seed(1))
    weights = torch.randn(2, 13, generator=torch.Generator().manual_seed(2))
    results = []
    for forward in (forward_with_torch_backend, forward_with_triton_backend):
        if forward is forward_with_triton_backend:
            relate_verl.use_fused_logprobs(chunk_size=7)  # several chunks
        model = _tiny_qwen3()
        out = forward(model, input_ids=ids, return_dict=True, temperature=0.8)
        logp, ent = out.log_probs.reshape(ids.shape), out.entropy.reshape(ids.shape)
        (logp * weights).sum().backward()
        results.append((logp.detach(), ent.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}))
    (lp_v, ent_v, g_v), (lp_r, ent_r, g_r) = results
    assert torch.allclose(lp_r, lp_v, atol=1e-5) and torch.allclose(ent_r, ent_v, atol=1e-5)
    assert g_v.keys() == g_r.keys()
    for name in g_v:
        assert torch.allclose(g_r[name], g_v[name], rtol=1e-4, atol=1e-6), name


def test_our_linear_cross_entropy_refuses_what_verls_forward_never_asks():
    h, w, t = torch.randn(5, 8), torch.randn(11, 8), torch.randint(0, 11, (5,))
    with pytest.raises(NotImplementedError, match="reduction"):
        relate_verl.linear_cross_entropy(h, w, t, 1.0, "mean")
    with pytest.raises(NotImplementedError, match="process group"):
        relate_verl.linear_cross_entropy(h, w, t, 1.0, "none", object())
