"""How much arithmetic a policy update is, and how close to the machine it ran.

Model FLOPs of one update over sequences of lengths l_i (prompt + completion) with c_i completion
tokens, for a decoder with L layers, hidden H, Hq query heads and Hkv key/value heads of size D,
MLP width I and vocabulary V (the convention of PaLM's MFU and Megatron: multiply-adds count 2,
backward is twice the forward):

    per token, every layer's products:  2 · L · (H·Hq·D + 2·H·Hkv·D + Hq·D·H + 3·H·I)      (fwd)
    attention, causal, per sequence:    2 · L · Hq · D · l_i · (l_i + 1)                    (fwd: QKᵀ and PV
                                                                                              over the l(l+1)/2 pairs)
    lm_head, completion tokens only:    2 · V · H · c_i                                    (fwd; the fused loss
                                                                                              computes no other logits)
    model FLOPs = 3 × (all of it)       (forward + backward; the "6 × parameters × tokens" rule)

Gradient checkpointing recomputes the decoder's forward in backward (not the loss's): the hardware
does model FLOPs + one more forward of the layers ("8 × parameters" instead of 6 for the layers).
Padding is not counted: a padded layout pays for it, a packed one does not. MFU = model FLOPs / time
/ peak; the peak is the GPU's dense bf16 rate (datasheet, `PEAK_TFLOPS`) unless one is given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence, Union

__all__ = ["UpdateFlops", "update_flops", "peak_tflops", "PEAK_TFLOPS"]

# dense bf16 tensor-core rate by the vendor's datasheets (no sparsity), TFLOP/s
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "H800": 989.0, "H20": 148.0, "A100": 312.0, "A800": 312.0,
               "L40S": 362.0, "B200": 2250.0}


@dataclass
class UpdateFlops:
    model: float  # forward + backward, no recomputation
    recompute: float  # the extra forward of the layers under gradient checkpointing (0 without)

    @property
    def hardware(self) -> float:
        return self.model + self.recompute


def update_flops(config, lengths: Sequence[int], completion_lengths: Sequence[int], *,
                 checkpointing: Union[bool, float] = False, passes: int = 1) -> UpdateFlops:
    """FLOPs of `passes` forward+backward passes over the sequences (a transformers config of a
    decoder: hidden_size, num_hidden_layers, num_attention_heads, num_key_value_heads, head_dim,
    intermediate_size, vocab_size). `checkpointing`: whether the layers are checkpointed, or the share of
    them that is (model.checkpoint_layers)."""
    H, L, I, V = config.hidden_size, config.num_hidden_layers, config.intermediate_size, config.vocab_size
    Hq = config.num_attention_heads
    Hkv = getattr(config, "num_key_value_heads", None) or Hq
    D = getattr(config, "head_dim", None) or H // Hq
    per_token = 2 * L * (H * Hq * D + 2 * H * Hkv * D + Hq * D * H + 3 * H * I)
    tokens = sum(lengths)
    attn = 2 * L * Hq * D * sum(n * (n + 1) for n in lengths)
    layers_fwd = per_token * tokens + attn
    head_fwd = 2 * V * H * sum(completion_lengths)
    return UpdateFlops(model=passes * 3.0 * (layers_fwd + head_fwd),
                       recompute=passes * float(layers_fwd) * float(checkpointing))


def peak_tflops(device_name: str, given: Optional[float] = None) -> Optional[float]:
    """The dense bf16 peak of a GPU by its name ("NVIDIA H200" -> 989), or `given` when > 0; None
    when unknown (the CPU)."""
    if given:
        return float(given)
    name = device_name.upper()
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_TFLOPS[key]
    return None
