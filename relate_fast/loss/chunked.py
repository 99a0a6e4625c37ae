"""The chunked pass over the vocabulary behind fused_grpo_loss and fused_logprobs: logits of a chunk of
tokens with their row statistics, the objective's terms and dlogits, and the two gradient products,
chunk after chunk (the algorithm is drawn in relate_fast/loss/__init__.py).

Two ways to get a chunk's logits and statistics (`LOGITS_PATHS`, chosen in rows.resolve_logits_path):
"fp32" — a product into one fp32 buffer, then the backend's row ops read it (torch, or cuBLAS +
the Triton row kernels) and write dlogits over it for the gradient products; "epilogue" —
relate_fast.kernels.logits_gemm's Triton GEMM keeps the row statistics in its epilogue and writes
the chunk as bf16 probabilities relative to the target's (half the bytes), which the gradient
products take as they are, with per-row scales (no dlogits pass)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from relate_fast.loss.objective import objective_metrics, token_terms
from relate_fast.loss.rows import ROWS

__all__ = ["chunk_rows", "PassConfig", "FusedGRPO", "FusedLogprobs", "logprobs_pass", "LOGITS_PATHS"]

# fp32 logits of one chunk stay under these many bytes. The Triton backend writes dlogits over the
# logits in place, so this is its whole vocabulary-sized workspace (1.25 GiB: 2,048 tokens at
# Qwen3's 151,936 vocabulary; fewer, larger chunks mean fewer read-modify-writes of grad_W). The
# torch backend keeps a few temporaries of the same size, hence its smaller budget.
CHUNK_BYTES = {"triton": 5 * 2**28, "torch": 2**28}
# the epilogue path's logprobs pass keeps no logits, only [C, V/BN] tile statistics; its chunk of hidden
# stays in L2 (4,096 × 4,096 bf16: 32 MB), which 16,384 rows did not (1.37× one product against 1.21×)
LOGPROBS_EPILOGUE_ROWS = 4096
# grad_W is accumulated across chunks in fp32 when that buffer is small, else in the weight's own
# dtype (each chunk's product still accumulates in fp32; one rounding per chunk, not per token).
FP32_GRAD_W_BYTES = 2**26


def chunk_rows(V: int, N: int, chunk_size: Optional[int], backend: str, bytes_per_logit: int = 4) -> int:
    """Tokens per chunk: the largest that fits the byte budget, then evened out over the chunks
    (N = 4,096 at V = 151,936 gives 2 × 2,048 rather than 2,176 + 1,920). bytes_per_logit 0: no
    logits buffer (the epilogue path without gradients)."""
    if chunk_size is not None:
        return max(1, int(chunk_size))
    if bytes_per_logit == 0:
        cap = LOGPROBS_EPILOGUE_ROWS
    else:
        cap = max(1, CHUNK_BYTES[backend] // (bytes_per_logit * max(V, 1)))
    n_chunks = max(1, -(-N // cap))
    rows = -(-N // n_chunks)
    return min(cap, -(-rows // 64) * 64) if rows > 64 else max(rows, 1)  # >= 1: an empty batch has no chunk


class _Products:
    """The three lm_head products of the chunked pass, in fp32 output where the row ops need it."""

    def __init__(self, weight: torch.Tensor, need_dw: bool, dw_dtype):
        self.weight = weight
        self.cuda = weight.device.type == "cuda"
        # cuBLAS takes 16-bit operands with an fp32 output directly; elsewhere use an fp32 copy
        self.w32 = weight if (self.cuda or weight.dtype == torch.float32) else weight.float()
        self.grad_w = None
        self.need_dw = need_dw
        self.dw_dtype = dw_dtype

    def logits(self, h: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        if h.dtype == torch.float32 or not self.cuda:
            return torch.mm(h.float() if h.dtype != torch.float32 else h, self.w32.t(), out=out)
        return torch.mm(h, self.weight.t(), out_dtype=torch.float32, out=out)

    def grads(self, dz: torch.Tensor, h: torch.Tensor, grad_h_rows: Optional[torch.Tensor]):
        """grad_h[chunk] = dz @ W; grad_W += dzᵀ @ h."""
        if grad_h_rows is not None:
            torch.mm(dz, self.weight, out=grad_h_rows)
        if self.need_dw:
            self._add_dw(dz, h)

    def scaled_grads(self, p: torch.Tensor, s: torch.Tensor, sh: Optional[torch.Tensor],
                     grad_h_rows: Optional[torch.Tensor]):
        """The same for dz = s ⊙ P (rows scaled): grad_h[chunk] = s ⊙ (P @ W), rounded once from
        fp32; grad_W += Pᵀ @ (s ⊙ h), with sh = s ⊙ h given."""
        if grad_h_rows is not None:
            if self.cuda:
                acc = torch.mm(p, self.weight, out_dtype=torch.float32)
            else:
                acc = torch.mm(p.float(), self.w32)
            torch.mul(acc, s[:, None], out=grad_h_rows)  # one pass: scaled in fp32, rounded once
        if self.need_dw:
            self._add_dw(p, sh)

    def _add_dw(self, a: torch.Tensor, b: torch.Tensor):
        a = a if a.dtype == self.dw_dtype else a.to(self.dw_dtype)
        b = b if b.dtype == self.dw_dtype else b.to(self.dw_dtype)
        if self.grad_w is None:
            self.grad_w = torch.mm(a.t(), b)
        else:
            self.grad_w.addmm_(a.t(), b)


class _Fp32Logits:
    """A chunk's logits into one fp32 buffer by a product, then the backend's row ops over it."""

    def __init__(self, prod: _Products, backend: str, rows: int, V: int, keep: bool):
        self.prod, self.rows = prod, ROWS[backend]
        self.buf = torch.empty(rows, V, dtype=torch.float32, device=prod.weight.device) if rows else None

    def stats(self, h, tgt, inv_t, want_entropy):
        """(lse, z_tgt, entropy or None, what dlogits needs) of the scaled logits of h."""
        z = self.prod.logits(h, self.buf[: h.shape[0]])
        lse, z_tgt, ent = self.rows.stats(z, tgt, inv_t, want_entropy)
        return lse, z_tgt, ent, z

    def recompute(self, h, tgt, inv_t):
        """What grads needs, from the product alone (the statistics are known)."""
        return self.prod.logits(h, self.buf[: h.shape[0]])

    def grads(self, z, h, tgt, lse, g, inv_t, grad_h_rows):
        """dlogits over the chunk's logits, then the two gradient products."""
        dz = self.rows.dlogits(z, tgt, lse, g, inv_t, h.dtype)
        self.prod.grads(dz, h, grad_h_rows)


class _EpilogueLogits:
    """The product and the row statistics in one Triton GEMM (relate_fast.kernels.logits_gemm); the
    chunk is kept as bf16 P = e^(z - z_tgt) only when the gradients will be needed (keep)."""

    def __init__(self, prod: _Products, backend: str, rows: int, V: int, keep: bool):
        from relate_fast.kernels import logits_gemm

        self.k, self.prod, self.weight = logits_gemm, prod, prod.weight
        self.buf = torch.empty(rows, V, dtype=torch.bfloat16, device=prod.weight.device) if (keep and rows) else None

    def stats(self, h, tgt, inv_t, want_entropy):
        p = self.buf[: h.shape[0]] if self.buf is not None else None
        if p is not None:  # the target's logit first: it is the reference of the stored probabilities
            z_tgt = self.k.target_logits(h, self.weight, tgt, inv_t)
            mp, sp, tp = self.k.logits_stats(h, self.weight, inv_t, want_entropy, p_out=p, ref=z_tgt)
        else:  # the product first: the GPU starts ~50 us (one launch) sooner
            mp, sp, tp = self.k.logits_stats(h, self.weight, inv_t, want_entropy)
            z_tgt = self.k.target_logits(h, self.weight, tgt, inv_t)
        lse, ent, top = self.k.combine_stats(mp, sp, tp)
        return lse, z_tgt, ent, (p, mp, top, z_tgt)

    def recompute(self, h, tgt, inv_t):
        return self.stats(h, tgt, inv_t, False)[3]

    def grads(self, state, h, tgt, lse, g, inv_t, grad_h_rows):
        """P made into dlogits / s by one write per row, then the two products on P as it is."""
        p, mp, top, z_tgt = state
        s, sh = self.k.finish_rows(p, mp, z_tgt, top, lse, g, tgt, inv_t, h if self.prod.need_dw else None)
        self.prod.scaled_grads(p, s, sh, grad_h_rows)


LOGITS_PATHS = {"fp32": _Fp32Logits, "epilogue": _EpilogueLogits}
BYTES_PER_LOGIT = {"fp32": 4, "epilogue": 2}


def _dw_dtype(weight: torch.Tensor) -> torch.dtype:
    small = weight.numel() * 4 <= FP32_GRAD_W_BYTES
    return torch.float32 if (small or weight.dtype == torch.float32) else weight.dtype


def chunked_forward(hidden, weight, targets, token_inputs, cfg, need_dh, need_dw):
    """One pass: per-token log-probs and objective terms, and (if asked) both gradients.

    token_inputs() gives (coef, adv, old, ref, sampler) as [N] vectors. It is called only once the first
    chunk's product is queued: its dozen small kernels would otherwise each wait on the CPU with the
    GPU idle (at N = 4k that left 1.3 ms of gaps, 6 % of the floor, measured on an H100)."""
    N, H = hidden.shape
    V = weight.shape[0]
    dev = hidden.device
    inv_t = 1.0 / cfg.temperature
    prod = _Products(weight, need_dw, _dw_dtype(weight))
    grads_now = need_dh or need_dw
    stage = LOGITS_PATHS[cfg.logits](prod, cfg.backend, min(cfg.chunk, N), V, keep=grads_now)
    chunk = cfg.chunk
    first = stage.stats(hidden[:chunk], targets[:chunk], inv_t, cfg.want_entropy)  # the big product first
    coef, adv, old, ref, sampler = token_inputs()
    grad_h = torch.empty_like(hidden) if need_dh else None
    f32 = dict(dtype=torch.float32, device=dev)
    logp_all, g_all, lse_all = (torch.empty(N, **f32) for _ in range(3))
    ratio_all = torch.empty(N, **f32)
    k3_all = torch.empty(N, **f32) if cfg.beta != 0.0 else None
    ent_all = torch.empty(N, **f32) if cfg.want_entropy else None
    gap_all = torch.empty(N, **f32) if sampler is not None else None
    w_all = torch.empty(N, **f32) if sampler is not None and cfg.tis_cap is not None else None
    low_all = torch.empty(N, dtype=torch.bool, device=dev)
    high_all = torch.empty_like(low_all)
    loss = torch.zeros((), **f32)
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        h, tgt = hidden[s:e], targets[s:e]
        lse, z_tgt, ent, z = first if s == 0 else stage.stats(h, tgt, inv_t, cfg.want_entropy)
        logp = z_tgt - lse
        loss_tok, g, ratio, k3, low, high, w, gap = token_terms(
            logp, None if old is None else old[s:e], adv[s:e], None if ref is None else ref[s:e], coef[s:e],
            cfg.beta, cfg.eps_low, cfg.eps_high, None if sampler is None else sampler[s:e], cfg.tis_cap)
        loss += loss_tok.sum()
        logp_all[s:e], g_all[s:e], lse_all[s:e], ratio_all[s:e] = logp, g, lse, ratio
        low_all[s:e], high_all[s:e] = low, high
        if k3 is not None:
            k3_all[s:e] = k3
        if ent is not None:
            ent_all[s:e] = ent
        if gap is not None:
            gap_all[s:e] = gap
        if w is not None:
            w_all[s:e] = w
        if grads_now:
            stage.grads(z, h, tgt, lse, g, inv_t, grad_h[s:e] if need_dh else None)
    metrics = objective_metrics(coef, ratio_all, k3_all, low_all, high_all, ent_all, w_all, gap_all, cfg.tis_cap)
    grad_w = None
    if need_dw:
        grad_w = prod.grad_w if prod.grad_w is not None else torch.zeros_like(weight)
        grad_w = grad_w if grad_w.dtype == weight.dtype else grad_w.to(weight.dtype)
    return loss, logp_all, metrics, grad_h, grad_w, lse_all, g_all


def chunked_grads(hidden, weight, targets, lse, g, cfg, need_dh, need_dw):
    """The recompute path: logits again, then dlogits from the saved lse and g, then the products."""
    N, _ = hidden.shape
    V = weight.shape[0]
    inv_t = 1.0 / cfg.temperature
    prod = _Products(weight, need_dw, _dw_dtype(weight))
    stage = LOGITS_PATHS[cfg.logits](prod, cfg.backend, min(cfg.chunk, N), V, keep=True)
    grad_h = torch.empty_like(hidden) if need_dh else None
    for s in range(0, N, cfg.chunk):
        e = min(N, s + cfg.chunk)
        # the epilogue path recomputes the tile statistics with the tiles; lse from the forward is used
        state = stage.recompute(hidden[s:e], targets[s:e], inv_t)
        stage.grads(state, hidden[s:e], targets[s:e], lse[s:e], g[s:e], inv_t, grad_h[s:e] if need_dh else None)
    grad_w = None
    if need_dw:
        grad_w = prod.grad_w if prod.grad_w is not None else torch.zeros_like(weight)
        grad_w = grad_w.to(weight.dtype)
    return grad_h, grad_w


@dataclass(frozen=True)
class PassConfig:
    backend: str
    chunk: int
    logits: str  # a key of LOGITS_PATHS
    beta: float
    eps_low: float
    eps_high: float
    temperature: float
    want_entropy: bool
    recompute: bool
    tis_cap: Optional[float] = None  # the importance weights' truncation, with the sampler's log-probs


class FusedGRPO(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, targets, token_inputs, cfg: PassConfig):
        need_dh, need_dw = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        # the log-probs and metrics take no gradient: without this, backward would first fill a zero
        # tensor for each of them (the backward's CPU time went from 1.1-1.3 to 0.6-0.8 ms without)
        ctx.set_materialize_grads(False)
        now = not cfg.recompute
        loss, logp, metrics, grad_h, grad_w, lse, g = chunked_forward(
            hidden, weight, targets, token_inputs, cfg, need_dh and now, need_dw and now)
        ctx.cfg, ctx.need = cfg, (need_dh, need_dw)
        ctx.consumed = False
        if cfg.recompute:
            ctx.save_for_backward(hidden, weight, targets, lse, g)
        else:
            ctx.grads = (grad_h, grad_w)  # not saved tensors: backward scales them in place, once
        ctx.mark_non_differentiable(logp, *metrics.values())
        ctx.metric_names = tuple(metrics)
        return (loss, logp, *metrics.values())

    @staticmethod
    def backward(ctx, grad_loss, *_unused):
        cfg = ctx.cfg
        need_dh, need_dw = ctx.need
        if grad_loss is None:  # grads are not materialised: nothing flowed back into the loss
            return None, None, None, None, None
        if cfg.recompute:
            hidden, weight, targets, lse, g = ctx.saved_tensors
            gh, gw = chunked_grads(hidden, weight, targets, lse, g * grad_loss, cfg, need_dh, need_dw)
        else:
            if ctx.consumed:
                raise RuntimeError("fused_grpo_loss: backward twice through one forward needs recompute=True")
            ctx.consumed = True
            gh, gw = ctx.grads
            ctx.grads = None
            # Scaled in place (a scaled copy of grad_W would be another vocabulary × hidden buffer), and
            # not at all when the upstream gradient is 1, as from loss.backward(): the rescale is a full
            # pass over grad_W (0.9 ms at Qwen3-8B's head on an H100, 4 % of the loss at 4k tokens).
            # The check runs on the device: reading the scalar back would stall the CPU until the
            # forward's queued work is done, and the GPU would then wait for the autograd engine.
            from relate_fast.kernels.grpo_loss import scale_unless_one_

            gh = scale_unless_one_(gh, grad_loss) if gh is not None else None
            gw = scale_unless_one_(gw, grad_loss) if gw is not None else None
        return gh, gw, None, None, None


def logprobs_pass(hidden, weight, targets, *, temperature: float, want_entropy: bool, chunk: int, backend: str,
                  logits: str = "fp32", lse_out: Optional[torch.Tensor] = None):
    """(log-probs [N] fp32, entropy [N] or None) of targets under hidden @ weight.T / temperature:
    the forward half of the pass, without the objective (fused_logprobs). lse_out [N]: also the rows'
    log-sum-exp, for a backward that recomputes the logits (FusedLogprobs)."""
    N = hidden.shape[0]
    V = weight.shape[0]
    dev = hidden.device
    stage = LOGITS_PATHS[logits](_Products(weight, False, None), backend, min(chunk, N), V, keep=False)
    out = torch.empty(N, dtype=torch.float32, device=dev)
    ent = torch.empty(N, dtype=torch.float32, device=dev) if want_entropy else None
    for s in range(0, N, chunk):
        e = min(N, s + chunk)
        lse, z_tgt, en, _ = stage.stats(hidden[s:e], targets[s:e], 1.0 / temperature, want_entropy)
        out[s:e] = z_tgt - lse
        if lse_out is not None:
            lse_out[s:e] = lse
        if want_entropy:
            ent[s:e] = en
    return out, ent


class FusedLogprobs(torch.autograd.Function):
    """Log-probs of targets with a gradient to hidden and weight, for stacks whose loss takes log-probs (verl's
    fused-kernel forward). The forward keeps no logits (the pass of fused_logprobs); the backward makes each
    chunk's logits again, so four products in all, and one chunk of logits is the whole workspace. The entropy,
    when asked, is for metrics: a gradient that reaches it must be zero (an entropy bonus is not implemented)."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, temperature: float, want_entropy: bool, chunks, backend: str,
                logits: str):
        lse = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
        logp, ent = logprobs_pass(hidden, weight, targets, temperature=temperature, want_entropy=want_entropy,
                                  chunk=chunks[0], backend=backend, logits=logits, lse_out=lse)
        ctx.save_for_backward(hidden, weight, targets, lse)
        # the backward is fused_grpo_loss's recompute path with g = d(loss)/d(logp) from upstream
        ctx.cfg = PassConfig(backend=backend, chunk=chunks[1], logits=logits, beta=0.0, eps_low=0.0, eps_high=0.0,
                             temperature=temperature, want_entropy=False, recompute=True)
        ctx.set_materialize_grads(False)
        return (logp, ent) if want_entropy else logp

    @staticmethod
    def backward(ctx, grad_logp, grad_ent=None):
        # a device sync whenever the entropy is in the loss's graph (verl always adds −entropy_coeff·entropy):
        # a silently dropped entropy bonus would be worse than the CPU waiting once per backward
        if grad_ent is not None and bool(torch.any(grad_ent != 0)):
            raise NotImplementedError("fused log-probs: the entropy has no gradient here (an entropy bonus, e.g. "
                                      "verl's entropy_coeff != 0, is not implemented); its gradient was not zero")
        if grad_logp is None:
            return (None,) * 8
        hidden, weight, targets, lse = ctx.saved_tensors
        gh, gw = chunked_grads(hidden, weight, targets, lse, grad_logp.float().contiguous(), ctx.cfg,
                               ctx.needs_input_grad[0], ctx.needs_input_grad[1])
        return gh, gw, None, None, None, None, None, None
