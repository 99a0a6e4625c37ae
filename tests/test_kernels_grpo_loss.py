"""The Triton row kernels of the fused GRPO loss (relate_fast.kernels.grpo_loss) against float64,
run by the interpreter on CPU (TRITON_INTERPRET=1 in conftest); the GPU test runs them compiled."""
import pytest
import torch

from relate_fast import fused_grpo_loss, fused_logprobs
from relate_fast.kernels.grpo_loss import dlogits_buffer, row_dlogits, row_stats

interpreted = pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests run on CPU machines")


def reference_rows(z, targets, inv_temp, g):
    zs = z.double() * inv_temp
    logp = torch.log_softmax(zs, dim=1)
    lse = torch.logsumexp(zs, dim=1)
    onehot = torch.nn.functional.one_hot(targets, z.shape[1]).double()
    dz = g.double()[:, None] * (onehot - logp.exp()) * inv_temp
    return lse, zs.gather(1, targets[:, None]).squeeze(1), -(logp.exp() * logp).sum(1), dz


@interpreted
@pytest.mark.parametrize("C,V", [(1, 5), (7, 131), (5, 2049), (3, 4500)])  # 4500: three 2048-wide tiles, last partial
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("inv_temp", [1.0, 1 / 0.7])
def test_row_kernels_match_float64(C, V, dtype, inv_temp):
    gen = torch.Generator().manual_seed(C * V)
    z = torch.randn(C, V, generator=gen) * 4
    targets = torch.randint(0, V, (C,), generator=gen)
    g = torch.randn(C, generator=gen)
    g[0] = 0.0  # a padded / clipped row: exact zeros
    ref_lse, ref_zt, ref_ent, ref_dz = reference_rows(z, targets, inv_temp, g)
    lse, zt, ent = row_stats(z, targets, inv_temp, True)
    torch.testing.assert_close(lse.double(), ref_lse, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zt.double(), ref_zt, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ent.double(), ref_ent, rtol=1e-4, atol=1e-4)
    out = dlogits_buffer(z, dtype)  # aliases z for 16-bit dtypes: written in place
    assert out.dtype == dtype and out.shape == (C, V)
    row_dlogits(z, targets, lse, g, inv_temp, out)
    tol = 1e-6 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(out.double(), ref_dz, rtol=tol, atol=tol * ref_dz.abs().max().item())
    assert torch.equal(out[0].float(), torch.zeros(V))


@interpreted
def test_row_stats_extreme_and_masked_values():
    z = torch.tensor([[1e4, -1e4, 0.0, 3.0], [-3e38, -3e38, -3e38, 5.0], [0.0, 0.0, 0.0, 0.0]])
    targets = torch.tensor([1, 3, 2])
    lse, zt, ent = row_stats(z, targets, 1.0, True)
    ref_lse, ref_zt, ref_ent, _ = reference_rows(z, targets, 1.0, torch.zeros(3))
    assert torch.isfinite(lse).all() and torch.isfinite(ent).all()
    torch.testing.assert_close(lse.double(), ref_lse)
    torch.testing.assert_close(ent.double(), ref_ent, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close((zt - lse).double(), ref_zt - ref_lse)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_recompute_path_equals_gradients_in_forward(backend):
    if backend == "triton" and torch.cuda.is_available():
        pytest.skip("CPU tensors")
    gen = torch.Generator().manual_seed(3)
    B, T, H, V = 3, 5, 12, 301
    hidden = torch.randn(B, T, H, generator=gen)
    weight = torch.randn(V, H, generator=gen) / H**0.5
    targets = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.rand(B, T, generator=gen) > 0.2
    adv = torch.randn(B, T, generator=gen)
    old = fused_logprobs(hidden, weight, targets) + 0.3 * torch.randn(B, T, generator=gen)
    grads = []
    for recompute in (False, True):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss, _ = fused_grpo_loss(h, w, targets, mask, adv, old_logprobs=old, chunk_size=4, backend=backend,
                                  recompute=recompute, temperature=0.9)
        (3.0 * loss).backward()  # a non-unit upstream gradient
        grads.append((loss.detach(), h.grad, w.grad))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@interpreted
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_triton_and_torch_backends_agree_at_odd_shapes(dtype):
    gen = torch.Generator().manual_seed(5)
    B, T, H, V = 2, 11, 24, 3001  # V: one full and one partial 2048-wide tile
    hidden = torch.randn(B, T, H, generator=gen).to(dtype)
    weight = (torch.randn(V, H, generator=gen) / H**0.5).to(dtype)
    targets = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.ones(B, T, dtype=torch.bool)
    mask[1, 6:] = False
    adv = torch.randn(B, generator=gen)
    ref = fused_logprobs(hidden, weight, targets) + 0.2 * torch.randn(B, T, generator=gen)
    r_tok = -torch.rand(B, T, generator=gen)
    out = {}
    for backend in ("torch", "triton"):
        h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        loss, metrics = fused_grpo_loss(h, w, targets, mask, adv, token_rewards=r_tok,
                                        ref_logprobs=ref, beta=0.04, temperature=1.3, chunk_size=7,
                                        return_entropy=True, backend=backend)
        loss.backward()
        out[backend] = (loss.detach(), h.grad.float(), w.grad.float(), metrics["entropy"], metrics["kl"])
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    for a, b in zip(out["torch"], out["triton"]):
        torch.testing.assert_close(a, b, rtol=tol, atol=tol * max(1e-3, b.abs().max().item()))


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_compiled_triton_backend_on_gpu(dtype):
    gen = torch.Generator(device="cuda").manual_seed(0)
    B, T, H, V = 4, 300, 256, 10007
    hidden = torch.randn(B, T, H, device="cuda", generator=gen).to(dtype)
    weight = (torch.randn(V, H, device="cuda", generator=gen) * 0.06).to(dtype)
    targets = torch.randint(0, V, (B, T), device="cuda", generator=gen)
    mask = torch.rand(B, T, device="cuda", generator=gen) > 0.1
    adv = torch.randn(B, T, device="cuda", generator=gen)
    old = fused_logprobs(hidden, weight, targets) + 0.2 * torch.randn(B, T, device="cuda", generator=gen)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss, _ = fused_grpo_loss(h, w, targets, mask, adv, old_logprobs=old, ref_logprobs=old - 0.1, beta=0.04,
                              chunk_size=512, backend="triton")
    loss.backward()
    # float64 reference on the same (rounded) inputs
    hd, wd = hidden.double().requires_grad_(), weight.double().requires_grad_()
    logp = torch.log_softmax(hd @ wd.t(), -1).gather(-1, targets[..., None]).squeeze(-1)
    ratio = torch.exp(logp - old.double())
    per = -torch.minimum(ratio * adv.double(), ratio.clamp(0.8, 1.2) * adv.double())
    d = (old - 0.1).double() - logp
    per = per + 0.04 * (torch.exp(d) - d - 1)
    m = mask.double()
    ref_loss = ((per * m).sum(1) / m.sum(1).clamp(min=1)).mean()
    ref_loss.backward()
    rel = lambda a, b: ((a.double() - b).norm() / b.norm()).item()  # noqa: E731
    assert rel(loss, ref_loss.detach()) < 1e-3
    assert rel(h.grad, hd.grad) < 1e-2 and rel(w.grad, wd.grad) < 1e-2
    lp = fused_logprobs(hidden, weight, targets)
    assert rel(lp, logp.detach()) < 1e-3


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("n", [1, 4097, 100_003])
def test_scale_unless_one(device, dtype, n):
    from relate_fast.kernels.grpo_loss import scale_unless_one_

    x = torch.randn(n, device=device).to(dtype)
    before = x.clone()
    assert scale_unless_one_(x, torch.ones((), device=device)) is x
    assert torch.equal(x, before)  # untouched, bit for bit
    scale_unless_one_(x, torch.full((), 2.5, device=device))
    torch.testing.assert_close(x.float(), (before.float() * 2.5).to(dtype).float(), rtol=0, atol=0)


@interpreted
def test_scale_unless_one_kernel_walks_every_block():
    # the CUDA path's persistent kernel, interpreted: 3 programs over 10 blocks and a partial one
    from relate_fast.kernels.grpo_loss import _scale_unless_one_kernel

    for n, s in ((10_000, 2.5), (77, 1.0), (5_000, -0.5)):
        x = torch.randn(n)
        before = x.clone()
        _scale_unless_one_kernel[(3,)](x, torch.tensor([s]), n, BLOCK=1024)
        assert torch.equal(x, before * s)
