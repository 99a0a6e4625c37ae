"""fused_logprobs_with_grad (log-probs with a backward, for losses that take log-probs) against float64 torch
autograd over the full logits, both backends (triton under TRITON_INTERPRET=1, set in conftest), odd shapes,
fp32 and bf16, several chunks; and its verl entry point against verl's own fused-kernel forward."""
import os

import pytest
import torch

from relate_fast.loss import BACKENDS, fused_logprobs, fused_logprobs_with_grad

backends = pytest.mark.parametrize("backend", [
    pytest.param(b, marks=pytest.mark.skipif(b == "triton" and os.environ.get("TRITON_INTERPRET") != "1",
                                             reason="CPU tensors need TRITON_INTERPRET=1")) for b in BACKENDS])


def _inputs(shape, H, V, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(*shape, H, generator=g).to(dtype).requires_grad_(True)
    weight = (torch.randn(V, H, generator=g) / H**0.5).to(dtype).requires_grad_(True)
    targets = torch.randint(0, V, shape, generator=g)
    upstream = torch.randn(*shape, generator=g)  # d(loss)/d(logp): any per-token weights a loss puts on them
    return hidden, weight, targets, upstream


def _reference(hidden, weight, targets, upstream, temperature):
    h = hidden.detach().double().requires_grad_(True)
    w = weight.detach().double().requires_grad_(True)
    logits = h @ w.t() / temperature
    logp = torch.log_softmax(logits, -1).gather(-1, targets[..., None]).squeeze(-1)
    p = torch.softmax(logits, -1)
    entropy = -(p * torch.log_softmax(logits, -1)).sum(-1)
    (logp * upstream.double()).sum().backward()
    return logp.detach(), entropy.detach(), h.grad, w.grad


def _rel(a, b):
    return ((a.double() - b).norm() / b.norm().clamp(min=1e-30)).item()


@backends
@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
@pytest.mark.parametrize("shape,H,V,chunk,temperature", [((3, 7), 16, 37, 5, 1.0), ((1, 29), 24, 61, 8, 0.7),
                                                        ((41,), 8, 19, None, 1.3)])
def test_logprobs_and_their_gradients_match_float64_autograd(backend, dtype, tol, shape, H, V, chunk, temperature):
    hidden, weight, targets, upstream = _inputs(shape, H, V, dtype)
    logp, ent = fused_logprobs_with_grad(hidden, weight, targets, temperature=temperature, return_entropy=True,
                                         chunk_size=chunk, backend=backend)
    assert logp.shape == ent.shape == targets.shape and logp.dtype == torch.float32
    (logp * upstream).sum().backward()
    ref_logp, ref_ent, ref_gh, ref_gw = _reference(hidden, weight, targets, upstream, temperature)
    # the inputs are rounded to dtype first: the float64 reference takes the same rounded values
    assert _rel(logp.detach(), ref_logp) < tol and _rel(ent.detach(), ref_ent) < tol
    assert hidden.grad.dtype == dtype and weight.grad.dtype == dtype
    assert _rel(hidden.grad, ref_gh) < tol and _rel(weight.grad, ref_gw) < tol
    # the forward is the no-grad pass's, value for value
    same = fused_logprobs(hidden.detach(), weight.detach(), targets, temperature=temperature, chunk_size=chunk,
                          backend=backend)
    assert torch.equal(same, logp.detach())


def test_only_the_inputs_that_need_a_gradient_get_one_and_no_upstream_means_no_work():
    hidden, weight, targets, upstream = _inputs((2, 5), 8, 13, torch.float32)
    weight.requires_grad_(False)
    logp = fused_logprobs_with_grad(hidden, weight, targets, chunk_size=3, backend="torch")
    (logp * upstream).sum().backward()
    _, _, ref_gh, _ = _reference(hidden, weight, targets, upstream, 1.0)
    assert weight.grad is None and _rel(hidden.grad, ref_gh) < 1e-5


def test_a_gradient_through_the_entropy_is_refused_and_a_zero_one_passes():
    """verl adds −entropy_coeff·entropy to its loss whenever the forward returns an entropy: with coefficient 0
    a zero gradient reaches it, which is fine; any other would be silently dropped, so it is an error."""
    hidden, weight, targets, upstream = _inputs((2, 5), 8, 13, torch.float32)
    logp, ent = fused_logprobs_with_grad(hidden, weight, targets, return_entropy=True, backend="torch")
    ((logp * upstream).sum() - 0.0 * ent.sum()).backward()
    assert hidden.grad is not None
    logp, ent = fused_logprobs_with_grad(hidden, weight, targets, return_entropy=True, backend="torch")
    with pytest.raises(NotImplementedError, match="entropy"):
        ((logp * upstream).sum() - 0.01 * ent.sum()).backward()


def test_bad_inputs_are_named():
    hidden, weight, targets, _ = _inputs((2, 5), 8, 13, torch.float32)
    with pytest.raises(ValueError, match="weight must have shape"):
        fused_logprobs_with_grad(hidden, weight[:, :4], targets)
    with pytest.raises(ValueError, match="temperature"):
        fused_logprobs_with_grad(hidden, weight, targets, temperature=0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="interpreter tests run on CPU machines")
def test_the_epilogue_path_gives_the_fp32_paths_logprobs_and_gradients(monkeypatch):
    """The logits GEMM with its statistics in the epilogue (the default on Hopper), run by the interpreter: the
    same log-probs as the fp32 path and gradients within bf16's rounding of them."""
    hidden, weight, targets, upstream = _inputs((2, 37), 32, 2056, torch.bfloat16)
    out = {}
    for path in ("fp32", "epilogue"):
        monkeypatch.setenv("RELATE_FAST_LOGITS", path)
        h, w = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
        logp = fused_logprobs_with_grad(h, w, targets, temperature=1.2, chunk_size=40, backend="triton")
        (logp * upstream).sum().backward()
        out[path] = (logp.detach(), h.grad, w.grad)
    torch.testing.assert_close(out["epilogue"][0], out["fp32"][0], rtol=1e-5, atol=1e-5)
    for a, b in zip(out["epilogue"][1:], out["fp32"][1:]):
        assert _rel(a, b.double()) < 1e-2


@pytest.mark.gpu
@pytest.mark.parametrize("path", ["fp32", "epilogue"])
def test_on_the_gpu_logprobs_and_gradients_match_float64(monkeypatch, path):
    """Both logits paths on the GPU (the epilogue GEMM needs Hopper), bf16, rows past one tile, a partial last
    vocabulary tile, several chunks: log-probs and gradients against float64 autograd."""
    from relate_fast.kernels import logits_gemm as lg

    if path == "epilogue" and not lg.available(torch.device("cuda")):
        pytest.skip("the epilogue GEMM needs a Hopper GPU")
    monkeypatch.setenv("RELATE_FAST_LOGITS", path)
    g = torch.Generator(device="cuda").manual_seed(0)
    B, T, H, V = 3, 700, 512, 50008
    hidden = torch.randn(B, T, H, device="cuda", generator=g).bfloat16().requires_grad_()
    weight = (torch.randn(V, H, device="cuda", generator=g) * 0.1).bfloat16().requires_grad_()
    targets = torch.randint(0, V, (B, T), device="cuda", generator=g)
    upstream = torch.randn(B, T, device="cuda", generator=g)
    logp, ent = fused_logprobs_with_grad(hidden, weight, targets, temperature=0.7, return_entropy=True, chunk_size=1000)
    (logp * upstream).sum().backward()
    ref_logp, ref_ent, ref_gh, ref_gw = _reference(hidden, weight, targets, upstream, 0.7)
    assert _rel(logp.detach(), ref_logp) < 1e-4 and _rel(ent.detach(), ref_ent) < 1e-3
    assert _rel(hidden.grad, ref_gh) < 2e-2 and _rel(weight.grad, ref_gw) < 2e-2
