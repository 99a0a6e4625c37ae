"""The update's FLOPs count (relate_fast.flops) against PyTorch's own FLOP counter, and the MFU the
trainer logs."""
import torch

from relate_fast.flops import peak_tflops, update_flops


def test_product_flops_equal_torch_flop_counter():
    """Forward + backward of a tiny Qwen3 over packed rows and the lm_head over their completion
    tokens: the matrix products PyTorch counts equal the model FLOPs without the attention term."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=301, hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, tie_word_embeddings=False)
    model = Qwen3ForCausalLM(cfg)
    lengths, completions = [7, 12, 5], [3, 6, 1]
    ids = torch.randint(0, 301, (1, sum(lengths)))
    counter = FlopCounterMode(display=False)
    with counter:
        h = model.model(input_ids=ids).last_hidden_state[0, :sum(completions)]
        (h @ model.lm_head.weight.t()).float().logsumexp(-1).sum().backward()
    counts = counter.get_flop_counts()["Global"]
    products = sum(v for op, v in counts.items() if str(op).split(".")[1] in ("mm", "addmm", "bmm", "matmul"))
    f = update_flops(cfg, lengths, completions)
    attn = 3 * 2 * 3 * 4 * 16 * sum(n * (n + 1) for n in lengths)
    assert products == f.model - attn
    ck = update_flops(cfg, lengths, completions, checkpointing=True, passes=2)
    assert ck.model == 2 * f.model and ck.recompute == 2 * (f.model - 3 * 2 * 301 * 64 * sum(completions)) / 3
    assert ck.hardware == ck.model + ck.recompute


def test_peak_by_device_name():
    assert peak_tflops("NVIDIA H200") == 989.0 and peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert peak_tflops("cpu") is None and peak_tflops("cpu", 100) == 100.0
