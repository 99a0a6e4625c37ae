"""Triton logprobs kernel, run by the interpreter on CPU (TRITON_INTERPRET=1 is set in conftest),
against a float64 reference; on a GPU the same tests also run the compiled kernel (bf16 included)."""
import pytest
import torch

from relate_fast.kernels.logprobs import INTERPRET, logprobs

# CPU tensors run only through the interpreter; with TRITON_INTERPRET=0 (a GPU machine) only the
# compiled-kernel test below applies.
interpreted = pytest.mark.skipif(not INTERPRET, reason="CPU tensors need TRITON_INTERPRET=1")


def reference(hidden, weight, targets, temperature):
    logp = torch.log_softmax(hidden.double() @ weight.double().t() / temperature, dim=-1)
    return logp.gather(1, targets[:, None]).squeeze(1), -(logp.exp() * logp).sum(-1)


@interpreted
@pytest.mark.parametrize("N,V,H", [(1, 5, 3), (67, 131, 40), (130, 257, 70)])  # none a multiple of the blocks
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("splits", [1, 3])
def test_logprobs_and_entropy_match_float64(N, V, H, dtype, temperature, splits):
    g = torch.Generator().manual_seed(N * V + H)
    hidden = torch.randn(N, H, generator=g).to(dtype)
    weight = (torch.randn(V, H, generator=g) * 0.3).to(dtype)
    targets = torch.randint(0, V, (N,), generator=g)
    lp, ent = logprobs(hidden, weight, targets, temperature, return_entropy=True, splits=splits,
                       block_n=64, block_v=128, block_h=64)  # small tiles: several tiles per slice
    ref_lp, ref_ent = reference(hidden, weight, targets, temperature)
    assert torch.isfinite(lp).all() and torch.isfinite(ent).all()
    torch.testing.assert_close(lp.double(), ref_lp, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ent.double(), ref_ent, rtol=1e-4, atol=1e-4)


@interpreted
def test_extreme_logits_and_empty_input():
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(9, 16, generator=g) * 200
    weight = torch.randn(50, 16, generator=g)
    targets = torch.randint(0, 50, (9,), generator=g)
    lp = logprobs(hidden, weight, targets, splits=2, block_n=64, block_v=32, block_h=16)
    ref, _ = reference(hidden, weight, targets, 1.0)
    assert torch.isfinite(lp).all()
    torch.testing.assert_close(lp.double(), ref, rtol=1e-4, atol=1e-2)
    assert logprobs(hidden[:0], weight, targets[:0]).shape == (0,)


@pytest.mark.gpu
def test_compiled_kernel_bf16_on_gpu():
    g = torch.Generator(device="cuda").manual_seed(0)
    hidden = torch.randn(2, 300, 512, device="cuda", generator=g).bfloat16()
    weight = (torch.randn(5003, 512, device="cuda", generator=g) * 0.05).bfloat16()
    targets = torch.randint(0, 5003, (2, 300), device="cuda", generator=g)
    lp, ent = logprobs(hidden.reshape(-1, 512), weight, targets.reshape(-1), return_entropy=True)
    ref_lp, ref_ent = reference(hidden.reshape(-1, 512).cpu(), weight.cpu(), targets.reshape(-1).cpu(), 1.0)
    torch.testing.assert_close(lp.reshape(-1).double().cpu(), ref_lp, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(ent.reshape(-1).double().cpu(), ref_ent, rtol=1e-3, atol=1e-3)
