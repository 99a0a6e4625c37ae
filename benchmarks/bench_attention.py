"""Packed (varlen) causal attention at the policy's shape, forward + backward: the kernels each stack can run on
the lent GPU machine, which has no flash-attn 2 wheel.

    python benchmarks/bench_attention.py --out attn.json                 # on a CUDA GPU: every backend found
    python benchmarks/bench_attention.py --quick --backends reference,sdpa_rows   # CPU smoke run (CI)

Backends, each on the same bf16 packed rows (q [N, Hq, D], k/v [N, Hkv, D], causal within each row):
- torch_varlen: PyTorch's own varlen attention (FlashAttention kernels inside torch >= 2.10), what relate_fast's
  "relate_varlen" runs on a packed micro-batch;
- flex: torch's flex_attention with a block mask built from the rows (compiled), what verl's remove-padding path
  runs here through transformers' "flex_attention";
- fa4: flash-attn 4's CuTe-DSL `flash_attn_varlen_func` (flash_attn.cute; scripts/gpu_fa4_wheels.sh), what
  transformers' "flash_attention_4" calls — a faster setting for verl, if it runs on the H200;
- sdpa_rows: SDPA on each row alone (relate_fast.varlen's reference path), the floor a stack without varlen gets.
Correctness in the same run: each backend's output and q/k/v gradients against the reference (SDPA per row on the
same bf16 inputs upcast to fp32), as relative Frobenius distances. Times: the first call (compiles, JIT) and the
median of CUDA-event timings of forward+backward after warm-up. With --transformers, also transformers'
attention implementation `flash_attention_4` on a tiny Qwen3: packed rows against each row alone.
"""
from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import cuda_sync, provenance, write_json  # noqa: E402
from relate_fast.varlen import varlen_attention  # noqa: E402

BACKENDS = ("torch_varlen", "flex", "fa4", "sdpa_rows")


def row_lengths(workload: str, rows: int, seed: int = 0) -> list:
    """Token lengths of the packed rows: prompt (86–103 tokens, as the sample ads under the Qwen3 tokenizer) plus
    response — 128 tokens each ("fixed") or 16–128 ("realistic", the ad lengths' spread)."""
    g = torch.Generator().manual_seed(seed)
    prompts = torch.randint(86, 104, (rows,), generator=g)
    responses = torch.full((rows,), 128) if workload == "fixed" else torch.randint(16, 129, (rows,), generator=g)
    return (prompts + responses).tolist()


def packed_inputs(lengths: list, heads: int, kv_heads: int, head_dim: int, device, dtype, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = sum(lengths)
    q, k, v = (torch.randn(n, h, head_dim, generator=g).to(device, dtype) for h in (heads, kv_heads, kv_heads))
    cu = torch.tensor([0] + lengths, device=device).cumsum(0).to(torch.int32)
    return q, k, v, cu, max(lengths)


def _flex(lengths: list, device, compiled: bool = True):
    """flex_attention over the packed rows as transformers builds it for verl: causal and within one row
    (compiled, as transformers runs it; eager only for the CPU tests)."""
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention

    doc = torch.repeat_interleave(torch.arange(len(lengths), device=device), torch.tensor(lengths, device=device))
    n = doc.numel()
    mask = create_block_mask(lambda b, h, qi, ki: (doc[qi] == doc[ki]) & (qi >= ki), None, None, n, n, device=device)
    attend = torch.compile(flex_attention) if compiled else flex_attention

    def run(q, k, v, cu, max_len):
        out = attend(q.transpose(0, 1)[None], k.transpose(0, 1)[None], v.transpose(0, 1)[None], block_mask=mask,
                       enable_gqa=q.shape[1] != k.shape[1])
        return out[0].transpose(0, 1)
    return run


def _fa4():
    from flash_attn.cute import flash_attn_varlen_func

    def run(q, k, v, cu, max_len):
        out = flash_attn_varlen_func(q, k, v, cu_seqlens_q=cu, cu_seqlens_k=cu, max_seqlen_q=max_len,
                                     max_seqlen_k=max_len, causal=True)
        return out[0] if isinstance(out, tuple) else out
    return run


def backend_fn(name: str, lengths: list, device):
    """The attention function of a backend: (q, k, v, cu_seqlens, max_len) -> out [N, Hq, D]."""
    if name == "torch_varlen":
        return lambda q, k, v, cu, m: varlen_attention(q, k, v, cu, m, backend="torch_varlen")
    if name == "sdpa_rows" or name == "reference":
        return lambda q, k, v, cu, m: varlen_attention(q, k, v, cu, m, backend="reference")
    if name == "flex":
        return _flex(lengths, device)
    if name == "fa4":
        return _fa4()
    raise SystemExit(f"--backends: unknown backend {name!r} (known: {', '.join(BACKENDS)}, reference)")


def forward_backward(fn, q, k, v, cu, max_len, dout):
    q, k, v = (x.detach().requires_grad_() for x in (q, k, v))
    out = fn(q, k, v, cu, max_len)
    out.backward(dout)
    return out.detach(), (q.grad, k.grad, v.grad)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-30))


def measure(name: str, lengths: list, inputs: tuple, dout: torch.Tensor, reference: tuple, *, repeats: int,
            device) -> dict:
    """One backend: its distance to the reference, its first call's time, and the median of `repeats` timed calls."""
    q, k, v, cu, max_len = inputs
    try:
        fn = backend_fn(name, lengths, device)
        cuda_sync()
        t = time.perf_counter()
        out, grads = forward_backward(fn, q, k, v, cu, max_len, dout)
        cuda_sync()
        first = time.perf_counter() - t
    except Exception as e:  # noqa: BLE001 — a backend that cannot run here is a result, said as such
        return {"error": _error_line(e)}
    ref_out, ref_grads = reference
    row = {"first_call_s": first, "out_rel": rel(out, ref_out),
           **{f"d{n}_rel": rel(g, r) for n, g, r in zip("qkv", grads, ref_grads)}}
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            forward_backward(fn, q, k, v, cu, max_len, dout)
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            forward_backward(fn, q, k, v, cu, max_len, dout)
            times.append((time.perf_counter() - t) * 1e3)
    return dict(row, ms=statistics.median(times))


def transformers_fa4_check(device) -> dict:
    """transformers' "flash_attention_4" on a tiny Qwen3 in bf16: logits of packed rows (position ids restarting
    per row) against each row alone with the same implementation, and against sdpa. The packed call runs first as
    transformers ships it (a 0-dim tensor max-seqlen reaches FA4: an error, recorded), then with
    benchmarks/fa4_compat's int max-seqlen at FA4's entry. Each pass records how many calls reached FA4 (the
    sdpa pass must have none), and the rows packed without restarting positions, each attending to the rows before
    it, must differ from the rows alone: what shows the logits depend on the attention at all."""
    from transformers import Qwen3Config, Qwen3ForCausalLM
    from transformers import modeling_flash_attention_utils as fa_utils

    from benchmarks.fa4_compat import int_max_seqlen_for_fa4

    cfg = Qwen3Config(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=64, max_position_embeddings=512)
    torch.manual_seed(0)
    try:
        model = Qwen3ForCausalLM(cfg).to(device, torch.bfloat16)
        model.set_attn_implementation("flash_attention_4")
        calls = _count_fa4_calls()
    except Exception as e:  # noqa: BLE001
        return {"error": _error_line(e)}
    lengths = [37, 64, 5, 100]
    ids = [torch.randint(0, 512, (n,), device=device) for n in lengths]
    restarting = torch.cat([torch.arange(n, device=device) for n in lengths])[None]
    result, logits = {}, {}

    def run(name, rows):
        fa_utils._loaded_implementation = None  # transformers caches FA4's functions on first use: take them again
        calls.clear()
        try:
            with torch.no_grad():
                logits[name] = torch.cat([model(**row).logits[0] for row in rows])
        except Exception as e:  # noqa: BLE001
            result[f"{name}_error"] = _error_line(e)
        result[f"{name}_fa4_calls"] = sum(calls.values())

    alone = [{"input_ids": x[None]} for x in ids]
    packed = [{"input_ids": torch.cat(ids)[None], "position_ids": restarting}]
    run("alone", alone)
    run("packed_as_shipped", packed)
    result["int_max_seqlen_shim"] = int_max_seqlen_for_fa4()  # wraps the counted function: still counted
    run("packed", packed)
    run("cross_row", [{"input_ids": torch.cat(ids)[None]}])  # one long row: the control
    model.set_attn_implementation("sdpa")
    run("sdpa", alone)
    for name in ("packed_as_shipped", "packed", "cross_row", "sdpa"):
        if name in logits and "alone" in logits:
            result[f"{name}_vs_alone_rel"] = rel(logits[name], logits["alone"])
    return result


def _count_fa4_calls() -> dict:
    """Counts the calls that reach flash_attn.cute's two entries, by the names transformers imports them by."""
    import flash_attn.cute as fa4

    calls = {}
    for name in ("flash_attn_func", "flash_attn_varlen_func"):
        setattr(fa4, name, _counting(getattr(fa4, name), name, calls))
    return calls


def _counting(inner, name: str, calls: dict):
    @functools.wraps(inner)  # transformers reads FA4's keywords from the signature: keep it
    def counted(*args, **kwargs):
        calls[name] = calls.get(name, 0) + 1
        return inner(*args, **kwargs)
    return counted


def _error_line(e: Exception) -> str:
    return f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--backends", default=",".join(BACKENDS), help=f"comma-separated, of {', '.join(BACKENDS)}")
    ap.add_argument("--workloads", default="fixed,realistic", help="row lengths: fixed (prompt + 128), realistic")
    ap.add_argument("--rows", type=int, default=80, help="rows packed into one micro-batch (80: the 1.7B grid's best)")
    ap.add_argument("--heads", type=int, default=16, help="query heads (Qwen3-1.7B: 16)")
    ap.add_argument("--kv-heads", type=int, default=8, help="key/value heads (Qwen3-1.7B: 8)")
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--transformers", action="store_true", help="also transformers' flash_attention_4 on a tiny Qwen3")
    ap.add_argument("--quick", action="store_true", help="CPU smoke shapes: 6 rows, 2/1 heads of 16")
    ap.add_argument("--out", default=None, help="JSON path")
    args = ap.parse_args(argv)
    backends = args.backends.split(",")
    for b in backends:
        if b not in BACKENDS + ("reference",):
            ap.error(f"--backends: unknown backend {b!r} (known: {', '.join(BACKENDS)})")
    if args.quick:
        args.rows, args.heads, args.kv_heads, args.head_dim, args.repeats = 6, 2, 1, 16, 2
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    result = {"settings": vars(args), "workloads": {}}
    for wl in args.workloads.split(","):
        lengths = row_lengths(wl, args.rows)
        inputs = packed_inputs(lengths, args.heads, args.kv_heads, args.head_dim, device, dtype)
        q, k, v, cu, m = inputs
        dout = torch.randn(q.shape, generator=torch.Generator().manual_seed(1)).to(device, dtype)
        up = [x.float() for x in (q, k, v)]
        reference = forward_backward(backend_fn("reference", lengths, device), *up, cu, m, dout.float())
        rows = {b: measure(b, lengths, inputs, dout, reference, repeats=args.repeats, device=device) for b in backends}
        result["workloads"][wl] = {"tokens": sum(lengths), "rows": len(lengths), "max_len": m, "backends": rows}
        for b, r in rows.items():
            print(f"{wl:10s} {b:13s} " + (r["error"] if "error" in r else
                  f"{r['ms']:8.2f} ms  first {r['first_call_s']:7.2f} s  out {r['out_rel']:.1e}  dq {r['dq_rel']:.1e}"))
        _save(args.out, result)  # each workload as it finishes: a call cut by its time limit keeps what ran
    if args.transformers:
        result["transformers_fa4"] = transformers_fa4_check(device)
        print("transformers flash_attention_4:", result["transformers_fa4"])
    _save(args.out, result)
    return result


def _save(out, result: dict) -> None:
    result["info"] = provenance()
    if out:
        write_json(out, result)


if __name__ == "__main__":
    main()
