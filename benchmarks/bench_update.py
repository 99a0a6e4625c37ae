"""The policy update alone, swept over what a user tunes: layout (packed / padded), gradient
checkpointing, micro-batch size and the fused decoder body, with each setting's model FLOPs
utilisation and its distance to the machine.

    python benchmarks/bench_update.py --shape 1.7b --workload fixed        # one GPU
    python benchmarks/bench_update.py --shape 1.7b --workload realistic
    python benchmarks/bench_update.py --shape tiny --quick                 # CPU smoke (CI)

The update is the trainer's own: `GRPOStep.update` (micro-batches, relate_fast's fused loss,
backward, the DeepSpeed ZeRO-2 optimizer step, bf16) on a Qwen3-shaped policy with seeded random
weights, on one synthetic rollout batch shaped as the end-to-end benchmark's: `--prompts` prompts of
the sample dataset under the real Qwen3 tokenizer's chat template × G = 5 responses, β = 0, one
optimizer step per batch. Workloads: `fixed`, every response `--max-new-tokens` long (a random policy
never stops); `realistic`, response lengths drawn from the dataset's reference ads in Qwen3 tokens
plus EOS (27–47, mean ~37). No generation runs, so every setting is timed on the same tokens.

A micro-batch of `rows` is the padded layout's: `rows` sequences of the batch's full width, i.e. a
token budget of rows × width; the packed layout gets the same budget in real tokens (so it fits
more sequences in the same memory). Per setting: the update's median wall time over `--reps` steps
after `--warmup`, its model FLOPs (relate_fast.flops: 6 × parameters × real tokens + causal
attention + the lm_head on completion tokens; no padding, no recomputation) over the time, as MFU
against the datasheet peak (989 TFLOP/s bf16 on H100/H200) and against the bf16 product rate
measured at start (an 8192³ bf16 product), the floor (the hardware FLOPs — model FLOPs plus the
recomputed forward under checkpointing — at that measured rate), and PyTorch's peak memory.
A setting that runs out of memory is recorded as such. The JSON is stamped with provenance.

`--profile` adds one more update per setting under torch.profiler and splits its device time by kind
of kernel (`KERNEL_KINDS`: the products, the attention, our loss's kernels, the optimizer step, the
compiled body's fused elementwise kernels, copies, the rest) beside the wall time: the share no kernel
ran is where the host held the GPU up. The top kernels by time go with it, and on a GPU one more update under
CUDA's sync debug mode counts the operations that made the host wait, by line of Python.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.common import provenance, qwen3_folder, qwen3_tokenizer, shared_workdir, write_json  # noqa: E402

G = 5


def workload(tok, prompts: int, kind: str, max_new: int, vocab: int, seed: int = 0):
    """(prompt ids, completion ids) of one rollout batch: real prompts, random token ids."""
    from relate_fast.data import sample_ads
    from relate_fast.models import prompt_ids

    rng = random.Random(seed)
    rows = sample_ads("train", langs=["en"])
    chosen = rng.sample(rows, prompts)
    refs = [len(tok.encode(r.reference, add_special_tokens=False)) + 1 for r in rows if r.reference]
    p_ids, c_ids = [], []
    for r in chosen:
        p = prompt_ids(tok, r.prompt)
        for _ in range(G):
            n = max_new if kind == "fixed" else min(rng.choice(refs), max_new)
            p_ids.append(p)
            c_ids.append([rng.randrange(vocab) for _ in range(n)])
    return p_ids, c_ids


def matmul_ceiling_tflops() -> float:
    """The bf16 product rate of this GPU (8192³, random data, median of 10 after warm-up)."""
    import torch

    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    times = []
    for _ in range(10):
        s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        s.record()
        a @ b
        e.record()
        e.synchronize()
        times.append(s.elapsed_time(e) / 1e3)
    return 2 * 8192**3 / statistics.median(times) / 1e12


#: Kinds of kernel, first match wins, matched on the lower-cased name the profiler lists (CUDA kernels on
#: a GPU, aten ops on the CPU). The loss's own cuBLAS products count as products.
KERNEL_KINDS = (
    ("loss", ("fusedgrpo", "_row_stats", "_row_dlogits", "_target_logits", "_logits_stats", "_combine_stats", "_finish_rows",
              "_scale_unless_one")),
    ("attention", ("flash", "fmha", "attention", "sdpa", "efficient")),
    ("optimizer", ("adam", "multi_tensor", "foreach")),
    ("products", ("gemm", "cutlass", "nvjet", "xmma", "cublas", "matmul", "aten::mm", "aten::addmm", "aten::bmm")),
    ("fused elementwise", ("triton_",)),
    ("copies", ("memcpy", "memset", "copy", "nccl", "catarray", "aten::cat", "fill")),
)


def kernel_kind(name: str) -> str:
    low = name.lower()
    return next((kind for kind, keys in KERNEL_KINDS if any(k in low for k in keys)), "other")


def profile_once(run, cuda: bool, top: int = 15) -> dict:
    """One call of `run` under torch.profiler: its wall time, its kernels' (self) time by kind, the top ones."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        if cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        run()
        if cuda:
            torch.cuda.synchronize()
        wall = time.perf_counter() - t
    times: dict[str, float] = {}
    for e in prof.key_averages():
        if getattr(e, "is_user_annotation", False):  # ranges such as Optimizer.step#AdamW.step span kernels listed apart
            continue
        if cuda:  # kernels only: device time of events that ran on the GPU
            us = getattr(e, "self_device_time_total", 0) if str(e.device_type).endswith("CUDA") else 0
        else:
            us = e.self_cpu_time_total
        if us > 0:
            times[e.key] = times.get(e.key, 0.0) + us / 1e6
    kinds = {name: kernel_kind(name) for name in times}
    by_kind: dict[str, float] = {}
    top_of_kind: dict[str, list] = {}  # each kind's largest kernels: what "other" and "copies" are made of
    ranked = sorted(times.items(), key=lambda kv: -kv[1])
    for name, s in ranked:
        by_kind[kinds[name]] = by_kind.get(kinds[name], 0.0) + s
        rows = top_of_kind.setdefault(kinds[name], [])
        if len(rows) < 5:
            rows.append({"name": name[:120], "s": s})
    busy = sum(by_kind.values())
    return {"wall_s": wall, "kernels_s": busy, "idle_share": max(0.0, 1 - busy / wall),
            "by_kind_s": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])),
            "top": [{"name": n[:120], "s": s, "kind": kinds[n]} for n, s in ranked[:top]],
            "top_of_kind": top_of_kind}


def host_syncs(run, top: int = 12) -> dict:
    """One call of `run` under CUDA's sync debug mode: how many operations made the host wait for the GPU, and
    from which lines of Python (each a gap in the GPU's work while the host catches up)."""
    import warnings

    import torch

    sites: dict[str, int] = {}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
            torch.cuda.synchronize()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    for w in caught:
        if "synchroniz" in str(w.message):
            site = f"{Path(w.filename).name}:{w.lineno}"
            sites[site] = sites.get(site, 0) + 1
    return {"count": sum(sites.values()),
            "sites": dict(sorted(sites.items(), key=lambda kv: -kv[1])[:top])}


def print_profile(p: dict):
    print(f"profile: wall {p['wall_s']:.3f} s, kernels {p['kernels_s']:.3f} s (idle {p['idle_share']:.0%})")
    for kind, s in p["by_kind_s"].items():
        print(f"  {kind:18} {s:7.3f} s  {s / p['kernels_s']:5.1%}")
    for k in p["top"]:
        print(f"    {k['s']:7.4f} s  {k['kind']:18} {k['name'][:90]}")
    for kind in ("other", "copies", "fused elementwise"):
        for k in p.get("top_of_kind", {}).get(kind, []):
            print(f"    {k['s']:7.4f} s  {kind:18} {k['name'][:90]}")


def set_checkpointing(model, on: bool):
    if on:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    else:
        model.gradient_checkpointing_disable()


def set_compiled(model, on: bool):
    from relate_fast.models import fuse_layers

    if on:
        fuse_layers(model, "compile")
    else:  # undo nn.Module.compile
        for layer in model.model.layers:
            layer._compiled_call_impl = None


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="1.7b")
    ap.add_argument("--workload", default="fixed", choices=("fixed", "realistic"))
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step (x G = 5 responses)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--layouts", default="padded,packed")
    ap.add_argument("--ckpt", default="on,off", help="gradient checkpointing settings to sweep")
    ap.add_argument("--rows", default="8,20,40,80", help="micro-batch sizes, in sequences of the batch's full width")
    ap.add_argument("--fused", default="none,compile,liger",
                    help="fused decoder bodies to sweep (compile and liger on the packed layout only)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--profile", action="store_true",
                    help="one more update per setting under torch.profiler: device time by kind of kernel")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a config setting for every run (repeatable), e.g. deepspeed.reduce_bucket_size=500000000")
    ap.add_argument("--quick", action="store_true", help="CPU smoke: tiny shape, 2 prompts, 12 tokens, fp32")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "update.json"))
    args = ap.parse_args(argv)
    bad = [kv for kv in args.set if "=" not in kv or not kv.split("=", 1)[0]]
    if bad:
        ap.error(f"--set takes KEY=VALUE (a config key such as deepspeed.overlap_comm=false), got {bad[0]!r}")
    import torch

    from relate_fast.config import load_config
    from relate_fast.distributed import init_distributed
    from relate_fast.flops import peak_tflops, update_flops
    from relate_fast.batching import pack
    from relate_fast.models import load_policy
    from relate_fast.updater import PolicyUpdater
    from relate_fast.step import GRPOStep, StepBatch

    cuda = torch.cuda.is_available()
    if args.quick:
        args.shape, args.prompts, args.max_new_tokens, args.reps, args.warmup = "tiny", 2, 12, 1, 1
        args.rows, args.fused = "2,10", "none"
    init_distributed()
    work = shared_workdir("bench_update")
    folder = qwen3_folder(work / f"qwen3_{args.shape}", args.shape, weights=False)
    dtype = "bfloat16" if cuda else "float32"
    cfg = load_config(None, ["--model.dtype", dtype, "--grpo.beta", "0", "--grpo.lr", "1e-6", "--grpo.loss_type", "grpo",
                             "--rollout.group_size", str(G), "--rollout.prompts_per_step", str(args.prompts),
                             "--rollout.max_new_tokens", str(args.max_new_tokens), "--deepspeed.enabled", str(cuda).lower(),
                             *[part for kv in args.set for part in ("--" + kv.split("=", 1)[0], kv.split("=", 1)[1])]])
    model, _ = load_policy(folder, dtype=dtype, device="cuda" if cuda else "cpu", init="random", packed=True)
    tok = qwen3_tokenizer()
    updater = PolicyUpdater(model, cfg, world=1)
    step = GRPOStep(cfg, rollout=None, updater=updater, reward_fn=None, tokenizer=tok)
    prompts, completions = workload(tok, args.prompts, args.workload, args.max_new_tokens, model.config.vocab_size)
    dev = torch.device("cuda" if cuda else "cpu")
    packed = pack(prompts, completions, tok.pad_token_id).to(dev)
    gen = torch.Generator().manual_seed(0)
    batch = StepBatch(prompts=[None] * len(prompts), prompt_ids=prompts, completion_ids=completions, group_size=G,
                      packed=packed, advantages=torch.randn(len(prompts), generator=gen).to(dev))
    width = packed.input_ids.shape[1]
    lengths = [len(p) + len(c) for p, c in zip(prompts, completions)]
    comp = [len(c) for c in completions]
    ceiling = matmul_ceiling_tflops() if cuda else None
    peak = peak_tflops(torch.cuda.get_device_name() if cuda else "cpu")

    def measure(layout, ckpt, rows, fused):
        cfg.grpo.micro_batch_tokens = rows * width
        step.packed_layout = layout == "packed"
        set_checkpointing(updater.model, ckpt)
        f = update_flops(model.config, lengths, comp, checkpointing=ckpt)
        times = []
        if cuda:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        try:
            for i in range(args.warmup + args.reps):
                if cuda:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                step.update(batch, cfg.grpo.lr)
                if cuda:
                    torch.cuda.synchronize()
                if i >= args.warmup:
                    times.append(time.perf_counter() - t)
        except torch.cuda.OutOfMemoryError:
            updater.discard_gradients()
            return {"layout": layout, "ckpt": ckpt, "rows": rows, "fused": fused, "oom": True}
        s = statistics.median(times)
        res = {"layout": layout, "ckpt": ckpt, "rows": rows, "fused": fused, "update_s": s,
               "tokens_per_second": sum(lengths) / s, "model_tflops": f.model / s / 1e12,
               "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
        if peak:
            res["mfu"] = res["model_tflops"] / peak
        if ceiling:
            res["mfu_of_measured"] = res["model_tflops"] / ceiling
            res["floor_s"] = f.hardware / ceiling / 1e12
        if args.profile:
            res["profile"] = profile_once(lambda: step.update(batch, cfg.grpo.lr), cuda)
            print_profile(res["profile"])
            if cuda:
                res["profile"]["host_syncs"] = host_syncs(lambda: step.update(batch, cfg.grpo.lr))
                print("host syncs:", json.dumps(res["profile"]["host_syncs"]))
        print(json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in res.items() if k != "profile"}),
              flush=True)
        return res

    grid = []
    layouts, ckpts = args.layouts.split(","), [c == "on" for c in args.ckpt.split(",")]
    rows_list = [int(r) for r in args.rows.split(",")]
    for fused in args.fused.split(","):
        if fused == "compile":
            set_compiled(updater.model, True)
        elif fused == "liger":
            set_compiled(updater.model, False)
            from relate_fast.models import fuse_layers

            fuse_layers(updater.model, "liger")
        for layout in (layouts if fused == "none" else ["packed"]):
            for ckpt in ckpts:
                for rows in rows_list:
                    grid.append(measure(layout, ckpt, rows, fused))
    ok = [g for g in grid if not g.get("oom")]
    best = min(ok, key=lambda g: g["update_s"]) if ok else None
    result = {"grid": grid, "best": best,
              "settings": dict(vars(args), group_size=G, width=width, responses=len(prompts), tokens=sum(lengths),
                               completion_tokens=sum(comp), padded_tokens=len(prompts) * width),
              "ceiling_tflops": ceiling, "peak_tflops": peak, "info": provenance()}
    print("\nlayout  ckpt  rows  fused    update s  tokens/s  MFU    peak GiB")
    for g in grid:
        if g.get("oom"):
            print(f"{g['layout']:7} {str(g['ckpt']):5} {g['rows']:4}  {g['fused']:8} out of memory")
        else:
            print(f"{g['layout']:7} {str(g['ckpt']):5} {g['rows']:4}  {g['fused']:8} {g['update_s']:8.3f} "
                  f"{g['tokens_per_second']:9.0f}  {g.get('mfu', 0):.3f}  {g['peak_mem_gib'] or 0:6.1f}")
    if best:
        print(f"best: {best['layout']} ckpt={best['ckpt']} rows={best['rows']} fused={best['fused']}: "
              f"{best['update_s']:.3f} s, MFU {best.get('mfu', 0):.3f}, floor {best.get('floor_s', 0):.3f} s")
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
