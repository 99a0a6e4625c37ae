"""The logits GEMM with the row statistics in its epilogue (relate_fast.kernels.logits_gemm) against
float64, and the loss's "epilogue" path against the fp32 path, at odd shapes. On CPU machines the
interpreter runs the kernels (TRITON_INTERPRET=1 in conftest), its GEMM multiplying in fp32 (its
bf16 dot product is wrong) and its bf16 conversion truncating (twice the rounding error of the GPU's:
the tolerances allow for it)."""
import pytest
import torch

from relate_fast import fused_grpo_loss, fused_logprobs
from relate_fast.kernels import logits_gemm as lg
from relate_fast.loss.rows import resolve_logits_path
from tests.test_loss import reference

interpreted = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests run on CPU machines")


def float64_rows(h, w, targets, inv_temp):
    z = (h.double() @ w.double().t()) * inv_temp
    lse = torch.logsumexp(z, dim=1)
    p = torch.softmax(z, dim=1)
    return z, lse, z.gather(1, targets[:, None]).squeeze(1), lse - (p * z).sum(1), p


def float64_dlogits(g, targets, p, inv_temp):
    return g.double()[:, None] * (torch.nn.functional.one_hot(targets, p.shape[1]).double() - p) * inv_temp


def rel(a, b):
    return ((a.double() - b).norm() / b.norm().clamp_min(1e-30)).item()


@interpreted
@pytest.mark.parametrize("C,K,V", [(1, 16, 8), (70, 24, 1000), (130, 72, 2056)])  # V: partial last tile
# the default config, and two others with other tile shapes and epilogues; temperatures alternate
@pytest.mark.parametrize("config,inv_temp", [("128x256x64w8s3fs", 1 / 0.7), ("128x256x64w8s3", 1.0),
                                             ("128x128x64w4s4", 1 / 0.7)])
def test_epilogue_statistics_and_probabilities_match_float64(C, K, V, config, inv_temp):
    gen = torch.Generator().manual_seed(C + K + V)
    h = torch.randn(C, K, generator=gen).bfloat16()
    w = (torch.randn(V, K, generator=gen) * 3 / K**0.5).bfloat16()  # logits spread enough for rows past CAP
    targets = torch.randint(0, V, (C,), generator=gen)
    targets[0] = V - 1  # the last column of the partial tile
    z, lse_r, zt_r, ent_r, p_r = float64_rows(h, w, targets, inv_temp)
    zt = lg.target_logits(h, w, targets, inv_temp)
    torch.testing.assert_close(zt.double(), zt_r, rtol=1e-5, atol=1e-5)
    P = torch.full((C, V), float("nan"), dtype=torch.bfloat16)  # poisoned: every element must be written
    mp, sp, tp = lg.logits_stats(h, w, inv_temp, True, p_out=P, ref=zt, config=config)
    lse, ent, top = lg.combine_stats(mp, sp, tp)
    torch.testing.assert_close(lse.double(), lse_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent.double(), ent_r, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(top.double(), z.max(dim=1).values, rtol=1e-5, atol=1e-5)
    BN = lg.CONFIGS[config][1]
    assert mp.shape == (C, -(-V // BN))
    # each tile relative to its reference r = max(z_tgt, tile max - CAP)
    r = torch.maximum(zt.double()[:, None], mp.double() - lg.CAP).repeat_interleave(BN, dim=1)[:, :V]
    assert not torch.isnan(P).any() and P.float().max() <= torch.exp(torch.tensor(lg.CAP)) * 1.01
    torch.testing.assert_close(P.double(), torch.exp(z - r), rtol=1e-2, atol=0)
    # without p_out: the same statistics, nothing else written
    mp2, sp2, tp2 = lg.logits_stats(h, w, inv_temp, False, config=config)
    assert tp2 is None
    torch.testing.assert_close(lg.combine_stats(mp2, sp2, None)[0], lse)
    g = torch.randn(C, generator=gen)
    g[-1] = 0.0  # a padded / clipped row: s = 0
    s, sh = lg.finish_rows(P, mp, zt, top, lse, g, targets, inv_temp, h, config=config)
    dz = s.double()[:, None] * P.double()
    ref = float64_dlogits(g, targets, p_r, inv_temp)
    assert rel(dz, ref) < 5e-3
    for i in range(C):  # every row on its own, the rows past CAP (rescaled) among them
        assert rel(dz[i], ref[i]) < 8e-3 or g[i] == 0
    assert s[-1] == 0
    torch.testing.assert_close(sh.double(), s.double()[:, None] * h.double(), rtol=1e-2, atol=1e-30)


@interpreted
def test_finish_rows_with_far_targets_and_garbage_rows():
    # row 0: its target 60 above the rest; row 1: its target 60 below the top (past CAP, rescaled);
    # row 2: NaN hidden with g = 0 (padding): a zero row, so the products stay finite; row 3: ordinary
    C, K, V = 4, 16, 512
    h = torch.zeros(C, K)
    h[:, 0] = 1.0
    h[3, 0], h[3, 1] = 0.0, 1.0
    w = torch.zeros(V, K)
    w[:, 0] = torch.linspace(-30, 30, V)
    w[7, 0] = 90.0
    w[:, 1] = torch.linspace(0, 2, V)
    h, w = h.bfloat16(), w.bfloat16()
    targets = torch.tensor([7, 256, 5, 300])
    z, lse_r, zt_r, ent_r, p_r = float64_rows(h, w, targets, 1.0)
    h[2, 3] = float("nan")
    zt = lg.target_logits(h, w, targets, 1.0)
    P = torch.empty(C, V, dtype=torch.bfloat16)
    mp, sp, tp = lg.logits_stats(h, w, 1.0, True, p_out=P, ref=zt, config="128x128x64w4s4")
    lse, ent, top = lg.combine_stats(mp, sp, tp)
    keep = [0, 1, 3]
    torch.testing.assert_close(lse[keep].double(), lse_r[keep])
    torch.testing.assert_close((zt - lse)[keep].double(), (zt_r - lse_r)[keep])
    g = torch.tensor([1.0, -2.0, 0.0, 0.5])
    s, sh = lg.finish_rows(P, mp, zt, top, lse, g, targets, 1.0, h, config="128x128x64w4s4")
    dz = s.double()[:, None] * P.double()
    ref = float64_dlogits(g, targets, p_r, 1.0)
    for i in keep:
        assert rel(dz[i], ref[i]) < 8e-3, i
    assert torch.equal(P[2].float(), torch.zeros(V)) and s[2] == 0 and torch.equal(sh[2].float(), torch.zeros(K))
    assert torch.isfinite(P.float().t() @ sh.float()).all()


def _loss_inputs(dtype, B=3, T=13, H=24, V=1000, seed=7):
    gen = torch.Generator().manual_seed(seed)
    hidden = torch.randn(B, T, H, generator=gen).to(dtype)
    weight = (torch.randn(V, H, generator=gen) * 2 / H**0.5).to(dtype)
    targets = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.rand(B, T, generator=gen) > 0.2
    old = fused_logprobs(hidden, weight, targets, backend="torch") + 0.3 * torch.randn(B, T, generator=gen)
    return gen, hidden, weight, targets, mask, old


@interpreted
@pytest.mark.parametrize("recompute", [False, True])
@pytest.mark.parametrize("adv_shape,beta,loss_type", [("B", 0.0, "grpo"), ("BT", 0.04, "dapo"), ("BT", 0.0, "seq_sum")])
def test_epilogue_path_agrees_with_fp32_path(monkeypatch, recompute, adv_shape, beta, loss_type):
    gen, hidden, weight, targets, mask, old = _loss_inputs(torch.bfloat16)
    B, T = targets.shape
    adv = torch.randn(B, generator=gen) if adv_shape == "B" else torch.randn(B, T, generator=gen)
    out = {}
    for path in ("fp32", "epilogue"):
        monkeypatch.setenv("RELATE_FAST_LOGITS", path)
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss, metrics = fused_grpo_loss(h, w, targets, mask, adv, old_logprobs=old, ref_logprobs=old - 0.1,
                                        beta=beta, loss_type=loss_type, temperature=0.8, chunk_size=16,
                                        return_entropy=True, backend="triton", recompute=recompute)
        (2.0 * loss).backward()  # a non-unit upstream gradient
        out[path] = (loss.detach(), h.grad, w.grad, metrics["entropy"], metrics["clip_ratio"])
    ref = reference(hidden, weight.clone().requires_grad_(), targets, mask, adv, old_logprobs=old,
                    ref_logprobs=old - 0.1, beta=beta, loss_type=loss_type, temperature=0.8)  # float64
    for i, name in enumerate(("loss", "grad_hidden", "grad_weight")):
        want = ref[i] * (1.0 if i == 0 else 2.0)
        err = {p: rel(out[p][i], want) for p in out}
        # within bf16's error: P'ᵀ(s ⊙ h) rounds two operands where dzᵀh rounds one, and the
        # interpreter truncates (a bias, not noise), so grad_weight may be 2.5x the fp32 path's here; on
        # the GPU (round to nearest) the GPU test below holds it to 1.5x
        assert err["epilogue"] < max(2.5 * err["fp32"], 2e-3), (name, err)
    for a, b in zip(out["fp32"][3:], out["epilogue"][3:]):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-4)


@interpreted
@pytest.mark.parametrize("frozen", ["weight", "hidden"])
def test_epilogue_path_with_one_input_frozen(monkeypatch, frozen):
    # grad_h alone (no s ⊙ h, no grad_W product), or grad_W alone (no P @ W)
    gen, hidden, weight, targets, mask, old = _loss_inputs(torch.bfloat16, B=2, T=9)
    adv = torch.randn(2, generator=gen)
    grads = {}
    for path in ("fp32", "epilogue"):
        monkeypatch.setenv("RELATE_FAST_LOGITS", path)
        h = hidden.clone().requires_grad_(frozen != "hidden")
        w = weight.clone().requires_grad_(frozen != "weight")
        fused_grpo_loss(h, w, targets, mask, adv, old_logprobs=old, backend="triton")[0].backward()
        assert (h.grad is None) == (frozen == "hidden") and (w.grad is None) == (frozen == "weight")
        grads[path] = (h if frozen == "weight" else w).grad.float()
    assert rel(grads["epilogue"], grads["fp32"].double()) < 1e-2


@interpreted
def test_epilogue_logprobs_agree_with_fp32_path(monkeypatch):
    _, hidden, weight, targets, _, _ = _loss_inputs(torch.bfloat16, B=2, T=37, V=2056)
    out = {}
    for path in ("fp32", "epilogue"):
        monkeypatch.setenv("RELATE_FAST_LOGITS", path)
        out[path] = fused_logprobs(hidden, weight, targets, return_entropy=True, temperature=1.2, backend="triton")
    for a, b in zip(out["fp32"], out["epilogue"]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_logits_path_choice_and_errors(monkeypatch):
    h = torch.zeros(4, 16, dtype=torch.bfloat16)
    w = torch.zeros(24, 16, dtype=torch.bfloat16)
    monkeypatch.setenv("RELATE_FAST_LOGITS", "fp32")
    assert resolve_logits_path("triton", h, w) == "fp32"
    monkeypatch.setenv("RELATE_FAST_LOGITS", "fast")
    with pytest.raises(ValueError, match="RELATE_FAST_LOGITS must be one of"):
        resolve_logits_path("triton", h, w)
    monkeypatch.setenv("RELATE_FAST_LOGITS", "epilogue")
    with pytest.raises(ValueError, match="triton backend only"):
        resolve_logits_path("torch", h, w)
    if lg.available(h.device):
        assert resolve_logits_path("triton", h, w) == "epilogue"
        for dt in (torch.float32, torch.float16):  # fp16: the stored probabilities need bf16's range
            with pytest.raises(ValueError, match="bf16 operands"):
                resolve_logits_path("triton", h.to(dt), w.to(dt))
        with pytest.raises(ValueError, match="multiples of 8"):
            resolve_logits_path("triton", h, w[:21])
        monkeypatch.setenv("RELATE_FAST_LOGITS", "auto")  # falls back instead of failing
        assert resolve_logits_path("triton", h, w[:21]) == "fp32"
        assert resolve_logits_path("triton", h.half(), w.half()) == "fp32"
        if h.device.type == "cpu":  # under the interpreter, auto keeps the fp32 path
            assert resolve_logits_path("triton", h, w) == "fp32"
        monkeypatch.setenv("RELATE_FAST_LOGITS", "epilogue")
        with pytest.raises(ValueError, match="16-byte"):
            resolve_logits_path("triton", h.reshape(-1)[1:33].reshape(2, 16), w)


@pytest.mark.gpu
def test_epilogue_path_on_gpu_against_float64(monkeypatch):
    if not lg.available(torch.device("cuda")):
        pytest.skip("the epilogue GEMM needs a Hopper GPU")
    dtype = torch.bfloat16
    probe = torch.zeros(8, 64, device="cuda", dtype=dtype)
    assert resolve_logits_path("triton", probe, probe) == "epilogue"  # the default on Hopper
    assert resolve_logits_path("triton", probe.half(), probe.half()) == "fp32"
    monkeypatch.setenv("RELATE_FAST_LOGITS", "epilogue")
    gen = torch.Generator(device="cuda").manual_seed(1)
    B, T, H, V = 3, 700, 512, 50008  # rows past one 128-row tile, a partial last vocabulary tile
    hidden = torch.randn(B, T, H, device="cuda", generator=gen).to(dtype)
    weight = (torch.randn(V, H, device="cuda", generator=gen) * 0.1).to(dtype)
    targets = torch.randint(0, V, (B, T), device="cuda", generator=gen)
    mask = torch.rand(B, T, device="cuda", generator=gen) > 0.1
    adv = torch.randn(B, T, device="cuda", generator=gen)
    temp = 0.4  # logits/T spread ~ ±40: the least likely targets below are past CAP (rows rescaled)
    targets[0, :40] = (hidden[0, :40].float() @ weight.float().t()).argmin(dim=1)
    old = fused_logprobs(hidden, weight, targets, temperature=temp) + 0.2 * torch.randn(B, T, device="cuda",
                                                                                        generator=gen)
    ref_loss, ref_gh, ref_gw, logp = reference(hidden, weight.clone().requires_grad_(), targets, mask, adv,
                                               old_logprobs=old, temperature=temp, eps_low=0.99,
                                               eps_high=10.0)  # float64
    errs = {}
    for path in ("fp32", "epilogue"):
        monkeypatch.setenv("RELATE_FAST_LOGITS", path)
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss, _ = fused_grpo_loss(h, w, targets, mask, adv, old_logprobs=old, chunk_size=1000, temperature=temp,
                                  eps_low=0.99, eps_high=10.0)  # no clipping: the far rows keep their gradient
        loss.backward()
        errs[path] = (rel(loss, ref_loss), rel(h.grad, ref_gh), rel(w.grad, ref_gw), rel(h.grad[0, :40], ref_gh[0, :40]))
    loss_err, gh_err, gw_err, far_err = errs["epilogue"]
    # peaked softmaxes (T = 0.4): bf16 gradients of both paths ~1e-2 from float64 (seen: 1.2e-2)
    assert loss_err < 1e-3 and gh_err < 3e-2 and gw_err < 3e-2 and far_err < 3e-2, errs
    for a, b in zip(errs["epilogue"][1:], errs["fp32"][1:]):  # gradients: within bf16's error of the fp32 path's
        assert a < 1.5 * b + 1e-4, errs
    assert rel(fused_logprobs(hidden, weight, targets, temperature=temp), logp) < 1e-4
