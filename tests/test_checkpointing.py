"""Selective activation checkpointing (model.checkpoint_layers): which layers recompute, the same gradients
whatever the choice, the FLOPs it costs, and the config's clear errors."""
import pytest
import torch

from relate_fast.models import checkpoint_layers, checkpointed_share


def _model(layers=4, seed=0):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    cfg = Qwen3Config(vocab_size=61, hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=8, tie_word_embeddings=False)
    cfg._attn_implementation = "sdpa"
    return Qwen3ForCausalLM(cfg).train()


def _grads_and_forwards(count):
    model = _model()
    chosen = checkpoint_layers(model, count)
    calls = [0] * len(model.model.layers)
    for i, layer in enumerate(model.model.layers):
        layer.register_forward_pre_hook(lambda m, a, kw=None, i=i: calls.__setitem__(i, calls[i] + 1), with_kwargs=False)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(0, 61, (3, 11), generator=g)
    out = model(input_ids=ids, use_cache=False).logits
    (out * torch.randn(out.shape, generator=g)).sum().backward()
    return chosen, {n: p.grad.clone() for n, p in model.named_parameters()}, calls, checkpointed_share(model)


def test_the_checkpointed_layers_are_spread_and_recompute_and_the_gradients_stay():
    _, plain, calls, share = _grads_and_forwards(0)
    assert calls == [1, 1, 1, 1] and share == 0
    for count, expect in [(2, [0, 2]), (1, [0]), (3, [0, 1, 2]), (-1, [0, 1, 2, 3]), (4, [0, 1, 2, 3])]:
        chosen, grads, calls, share = _grads_and_forwards(count)
        assert chosen == expect
        assert calls == [2 if i in expect else 1 for i in range(4)]  # a checkpointed layer runs again in the backward
        assert share == len(expect) / 4
        for name, g in plain.items():
            torch.testing.assert_close(grads[name], g, rtol=1e-6, atol=1e-7, msg=f"{count} layers: {name}")


def test_a_count_beyond_the_model_is_a_clear_error():
    with pytest.raises(ValueError, match="model.checkpoint_layers.*0..4"):
        checkpoint_layers(_model(), 5)


def test_checkpoint_layers_without_checkpointing_is_refused_at_config_time():
    from relate_fast.config import load_config

    with pytest.raises(ValueError, match="model.checkpoint_layers.*model.gradient_checkpointing"):
        load_config(None, ["--model.checkpoint_layers", "2"])
    cfg = load_config(None, ["--model.gradient_checkpointing", "true", "--model.checkpoint_layers", "2"])
    assert cfg.model.checkpoint_layers == 2


def test_the_recomputation_counted_is_the_checkpointed_share():
    from relate_fast.flops import update_flops

    cfg = _model().config
    full = update_flops(cfg, [20, 30], [10, 12], checkpointing=True)
    half = update_flops(cfg, [20, 30], [10, 12], checkpointing=0.5)
    none = update_flops(cfg, [20, 30], [10, 12], checkpointing=False)
    assert none.recompute == 0 and half.model == full.model
    assert half.recompute == pytest.approx(full.recompute / 2)
