"""How many decoder layers to checkpoint: the fewest whose update fits the memory there is.

Gradient checkpointing trades memory for time: a checkpointed layer keeps only its input from the
forward to the backward and runs its forward again in the backward (~1/3 more arithmetic for that
layer). Off is fastest when it fits; all layers is what fits the most tokens. `model.auto_checkpointing`
picks between them per run, from a plan of the update's peak on one rank:

    peak(k) = others + (1 + f) · [engine + max(states_backward + T · [(L - k) · a + k · h] + [k > 0] · T · a,
                                               states_step)]

- T: tokens of one micro-batch (grpo.micro_batch_tokens, the budget the step fills);
- L layers, k of them checkpointed;
- a: activation bytes one layer keeps per token, **measured** on the run's own model, device, dtype,
  attention and fused layers by two probe forwards, every layer plain and every layer checkpointed
  (the CUDA allocator's count; on the CPU, the bytes autograd saves, counted by saved-tensor hooks);
- h: what a checkpointed layer keeps per token, its input (hidden size × dtype bytes);
- [k > 0] · T · a: the one layer whose forward runs again inside the backward;
- states: weights, gradients and optimizer state per rank (`training_state_bytes`: the layout of
  DeepSpeed ZeRO stage 0–2 with AdamW), held beside the activations through the forward and backward
  (states_backward), and their own peak in the optimizer step (states_step: the fp32 gradient partition
  appears there, when the activations are gone);
- engine: what the rollout engine holds during the update (measured when it was started; 0 when it
  sleeps through the update);
- others: the rest of the device before the engine started, less the policy's weights: the CUDA
  context, the reference model (β > 0), a judge model, other processes (measured);
- f: the CUDA caching allocator's slack, memory it holds but has not handed out (FRAGMENTATION: the device's
  used memory was 9–10.5 % above the allocator's peak in three H200 runs of the 4B shape; 0 on the CPU).

The plan takes the smallest k with peak(k) ≤ budget, where the budget is the GPU's memory less a
margin (model.memory_budget_gib sets it instead; on the CPU it must be given). When even k = L does
not fit, it checkpoints every layer and says by how much the prediction exceeds the budget (a smaller
grpo.micro_batch_tokens is the fix). T is a full micro-batch's; the trainer asks again per micro-batch with its
own token count (`layers_for`: responses shorter than the longest fill less, and fewer layers need to recompute).
The plan and its parts go to the log when training starts, and at
the end to <run>/memory_plan.json and summary.json beside the peaks the steps measured, so each GPU run
also checks the prediction.
"""
from __future__ import annotations

import gc
import json
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Callable, Optional

import torch

from relate_fast.models import checkpoint_layers, decoder_trunk

__all__ = ["MemoryPlan", "plan_checkpointing", "training_state_bytes", "activation_bytes_per_token", "saved_bytes",
           "kept_by_forward", "plan_for_run", "GIB", "MARGIN", "FRAGMENTATION"]

GIB = 2 ** 30
#: the share of the GPU's memory the plan leaves free: the backward's short-lived buffers (a layer's
#: input gradient, the loss's chunks) that the formula does not itemise
MARGIN = 0.05
#: the caching allocator's slack over what it has handed out: the device's used memory against the
#: allocator's peak was +9.2 %, +9.7 % and +10.5 % in three H200 runs at the 4B shape (benchmarks/RESULTS.md)
FRAGMENTATION = 0.10


@dataclass
class MemoryPlan:
    checkpointed_layers: int  # k (0: checkpointing off)
    layers: int  # L
    tokens: int  # T
    activation_per_token_layer: float  # a, bytes (measured)
    kept_per_token_layer: float  # h, bytes
    states: float  # bytes, beside the activations (forward and backward)
    step_states: float  # bytes, the optimizer step's peak
    engine: float  # bytes
    others: float  # bytes
    budget: float  # bytes
    fragmentation: float  # f: the allocator's slack assumed (0 off the GPU)
    predicted_peak: float  # bytes, peak(k)
    fits: bool  # peak(k) <= budget

    def peak(self, k: int, tokens: int) -> float:
        """peak(k) for a micro-batch of `tokens`, with this plan's sizes (bytes)."""
        return predicted_peak(k, layers=self.layers, tokens=tokens, activation=self.activation_per_token_layer,
                              kept=self.kept_per_token_layer, states=self.states, step_states=self.step_states,
                              engine=self.engine, others=self.others, fragmentation=self.fragmentation)

    def layers_for(self, tokens: int) -> int:
        """The fewest checkpointed layers whose peak fits the budget for a micro-batch of `tokens`: the plan is
        made for a full one (grpo.micro_batch_tokens), and short responses fill less, so fewer layers need to
        recompute (the trainer asks per micro-batch). All of them when none fits."""
        tokens = max(int(tokens), 1)
        # peak(k) is not monotone at k = 1 (the recomputed layer), so search every k rather than bisect
        return next((k for k in range(self.layers + 1) if self.peak(k, tokens) <= self.budget), self.layers)

    def describe(self) -> str:
        g = lambda b: f"{b / GIB:.1f} GiB"  # noqa: E731
        what = ("no checkpointing" if self.checkpointed_layers == 0 else
                f"{self.checkpointed_layers} of {self.layers} layers checkpointed")
        line = (f"memory plan: {what} for {self.tokens} tokens per micro-batch: predicted peak {g(self.predicted_peak)} "
                f"of a {g(self.budget)} budget (states {g(self.states)}, {g(self.step_states)} in the step, activations "
                f"{self.activation_per_token_layer / 1024:.1f} KiB per token and layer, engine {g(self.engine)}, "
                f"others {g(self.others)})")
        if not self.fits:
            line += (f"; does NOT fit even with every layer checkpointed (over by "
                     f"{g(self.predicted_peak - self.budget)}): lower grpo.micro_batch_tokens")
        return line

    def against(self, steps: list) -> dict:
        """The prediction beside what the steps measured (metrics.jsonl rows). The allocator's peak leaves
        out the CUDA context and other processes, which the plan counts, and the allocator's slack (in its
        reserved peak); the device's used memory (at each stage's end) counts them all but can miss the
        peak itself. None on the CPU."""
        def most(key):
            seen = [m[key] for m in steps if key in m]
            return round(max(seen), 2) if seen else None

        return {"checkpointed_layers": self.checkpointed_layers, "predicted_peak_gib": round(self.predicted_peak / GIB, 2),
                "measured_peak_gib": most("gpu_mem_peak_gib"), "reserved_peak_gib": most("gpu_mem_reserved_gib"),
                "device_used_gib": most("gpu_mem_device_used_gib")}

    def save(self, path: Path, steps: list) -> dict:
        """Writes the plan and `against(steps)` to `path` (JSON); returns the latter."""
        measured = self.against(steps)
        Path(path).write_text(json.dumps(dict(asdict(self), measured=measured), indent=2) + "\n")
        return measured


def predicted_peak(k: int, *, layers: int, tokens: int, activation: float, kept: float, states: float,
                   step_states: float = 0.0, engine: float = 0.0, others: float = 0.0,
                   fragmentation: float = FRAGMENTATION) -> float:
    """peak(k) of the module docstring (bytes)."""
    if not 0 <= k <= layers:
        raise ValueError(f"k must be 0..{layers}, got {k}")
    backward = states + tokens * ((layers - k) * activation + k * kept) + (tokens * activation if k else 0.0)
    return others + (1 + fragmentation) * (engine + max(backward, step_states))


def plan_checkpointing(*, layers: int, tokens: int, activation: float, kept: float, states: float,
                       budget: float, step_states: float = 0.0, engine: float = 0.0, others: float = 0.0,
                       fragmentation: float = FRAGMENTATION) -> MemoryPlan:
    """The smallest number of checkpointed layers whose predicted peak fits `budget` (all of them, with
    fits=False, when none does). Sizes in bytes; `activation` and `kept` per token and layer."""
    if layers < 1 or tokens < 1:
        raise ValueError(f"a plan needs layers >= 1 and tokens >= 1, got {layers} and {tokens}")
    if not 0 < kept <= activation:
        raise ValueError(f"a checkpointed layer keeps less than a plain one: kept {kept} > activation {activation}")
    sizes = MemoryPlan(checkpointed_layers=layers, layers=layers, tokens=tokens, activation_per_token_layer=activation,
                       kept_per_token_layer=kept, states=states, step_states=step_states, engine=engine, others=others,
                       budget=budget, fragmentation=fragmentation, predicted_peak=0.0, fits=False)
    k = sizes.layers_for(tokens)
    peak = sizes.peak(k, tokens)
    return replace(sizes, checkpointed_layers=k, predicted_peak=peak, fits=peak <= budget)


def training_state_bytes(params: int, *, world: int, dtype: str, zero_stage: Optional[int]) -> tuple:
    """Weights, gradients and AdamW state on one rank, in bytes: (held through the forward and backward,
    the optimizer step's peak). Read from DeepSpeed 0.19's ZeRO optimizers and checked against the live
    tensors of a real engine at each point (tests/test_memory_plan.py, one rank):

    - ZeRO stage 1–2 (and stage 0 in bf16, DeepSpeed's bf16 optimizer): the weights in the run's dtype
      (b bytes, not sharded), the gradients (stage 2: reduced into a partition of 1/W; stage 1: full
      size), and the fp32 master weights and two fp32 moments (12/W). In the step DeepSpeed flattens the
      partition's gradients into an fp32 copy (4/W) before it frees the others: bf16 on one GPU is 16
      bytes per parameter through the backward and 20 in the step, fp32 20 and 24;
    - no DeepSpeed, or stage 0 in fp32: torch's AdamW with its moments in the weights' dtype, nothing
      sharded: 4b bytes per parameter (bf16 8, fp32 16) in both phases."""
    b = 2 if dtype == "bfloat16" else 4
    if zero_stage is None or (zero_stage == 0 and dtype != "bfloat16"):
        return params * 4.0 * b, params * 4.0 * b
    shard = world if zero_stage else 1
    grads = b / shard if zero_stage == 2 else b
    backward = params * (b + grads + 12 / shard)
    return backward, backward + params * 4 / shard


def saved_bytes(model, forward: Callable[[], object]) -> int:
    """The bytes autograd saves for the backward while `forward()` runs: distinct storages, the model's
    parameters excluded (counted as they are saved, by saved-tensor hooks; what a checkpointed layer
    keeps is held by the checkpoint, not saved, so it is not counted)."""
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    seen = {}

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            seen[s.data_ptr()] = s.nbytes()
        return t

    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        forward()
    return sum(seen.values())


def kept_by_forward(forward: Callable[[], torch.Tensor]) -> int:
    """What `forward` leaves allocated on the CUDA device once it returns, its output tensor excepted: the
    activations its graph keeps for the backward (plus whatever a cold first call allocates for good).
    Garbage of earlier forwards (autograd graphs in reference cycles) is collected first: freed during
    the measured forward, it would count against it."""
    gc.collect()
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    out = forward()
    torch.cuda.synchronize()
    return torch.cuda.memory_allocated() - before - out.untyped_storage().nbytes()


def activation_bytes_per_token(model, tokens: int = 256) -> float:
    """a: the bytes one decoder layer keeps from its forward for the backward, per token, measured by two
    forwards of `tokens` random ids through the model's trunk with gradients on: every layer plain, then
    every layer checkpointed (the layers' flags restored after). What checkpointing all L layers frees,
    over L · tokens, is a layer's activations less what a checkpointed layer still keeps; the embedding
    and final norm, the same in both, drop out. On CUDA the allocator's growth over each forward (the
    output excluded; each after an unmeasured forward of the same kind, so one-time allocations do not
    count), and a checkpointed layer keeps its input (h bytes per token, added back); on the
    CPU the bytes of the distinct storages autograd saves (parameters excluded), which do not include
    the inputs a checkpoint holds, so nothing is added back."""
    trunk = decoder_trunk(model)
    layers = trunk.layers
    flags = [getattr(layer, "gradient_checkpointing", False) for layer in layers]
    was_training = model.training
    p0 = next(model.parameters())
    cuda = p0.device.type == "cuda"
    # a generator of its own: the probe leaves the run's random state as it found it
    ids = torch.randint(0, model.config.vocab_size, (1, tokens), generator=torch.Generator().manual_seed(0)).to(p0.device)

    def kept() -> int:
        with torch.enable_grad():
            if cuda:
                # a forward first, unmeasured: the first one of each kind allocates what then stays (cuBLAS's
                # workspace, a compiled layer's buffers), which the difference of two cold forwards would count
                # as activations
                trunk(input_ids=ids, use_cache=False)
                return kept_by_forward(lambda: trunk(input_ids=ids, use_cache=False).last_hidden_state)
            return saved_bytes(model, lambda: trunk(input_ids=ids, use_cache=False))

    try:
        model.train()
        checkpoint_layers(model, 0)
        plain = kept()
        checkpoint_layers(model, -1)
        checkpointed = kept()
    finally:
        if any(flags):
            for layer, f in zip(layers, flags):
                layer.gradient_checkpointing = f
        else:
            checkpoint_layers(model, 0)
        model.train(was_training)
    freed = (plain - checkpointed) / (tokens * len(layers))
    return freed + (model.config.hidden_size * p0.element_size() if cuda else 0.0)


def device_memory() -> tuple:
    """(used bytes on the device, total bytes); zeros on the CPU."""
    if not torch.cuda.is_available():
        return 0, 0
    free, total = torch.cuda.mem_get_info()
    return total - free, total


def plan_for_run(cfg, policy, *, world: int, engine_bytes: float, engine_sleeps: bool, others: float) -> MemoryPlan:
    """The plan of `model.auto_checkpointing` for this rank: the run's micro-batch token budget, its
    policy's measured activations, its dtype and ZeRO stage; `engine_bytes` is what the rollout engine
    took when it started (held through the update unless `engine_sleeps`), `others` what the device
    held before the engine started besides the policy's weights."""
    layers = len(decoder_trunk(policy).layers)
    tokens = cfg.grpo.micro_batch_tokens
    # one row as the run has them (prompt + response), at most the micro-batch
    probe = max(8, min(tokens, cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens))
    activation = activation_bytes_per_token(policy, probe)
    p = next(policy.parameters())
    kept = policy.config.hidden_size * p.element_size()
    params = sum(q.numel() for q in policy.parameters())
    states, step_states = training_state_bytes(params, world=world, dtype=cfg.model.dtype,
                                               zero_stage=cfg.deepspeed.zero_stage if cfg.deepspeed.enabled else None)
    if cfg.model.memory_budget_gib:
        budget = cfg.model.memory_budget_gib * GIB
    else:
        budget = device_memory()[1] * (1 - MARGIN)
    return plan_checkpointing(layers=layers, tokens=tokens, activation=activation, kept=min(kept, activation),
                              states=states, step_states=step_states, budget=budget,
                              engine=0.0 if engine_sleeps else engine_bytes, others=others,
                              fragmentation=FRAGMENTATION if p.device.type == "cuda" else 0.0)
