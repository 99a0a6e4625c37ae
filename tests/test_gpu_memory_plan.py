"""On the GPU: the memory plan's prediction of what a forward keeps for the backward, against the
CUDA allocator, with k of L layers checkpointed, plain and with each layer compiled (model.fused_layers
compile, the GPU default)."""
import pytest
import torch

from relate_fast.memory_plan import activation_bytes_per_token, kept_by_forward
from relate_fast.models import checkpoint_layers, fuse_layers

pytestmark = pytest.mark.gpu


def _model(fused: str):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen3Config(vocab_size=1000, hidden_size=512, intermediate_size=1536, num_hidden_layers=6,
                      num_attention_heads=8, num_key_value_heads=4, head_dim=64, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    model = Qwen3ForCausalLM(cfg).to("cuda", torch.bfloat16).train()
    return fuse_layers(model, fused)


def _kept(model, ids) -> int:
    """What a whole causal-LM forward (logits included) leaves allocated, its output excepted."""
    return kept_by_forward(lambda: model(input_ids=ids, use_cache=False).logits)


@pytest.mark.parametrize("fused", ["none", "compile"])
def test_the_planned_activations_match_the_allocator_for_each_k(fused):
    model = _model(fused)
    T, L, H = 1024, 6, 512
    a = activation_bytes_per_token(model, T)
    h = H * 2
    ids = torch.randint(0, 1000, (1, T), device="cuda")
    base = None
    for k in (0, 2, 6):
        checkpoint_layers(model, k)
        kept = _kept(model, ids)
        if base is None:
            base = kept - L * a * T  # the embedding's, final norm's and lm_head's share, the same for every k
        assert kept == pytest.approx(base + T * ((L - k) * a + k * h), rel=0.03), \
            f"k={k}: kept {kept} B, base {base:.0f} B, a {a / h:.3f} h per token and layer"
