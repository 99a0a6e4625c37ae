"""On the GPU: PyTorch's varlen attention (the packed layout's kernel) against the exact per-row
reference, the packed layout against the padded one in bf16, and the fused decoder bodies
(model.fused_layers) against transformers' modules. Relative errors ‖a − b‖ / ‖b‖, bf16 noise
being ~1e-2 at most."""
import pytest
import torch

from relate_fast.batching import micro_batches, pack, sequence_logprobs
from relate_fast.varlen import VARLEN_ATTN, register, varlen_attention

pytestmark = pytest.mark.gpu


def rel(a, b):
    return float((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-30))


def small_qwen3(seed=0):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    register()
    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=1000, hidden_size=256, intermediate_size=512, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=128, tie_word_embeddings=False)
    cfg._attn_implementation = VARLEN_ATTN
    return Qwen3ForCausalLM(cfg).to("cuda", torch.bfloat16)


def test_torch_varlen_equals_reference_forward_and_backward():
    lens = [1, 37, 128, 5, 300, 64]
    cu = torch.tensor([0] + torch.tensor(lens).cumsum(0).tolist(), device="cuda")
    q = torch.randn(sum(lens), 16, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True)
    k, v = (torch.randn(sum(lens), 8, 128, device="cuda", dtype=torch.bfloat16, requires_grad=True) for _ in range(2))
    grads = {}
    for backend in ("torch_varlen", "reference"):
        out = varlen_attention(q, k, v, cu, max(lens), backend=backend)
        (out.float() * torch.linspace(-1, 1, out.numel(), device="cuda").view_as(out)).sum().backward()
        grads[backend] = (out.detach(), q.grad.clone(), k.grad.clone(), v.grad.clone())
        q.grad = k.grad = v.grad = None
    for a, b in zip(grads["torch_varlen"], grads["reference"]):
        assert rel(a, b) < 1e-2


def test_packed_logprobs_and_grads_equal_padded_in_bf16():
    from relate_fast.batching import grpo_micro_loss, loss_weights, packed_micro_loss

    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(1, 1000, (int(n),), generator=g).tolist() for n in torch.randint(20, 120, (10,), generator=g)]
    comps = [torch.randint(1, 1000, (int(n),), generator=g).tolist() for n in torch.randint(1, 90, (10,), generator=g)]
    batch = pack(prompts, comps, 0).to("cuda")
    model = small_qwen3()
    padded = sequence_logprobs(model, batch, 800)
    packed = sequence_logprobs(model, batch, 800, packed=True)
    assert len(micro_batches(batch, 800, packed=True)) > 1
    assert rel(packed, padded) < 1e-2
    adv = torch.randn(10, device="cuda")
    coef = loss_weights(batch.mask, "grpo", total_tokens=float(batch.mask.sum()), max_completion_length=90)
    grads = []
    for is_packed in (False, True):
        model.zero_grad(set_to_none=True)
        for s in micro_batches(batch, 800, packed=is_packed):
            if is_packed:
                loss, _, _ = packed_micro_loss(model, batch, s, adv, coef)
            else:
                loss, _, _ = grpo_micro_loss(model, batch, s, adv, total_rows=10, total_tokens=float(batch.mask.sum()),
                                             max_completion_length=90)
            loss.backward()
        grads.append(torch.cat([p.grad.float().flatten() for p in model.parameters() if p.grad is not None]))
    assert rel(grads[1], grads[0]) < 2e-2


@pytest.fixture
def qwen3_module_restored():
    """liger patches transformers' Qwen3 module for the whole process (its RMSNorm class, its RoPE function):
    put the module back afterwards, or every Qwen3 model a later test builds in this process gets liger's
    modules (a compiled one then fails in dynamo on liger's autograd Function)."""
    from transformers.models.qwen3 import modeling_qwen3

    saved = dict(vars(modeling_qwen3))
    yield
    for name in set(vars(modeling_qwen3)) - set(saved):
        delattr(modeling_qwen3, name)
    for name, value in saved.items():
        setattr(modeling_qwen3, name, value)


@pytest.mark.parametrize("how", ["compile", "liger"])
def test_fused_layers_equal_transformers_modules(how, qwen3_module_restored):
    from relate_fast.models import fuse_layers

    if how == "liger":
        pytest.importorskip("liger_kernel")
    base = small_qwen3()
    fused = small_qwen3()
    fuse_layers(fused, how)
    ids = torch.randint(0, 1000, (2, 77), device="cuda")
    outs = []
    for m in (base, fused):
        h = m.model(input_ids=ids).last_hidden_state
        (h.float() ** 2).mean().backward()
        outs.append((h.detach(), torch.cat([p.grad.float().flatten() for p in m.parameters() if p.grad is not None])))
    assert rel(outs[1][0], outs[0][0]) < 2e-2
    assert rel(outs[1][1], outs[0][1]) < 5e-2
