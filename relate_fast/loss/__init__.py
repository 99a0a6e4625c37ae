"""RELATE's clipped GRPO objective with per-token KL and combined advantages, straight from the last
hidden states and the lm_head weight, never materialising the [tokens × vocab] logits.

Public contract (importable into other GRPO stacks; keep these signatures)::

    loss, metrics = fused_grpo_loss(hidden, weight, targets, mask, advantages, *, token_rewards=None,
                                    alpha=1.0, old_logprobs=None, ref_logprobs=None, beta=0.0,
                                    eps_low=0.2, eps_high=0.2, temperature=1.0, loss_type="grpo",
                                    max_completion_length=None, num_items=None)
    logprobs = fused_logprobs(hidden, weight, targets, *, temperature=1.0, return_entropy=False)
    logprobs = fused_logprobs_with_grad(hidden, weight, targets, *, temperature=1.0, return_entropy=False)
    adv = group_advantages(rewards, group_size, *, scale=True, eps=1e-6)

Algorithm: every loss type is a weighted sum of per-token terms, loss = Σ_t per[t]·c[t], with
weights c[t] known before the pass (`objective.token_weights`). So one pass over chunks of tokens
does it all:

    z = h_chunk @ Wᵀ                      fp32 [C, V], the only vocabulary-sized buffer
    lse, z_tgt (, entropy)                row statistics of z/T            ─┐ the two "row ops"
    logp = z_tgt - lse; per, g = dL/dlogp  `objective.token_terms`, on [C]  │ (`rows.py`): Triton
    dz = g·(onehot - softmax(z/T))/T       written over z                  ─┘ kernels or plain torch
    grad_h[chunk] = dz @ W;  grad_W += dzᵀ @ h_chunk

three matrix products per chunk, no recomputation in backward (backward only scales the gradients
it was handed). `recompute=True` instead keeps only lse and g from the forward pass and redoes the
logits in backward (four products; for callers that must not hold the gradients between the passes).

Backends: "triton" (the default on CUDA; under TRITON_INTERPRET=1 it also runs on CPU tensors, which
is how CI tests it) and "torch" (the default elsewhere: the same chunked algorithm with torch row
ops). The triton backend gets a chunk's logits and statistics from the epilogue GEMM of
relate_fast.kernels.logits_gemm on Hopper, else from cuBLAS fp32 products + the row kernels
(`chunked.LOGITS_PATHS`). Which backend and logits path a call uses: its `backend=` argument, else the
environment variables RELATE_FAST_BACKEND=torch|triton and RELATE_FAST_LOGITS=auto|epilogue|fp32
(overrides), else the process defaults of `rows.configure` (the trainer sets them from
grpo.loss_backend and grpo.logits_path), else auto.
The epilogue path keeps the chunk as bf16 P = e^(z/T - z_tgt/T) instead of fp32 z: dz = s·P per row
(the one-hot term folded into P's target element), so grad_h = s ⊙ (P @ W) and grad_W += Pᵀ @ (s ⊙ h)
take P as it is, with no dlogits pass.

Modules, as Liger lays out an op: this file holds the public functions (argument checks, then one
call into the pass); `objective.py` the per-token math of eq. 6 and the loss types; `chunked.py` the
chunked pass and its autograd Function; `rows.py` the two row backends; `checks.py` the boundary
checks; `advantages.py` the advantage estimators. As verl's core_algos, the loss types
(`objective.register_loss_type`) and the advantage estimators (`advantages.register_advantage_estimator`)
are pure functions in registries, which the trainer and the integrations read alike. The Triton
kernels themselves live in relate_fast.kernels.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from relate_fast.loss.advantages import ADVANTAGE_ESTIMATORS, group_advantages, register_advantage_estimator
from relate_fast.loss.checks import check_finite_on_mask, check_target_range, check_tensor, non_finite_on_mask
from relate_fast.loss.chunked import BYTES_PER_LOGIT, FusedGRPO, FusedLogprobs, PassConfig, chunk_rows, logprobs_pass
from relate_fast.loss.objective import LOSS_REGISTRY, LOSS_TYPES, register_loss_type, token_weights
from relate_fast.loss.rows import BACKENDS, resolve_backend, resolve_logits_path

__all__ = ["fused_grpo_loss", "fused_grpo_loss_tokens", "fused_logprobs", "fused_logprobs_with_grad", "group_advantages",
           "non_finite_on_mask", "LOSS_TYPES", "BACKENDS", "ADVANTAGE_ESTIMATORS", "register_advantage_estimator",
           "register_loss_type"]


def _check_head(hidden, weight, dev):
    """The lm_head weight against the hidden states: [V, H], same device and dtype."""
    H = hidden.shape[-1]
    check_tensor(weight, "weight", dims=(2,), floating=True, device=dev)
    if weight.shape[1] != H:
        raise ValueError(f"weight must have shape [V, {H}] (hidden size of hidden), got {tuple(weight.shape)}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight has dtype {weight.dtype} but hidden has {hidden.dtype}; cast one of them")


def _check_objective(beta, ref_logprobs, temperature, eps_low, eps_high):
    if beta != 0.0 and ref_logprobs is None:
        raise ValueError("beta != 0 needs ref_logprobs (the reference policy's log-probs of targets)")
    if not (temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if eps_low < 0 or eps_high < 0 or eps_low >= 1:
        raise ValueError(f"need 0 <= eps_low < 1 and eps_high >= 0, got eps_low={eps_low}, eps_high={eps_high}")


def _metric_names(return_entropy: bool, sampler: bool = False, tis_cap=None):
    """The metric names in the order objective_metrics makes them."""
    return (("kl", "clip_ratio", "clip_low", "clip_high", "ratio_mean", "ratio_max")
            + (("entropy",) if return_entropy else ())
            + (("sampler_gap", "sampler_gap_abs") if sampler else ())
            + (("tis_weight_mean", "tis_weight_max", "tis_truncated") if sampler and tis_cap is not None else ()))


def _check_tis(tis_cap):
    if tis_cap is not None and not (isinstance(tis_cap, (int, float)) and not isinstance(tis_cap, bool) and tis_cap > 0):
        raise ValueError(f"tis_cap must be a number > 0 or None (measure only), got {tis_cap!r}")


def _zero_loss(hidden, weight, names, dev):
    """Nothing counts: zero loss, zero gradients (graph kept so backward() works)."""
    zero = hidden.sum() * 0.0 + (weight.sum() * 0.0 if weight.requires_grad else 0.0)
    return zero.float(), {k: torch.zeros((), device=dev) for k in names}


def fused_grpo_loss(hidden, weight, targets, mask, advantages, *, token_rewards=None, alpha=1.0,
                    old_logprobs=None, ref_logprobs=None, beta=0.0, eps_low=0.2, eps_high=0.2,
                    temperature=1.0, loss_type="grpo", max_completion_length=None, num_items=None,
                    return_entropy=False, chunk_size=None, backend=None,
                    recompute=False, check_finite=False, sampler_logprobs=None,
                    tis_cap=2.0) -> Tuple[torch.Tensor, Dict[str, torch.Tensor]]:
    """Clipped GRPO objective (RELATE eq. 6) with A = advantages + alpha·token_rewards and β·k3 KL.

    Returns (loss, metrics); metrics holds detached tensors (no host sync): kl, clip_ratio,
    clip_low, clip_high, ratio_mean, ratio_max (masked over tokens), entropy when return_entropy.
    Gradients flow to hidden and weight (none to weight when it does not require grad).
    chunk_size: tokens per chunk (default: a chunk's fp32 logits stay within the backend's budget).
    backend: "triton" | "torch" (default: triton on CUDA, torch elsewhere; see the module notes).
    recompute: keep only per-token statistics from the forward pass and recompute the logits in
    backward (one more product), instead of computing the gradients during the forward pass.
    check_finite: refuse NaN/inf in advantages, token_rewards, old_logprobs and ref_logprobs on
    counted tokens (mask != 0) with a ValueError naming the argument; off by default because it
    costs a host sync (the trainer checks its whole batch once per step instead).
    sampler_logprobs: [B, T] log-probs of the targets under the engine that sampled them (vLLM's
    processed log-probs). Given, the advantages are weighted per token by the truncated importance
    weight min(exp(old - sampler), tis_cap) (old: old_logprobs, or the current log-probs detached),
    the correction for a sampler that is not the trainer (other numerics, or a stale policy); tis_cap
    None measures the gap without weighting. Metrics then add sampler_gap, sampler_gap_abs and, with
    the weights, tis_weight_mean, tis_weight_max, tis_truncated. Off (None) by default.
    An empty batch (B = 0 or T = 0) gives a zero loss whose gradients are zeros.
    """
    check_tensor(hidden, "hidden", dims=(3,), floating=True)
    dev = hidden.device
    B, T, H = hidden.shape
    _check_head(hidden, weight, dev)
    check_tensor(targets, "targets", shape=(B, T), floating=False, device=dev)
    check_tensor(mask, "mask", shape=(B, T), device=dev)
    check_tensor(advantages, "advantages", dims=(1, 2), device=dev)
    if advantages.dim() == 1 and advantages.shape[0] != B or advantages.dim() == 2 and tuple(advantages.shape) != (B, T):
        raise ValueError(f"advantages must have shape [{B}] or [{B}, {T}], got {tuple(advantages.shape)}")
    for name, x in (("token_rewards", token_rewards), ("old_logprobs", old_logprobs), ("ref_logprobs", ref_logprobs),
                    ("sampler_logprobs", sampler_logprobs)):
        if x is not None:
            check_tensor(x, name, shape=(B, T), floating=True, device=dev)
    if loss_type not in LOSS_REGISTRY:
        raise ValueError(f"loss_type must be one of {', '.join(LOSS_REGISTRY)}; got {loss_type!r}")
    _check_objective(beta, ref_logprobs, temperature, eps_low, eps_high)
    if max_completion_length is not None and max_completion_length <= 0:
        raise ValueError(f"max_completion_length must be > 0, got {max_completion_length!r}")
    backend = resolve_backend(backend, dev)
    V = weight.shape[0]
    check_target_range(targets, V)
    if check_finite:
        check_finite_on_mask(mask, advantages=advantages, token_rewards=token_rewards, old_logprobs=old_logprobs,
                              ref_logprobs=ref_logprobs if beta != 0.0 else None, sampler_logprobs=sampler_logprobs)
    _check_tis(tis_cap)
    names = _metric_names(return_entropy, sampler_logprobs is not None, tis_cap)
    if B * T == 0:
        return _zero_loss(hidden, weight, names, dev)

    N = B * T

    def token_inputs():  # [N] vectors; the pass calls this once the first chunk's product is queued
        adv = advantages.float()
        adv = adv[:, None].expand(B, T) if adv.dim() == 1 else adv
        if token_rewards is not None:
            adv = adv + alpha * token_rewards.float()
        coef = token_weights(mask, loss_type, max_completion_length, num_items)
        flat = lambda x: None if x is None else x.reshape(N).float()  # noqa: E731
        return (coef.reshape(N), adv.reshape(N), flat(old_logprobs), flat(ref_logprobs) if beta != 0.0 else None,
                flat(sampler_logprobs))

    return _pass(hidden.reshape(N, H), weight, targets.reshape(N).long(), token_inputs, names, beta=beta,
                 eps_low=eps_low, eps_high=eps_high, temperature=temperature, return_entropy=return_entropy,
                 chunk_size=chunk_size, backend=backend, recompute=recompute, tis_cap=tis_cap)


def _pass(h2, weight, targets, token_inputs, names, *, beta, eps_low, eps_high, temperature, return_entropy,
          chunk_size, backend, recompute, tis_cap=None):
    N, V = h2.shape[0], weight.shape[0]
    logits = resolve_logits_path(backend, h2, weight)
    cfg = PassConfig(backend=backend, chunk=chunk_rows(V, N, chunk_size, backend, BYTES_PER_LOGIT[logits]),
                     logits=logits, beta=float(beta), eps_low=float(eps_low), eps_high=float(eps_high),
                     temperature=float(temperature), want_entropy=bool(return_entropy), recompute=bool(recompute),
                     tis_cap=None if tis_cap is None else float(tis_cap))
    out = FusedGRPO.apply(h2, weight, targets, token_inputs, cfg)
    return out[0], dict(zip(names, out[2:]))


def fused_grpo_loss_tokens(hidden, weight, targets, coef, advantages, *, token_rewards=None, alpha=1.0,
                           old_logprobs=None, ref_logprobs=None, beta=0.0, eps_low=0.2, eps_high=0.2,
                           temperature=1.0, return_entropy=False, chunk_size=None, backend=None, recompute=False,
                           sampler_logprobs=None, tis_cap=2.0):
    """The same objective on tokens already packed back to back: hidden [N, H] and [N] vectors, with
    each token's loss weight `coef` given (loss = Σ per·coef; `objective.token_weights` makes them for
    every loss type from a [B, T] mask). The entry point of the trainer's packed micro-batches, which
    hold no padding; `fused_grpo_loss` is this with the weights made from its mask and loss type.
    Tokens with coef 0 do not count (nor in the metrics). sampler_logprobs, tis_cap: as for
    fused_grpo_loss."""
    check_tensor(hidden, "hidden", dims=(2,), floating=True)
    dev = hidden.device
    N = hidden.shape[0]
    _check_head(hidden, weight, dev)
    check_tensor(targets, "targets", shape=(N,), floating=False, device=dev)
    check_tensor(coef, "coef", shape=(N,), floating=True, device=dev)
    check_tensor(advantages, "advantages", shape=(N,), device=dev)
    for name, x in (("token_rewards", token_rewards), ("old_logprobs", old_logprobs), ("ref_logprobs", ref_logprobs),
                    ("sampler_logprobs", sampler_logprobs)):
        if x is not None:
            check_tensor(x, name, shape=(N,), floating=True, device=dev)
    _check_objective(beta, ref_logprobs, temperature, eps_low, eps_high)
    backend = resolve_backend(backend, dev)
    check_target_range(targets, weight.shape[0])
    _check_tis(tis_cap)
    names = _metric_names(return_entropy, sampler_logprobs is not None, tis_cap)
    if N == 0:
        return _zero_loss(hidden, weight, names, dev)

    def token_inputs():
        adv = advantages.float()
        if token_rewards is not None:
            adv = adv + alpha * token_rewards.float()
        f = lambda x: None if x is None else x.float()  # noqa: E731
        return coef.float(), adv, f(old_logprobs), f(ref_logprobs) if beta != 0.0 else None, f(sampler_logprobs)

    return _pass(hidden, weight, targets.long(), token_inputs, names, beta=beta, eps_low=eps_low, eps_high=eps_high,
                 temperature=temperature, return_entropy=return_entropy, chunk_size=chunk_size, backend=backend,
                 recompute=recompute, tis_cap=tis_cap)


def _logprobs_inputs(hidden, weight, targets, temperature, chunk_size, backend):
    """The checks of the log-prob functions, then (hidden [N, H], targets [N], backend, logits path, the forward's
    tokens per chunk (no logits kept on the epilogue path), the tokens per chunk when the logits are kept)."""
    check_tensor(hidden, "hidden", dims=(2, 3), floating=True)
    dev = hidden.device
    _check_head(hidden, weight, dev)
    check_tensor(targets, "targets", shape=hidden.shape[:-1], floating=False, device=dev)
    if not (temperature > 0):
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    backend = resolve_backend(backend, dev)
    V = weight.shape[0]
    check_target_range(targets, V)
    h2, t = hidden.reshape(-1, hidden.shape[-1]), targets.reshape(-1).long()
    logits = resolve_logits_path(backend, h2, weight)
    return (h2, t, backend, logits, chunk_rows(V, t.numel(), chunk_size, backend, 0 if logits == "epilogue" else 4),
            chunk_rows(V, t.numel(), chunk_size, backend, BYTES_PER_LOGIT[logits]))


@torch.no_grad()
def fused_logprobs(hidden, weight, targets, *, temperature=1.0, return_entropy=False, chunk_size=None,
                   backend=None):
    """Log-probs of targets under logits = hidden @ weight.T / temperature, fp32, shape of targets;
    with return_entropy also the entropy of each position. One pass, no grad (old/reference log-probs).
    backend: as for fused_grpo_loss."""
    h2, t, backend, logits, chunk, _ = _logprobs_inputs(hidden, weight, targets, temperature, chunk_size, backend)
    out = logprobs_pass(h2, weight, t, temperature=float(temperature), want_entropy=bool(return_entropy),
                        backend=backend, logits=logits, chunk=chunk)
    if return_entropy:
        return out[0].reshape(targets.shape), out[1].reshape(targets.shape)
    return out[0].reshape(targets.shape)


def fused_logprobs_with_grad(hidden, weight, targets, *, temperature=1.0, return_entropy=False, chunk_size=None,
                             backend=None):
    """fused_logprobs with a backward: log-probs [shape of targets] fp32 whose gradient reaches hidden and
    weight, for a loss that takes log-probs (verl's policy losses: relate_fast.integrations.verl.
    use_fused_logprobs). The logits are never materialised: the backward makes them again chunk by chunk
    (four lm_head products in all, against three for fused_grpo_loss, which knows its loss in the forward).
    return_entropy: also each position's entropy, without gradient (a gradient reaching it must be zero).
    chunk_size: tokens per chunk (its logits are the workspace); backend: as for fused_grpo_loss."""
    h2, t, backend, logits, *chunks = _logprobs_inputs(hidden, weight, targets, temperature, chunk_size, backend)
    out = FusedLogprobs.apply(h2, weight, t, float(temperature), bool(return_entropy), tuple(chunks), backend, logits)
    if return_entropy:
        return out[0].view(targets.shape), out[1].view(targets.shape)
    return out.view(targets.shape)
