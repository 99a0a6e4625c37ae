"""The logits GEMM with the row statistics in its epilogue (relate_fast.kernels.logits_gemm) against
float64, and the loss's "epilogue" path against the fp32 path, at odd shapes. On CPU machines the
interpreter runs the kernels (TRITON_INTERPRET=1 in conftest) in fp16: its bf16 matrix product is
wrong (checked with Triton 3.9: errors of 1e10 on a 16×16 product), so bf16 runs on the GPU only."""
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


@interpreted
@pytest.mark.parametrize("C,K,V", [(1, 16, 8), (70, 24, 1000), (130, 72, 2056)])  # V: partial last tile
# the default config, and two others with other tile shapes and epilogues; temperatures alternate
@pytest.mark.parametrize("config,inv_temp", [("128x256x64w8s3fs", 1 / 0.7), ("128x256x64w8s3", 1.0),
                                             ("128x128x64w4s4", 1 / 0.7)])
def test_epilogue_statistics_and_dlogits_match_float64(C, K, V, config, inv_temp):
    gen = torch.Generator().manual_seed(C + K + V)
    h = torch.randn(C, K, generator=gen).half()
    w = (torch.randn(V, K, generator=gen) * 3 / K**0.5).half()
    targets = torch.randint(0, V, (C,), generator=gen)
    targets[0] = V - 1  # the last column of the partial tile
    z, lse_r, zt_r, ent_r, p = float64_rows(h, w, targets, inv_temp)
    z16 = torch.full((C, V), float("nan"), dtype=torch.float16)  # poisoned: every element must be written
    mp, sp, tp, zt = lg.logits_stats(h, w, targets, inv_temp, True, z_out=z16, config=config)
    lse, ent = lg.combine_stats(mp, sp, tp)
    torch.testing.assert_close(lse.double(), lse_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zt.double(), zt_r, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ent.double(), ent_r, rtol=1e-4, atol=1e-4)
    BN = lg.CONFIGS[config][1]
    assert mp.shape == (C, -(-V // BN))
    tile_max = mp.double().repeat_interleave(BN, dim=1)[:, :V]
    assert not torch.isnan(z16).any()
    assert (z16 <= 0).all()  # relative to each tile's own max
    torch.testing.assert_close(z16.double() + tile_max, z, rtol=0, atol=2e-3 * z.abs().max().item())
    # without z_out: the same statistics, nothing else written
    mp2, sp2, tp2, zt2 = lg.logits_stats(h, w, targets, inv_temp, False, config=config)
    assert tp2 is None
    torch.testing.assert_close(lg.combine_stats(mp2, sp2, None)[0], lse)
    g = torch.randn(C, generator=gen)
    g[-1] = 0.0  # a padded / clipped row: exact zeros
    dz = lg.dlogits_from_tiles(z16, mp, targets, lse, g, inv_temp, torch.float16, config=config)
    assert dz.dtype == torch.float16 and dz.data_ptr() == z16.data_ptr()  # in place
    ref = g.double()[:, None] * (torch.nn.functional.one_hot(targets, V).double() - p) * inv_temp
    assert ((dz.double() - ref).norm() / ref.norm().clamp_min(1e-30)).item() < 2e-3
    assert torch.equal(dz[-1].float(), torch.zeros(V))


@interpreted
def test_epilogue_survives_extreme_logits():
    # one logit far above the rest in its tile, tiles whose max differ by 60: fp16 `z - m` stays exact
    # where the probability is, and underflows to -inf harmlessly where it is not
    C, K, V = 3, 16, 512
    h = torch.zeros(C, K)
    h[:, 0] = 1.0
    w = torch.zeros(V, K)
    w[:, 0] = torch.linspace(-30, 30, V)
    w[7, 0] = 90.0
    h, w = h.half(), w.half()
    targets = torch.tensor([7, 0, 300])
    z, lse_r, zt_r, ent_r, p = float64_rows(h, w, targets, 1.0)
    z16 = torch.empty(C, V, dtype=torch.float16)
    mp, sp, tp, zt = lg.logits_stats(h, w, targets, 1.0, True, z_out=z16, config="128x128x64w4s4")
    lse, ent = lg.combine_stats(mp, sp, tp)
    assert torch.isfinite(lse).all() and torch.isfinite(ent).all()
    torch.testing.assert_close(lse.double(), lse_r)
    torch.testing.assert_close((zt - lse).double(), zt_r - lse_r)
    dz = lg.dlogits_from_tiles(z16, mp, targets, lse, torch.ones(C), 1.0, torch.float16, config="128x128x64w4s4")
    ref = torch.nn.functional.one_hot(targets, V).double() - p
    torch.testing.assert_close(dz.double(), ref, rtol=0, atol=2e-3)


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
    gen, hidden, weight, targets, mask, old = _loss_inputs(torch.float16)
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
        out[path] = (loss.detach(), h.grad.float(), w.grad.float(), metrics["entropy"], metrics["clip_ratio"])
    for a, b in zip(out["fp32"], out["epilogue"]):
        torch.testing.assert_close(b, a, rtol=2e-3, atol=2e-3 * max(1e-3, a.abs().max().item()))


@interpreted
def test_epilogue_logprobs_agree_with_fp32_path(monkeypatch):
    _, hidden, weight, targets, _, _ = _loss_inputs(torch.float16, B=2, T=37, V=2056)
    out = {}
    for path in ("fp32", "epilogue"):
        monkeypatch.setenv("RELATE_FAST_LOGITS", path)
        out[path] = fused_logprobs(hidden, weight, targets, return_entropy=True, temperature=1.2, backend="triton")
    for a, b in zip(out["fp32"], out["epilogue"]):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_logits_path_choice_and_errors(monkeypatch):
    h = torch.zeros(4, 16, dtype=torch.float16)
    w = torch.zeros(24, 16, dtype=torch.float16)
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
        with pytest.raises(ValueError, match="bf16 or fp16"):
            resolve_logits_path("triton", h.float(), w.float())
        with pytest.raises(ValueError, match="multiples of 8"):
            resolve_logits_path("triton", h, w[:21])
        monkeypatch.setenv("RELATE_FAST_LOGITS", "auto")  # falls back instead of failing
        assert resolve_logits_path("triton", h, w[:21]) == "fp32"
        if h.device.type == "cpu":  # under the interpreter, auto keeps the fp32 path
            assert resolve_logits_path("triton", h, w) == "fp32"
        monkeypatch.setenv("RELATE_FAST_LOGITS", "epilogue")
        with pytest.raises(ValueError, match="16-byte"):
            resolve_logits_path("triton", h.reshape(-1)[1:33].reshape(2, 16), w)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_epilogue_path_on_gpu_against_float64(monkeypatch, dtype):
    if not lg.available(torch.device("cuda")):
        pytest.skip("the epilogue GEMM needs a Hopper GPU")
    probe = torch.zeros(8, 64, device="cuda", dtype=dtype)
    assert resolve_logits_path("triton", probe, probe) == "epilogue"  # the default on Hopper
    monkeypatch.setenv("RELATE_FAST_LOGITS", "epilogue")
    gen = torch.Generator(device="cuda").manual_seed(1)
    B, T, H, V = 3, 700, 512, 50008  # rows past one 128-row tile, a partial last vocabulary tile
    hidden = torch.randn(B, T, H, device="cuda", generator=gen).to(dtype)
    weight = (torch.randn(V, H, device="cuda", generator=gen) * 0.1).to(dtype)
    targets = torch.randint(0, V, (B, T), device="cuda", generator=gen)
    mask = torch.rand(B, T, device="cuda", generator=gen) > 0.1
    adv = torch.randn(B, T, device="cuda", generator=gen)
    old = fused_logprobs(hidden, weight, targets) + 0.2 * torch.randn(B, T, device="cuda", generator=gen)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss, _ = fused_grpo_loss(h, w, targets, mask, adv, old_logprobs=old, chunk_size=1000)
    loss.backward()
    ref_loss, ref_gh, ref_gw, logp = reference(hidden, w, targets, mask, adv, old_logprobs=old)  # float64
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(loss, ref_loss) < 1e-3
    assert rel(h.grad, ref_gh) < 1e-2 and rel(w.grad, ref_gw) < 1e-2
    assert rel(fused_logprobs(hidden, weight, targets), logp) < 1e-4
