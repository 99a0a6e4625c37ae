"""Our policy loss inside verl's own training engine, against verl's vanilla loss, on one batch in one process.

Issue 26 asks whether RELATE's loss, registered as a verl policy loss, costs verl's update no more time and no
more memory than verl's own, and gives the same loss on the same batch. A run of verl's trainer answers that
only after ~5 minutes of start-up per setting (Ray, vLLM's server) and, on the fixed workload, with every
advantage 0 (the losses are then 0 whatever the code: NOTES_verl.md). Here verl 0.9.1's FSDP engine
(`FSDPEngineWithLMHead`, what its trainer's actor runs) is built alone, and its `train_batch` — forward,
`verl.workers.utils.losses.ppo_loss`, backward, optimizer step — runs on one batch of GRPO-shaped data with
advantages that are not 0 (random group rewards, normalised per group), alternately with the loss mode
"vanilla" and "relate" (the old log-probs: the engine's own, plus `--old-noise` so that ratios differ from 1).
The learning rate is 0, so every call starts from the same weights: the losses and the
gradients of the two modes must agree up to rounding, and vanilla against vanilla gives the noise floor.

    python benchmarks/verl_engine_ab.py --shape 1.7b --workload realistic --out ab.json    # on the GPU machine

What differs from verl's trainer: no Ray (the engine in this process, world size 1), no vLLM (the old log-probs
come from the engine's own forward: on policy), the batch's responses are random tokens at the workload's
lengths, and verl's TRL patch is skipped (`is_trl_available`: TRL 1.16 moved the class verl patches; the bench
hides TRL from verl the same way). tests/test_verl_engine_ab.py runs it on the CPU with a tiny Qwen3.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import cuda_sync, flat_grads  # noqa: E402
from relate_fast.integrations.verl import LOGPROBS_CHUNK_TOKENS  # noqa: E402


def init_single_process_group(backend: str) -> None:
    """World size 1, as verl's engine asks for a process group even on one device: on an in-memory store, no port
    (as relate_fast.distributed does for one process), so two of these at once, as the tests run them, cannot
    collide; the rank variables set for verl's code that reads them."""
    import torch.distributed as dist

    if not dist.is_initialized():
        for k, v in (("RANK", "0"), ("WORLD_SIZE", "1"), ("LOCAL_RANK", "0")):
            os.environ.setdefault(k, v)
        dist.init_process_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def build_engine(model_dir: Path, *, attn: str, remove_padding: bool, fused: bool, token_budget: int,
                 strategy: str = "fsdp", fused_backend: str = "triton", ckpt: bool = False, liger: bool = False):
    """verl's FSDP engine for the causal LM at `model_dir`, as its actor builds it for these settings; lr 0.
    `ckpt`: gradient checkpointing, which verl's model config turns on unless told otherwise; `liger`: liger-kernel's
    ops in the model (verl's `model.use_liger`)."""
    import verl.models.transformers.monkey_patch as monkey_patch
    from verl.trainer.config import CheckpointConfig
    from verl.workers.config import FSDPEngineConfig, FSDPOptimizerConfig, HFModelConfig
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead

    monkey_patch.is_trl_available = lambda: False
    model_config = HFModelConfig(path=str(model_dir), load_tokenizer=False, use_remove_padding=remove_padding,
                                 use_fused_kernels=fused, override_config={"attn_implementation": attn},
                                 fused_kernel_options={"impl_backend": fused_backend} if fused else {},
                                 enable_gradient_checkpointing=ckpt, use_liger=liger)
    model_config.model_type = "language_model"
    engine_config = FSDPEngineConfig(forward_only=False, strategy=strategy, use_dynamic_bsz=True,
                                     use_remove_padding=remove_padding, use_fused_kernels=fused,
                                     max_token_len_per_gpu=token_budget, infer_max_token_len_per_gpu=token_budget)
    engine = FSDPEngineWithLMHead(model_config=model_config, engine_config=engine_config,
                                  optimizer_config=FSDPOptimizerConfig(lr=0.0), checkpoint_config=CheckpointConfig())
    engine.initialize()
    return engine


def engine_batch(tensors: dict, *, remove_padding: bool, fused: bool, token_budget: int):
    """The TensorDict verl's trainer hands the actor (`left_right_2_no_padding` of its DataProto) with the keys its
    TrainingWorker adds before `engine.train_batch`."""
    from tensordict import NonTensorData
    from verl import DataProto
    from verl.utils import tensordict_utils as tu
    from verl.workers.utils.padding import left_right_2_no_padding

    td = left_right_2_no_padding(DataProto.from_single_dict(dict(tensors), meta_info={"temperature": 1.0}).to_tensordict())
    B = tensors["input_ids"].shape[0]
    tu.assign_non_tensor(td, global_token_num=NonTensorData(tensors["attention_mask"].sum(1).tolist()),
                         use_remove_padding=remove_padding, use_dynamic_bsz=True, max_token_len_per_gpu=token_budget,
                         micro_batch_size_per_gpu=B, use_fused_kernels=fused, global_batch_size=B)
    return td


def _metric(v) -> float:
    """verl 0.9.1 returns its loss metrics as `Metric` objects (values over micro-batches, aggregated)."""
    if hasattr(v, "values"):
        vals = [float(x) for x in v.values]
        return sum(vals) if str(getattr(v, "aggregation", "")).lower().endswith("sum") else statistics.mean(vals)
    return float(v)


OURS_LOGPROBS = "+relate_logprobs"  # a mode's suffix: its log-probs from our kernels (use_fused_logprobs)


def logprobs_modes(chunks: str) -> dict:
    """--logprobs-chunk's sizes as modes, each with its chunk (0: the loss's own default): the first is
    "vanilla+relate_logprobs" (the ratios' row), each further one "vanilla+relate_logprobs@N", all in the same
    process on the same batch."""
    sizes = [int(c) for c in str(chunks).split(",")]
    return {"vanilla" + OURS_LOGPROBS + ("" if i == 0 else f"@{c}"): c for i, c in enumerate(sizes)}


@contextlib.contextmanager
def logprobs_kernel(mode: str, chunk_size=None):
    """verl's fused forward with our log-prob kernel for a mode with OURS_LOGPROBS (at chunk_size tokens per chunk;
    0 or None: the loss's own default), verl's own kernel otherwise; verl's loss name (the mode's base) inside."""
    if OURS_LOGPROBS not in mode:
        yield mode
        return
    import verl.utils.kernel.linear_cross_entropy as lce
    from relate_fast.integrations.verl import use_fused_logprobs

    base = mode.partition("@")[0]
    own = lce.linear_cross_entropy
    use_fused_logprobs(chunk_size=chunk_size or None)
    try:
        yield base[: -len(OURS_LOGPROBS)]
    finally:
        lce.linear_cross_entropy = own


def update_once(engine, tensors: dict, mode: str, *, remove_padding: bool, fused: bool, token_budget: int,
                chunk=None) -> dict:
    """One `train_batch` with the policy loss `mode` (and our log-prob kernel, `chunk` tokens per chunk, if the mode
    has OURS_LOGPROBS): its time (device-synchronised), peak memory, loss, grad norm."""
    with logprobs_kernel(mode, chunk) as loss_mode:
        return _update_once(engine, tensors, loss_mode, remove_padding=remove_padding, fused=fused, token_budget=token_budget)


def _update_once(engine, tensors: dict, mode: str, *, remove_padding: bool, fused: bool, token_budget: int) -> dict:
    from verl.workers.config import ActorConfig
    from verl.workers.config.actor import PolicyLossConfig
    from verl.workers.utils.losses import ppo_loss

    config = ActorConfig(strategy=engine.engine_config.strategy, rollout_n=1, ppo_micro_batch_size_per_gpu=-1,
                         use_dynamic_bsz=True, ppo_max_token_len_per_gpu=token_budget,
                         policy_loss=PolicyLossConfig(loss_mode=mode))
    td = engine_batch(tensors, remove_padding=remove_padding, fused=fused, token_budget=token_budget)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    cuda_sync()
    t = time.perf_counter()
    with engine.train_mode(zero_grad_on_exit=False):  # the gradients stay for the comparison (verl zeroes them first)
        out = engine.train_batch(td, loss_function=partial(ppo_loss, config=config))
    cuda_sync()
    seconds = time.perf_counter() - t
    return {"update_s": seconds, "loss": _metric(out["metrics"]["actor/pg_loss"]), "grad_norm": float(out["metrics"]["grad_norm"]),
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None}


def old_log_probs(engine, tensors: dict, *, remove_padding: bool, fused: bool, token_budget: int) -> torch.Tensor:
    from verl.workers.utils.padding import no_padding_2_padding

    td = engine_batch(tensors, remove_padding=remove_padding, fused=fused, token_budget=token_budget)
    with engine.eval_mode():
        out = engine.infer_batch(td)
    return no_padding_2_padding(out["model_output"]["log_probs"], td).float().cpu()


def run_ab(engine, tensors: dict, *, modes=("vanilla", "relate"), repeats: int = 3, remove_padding: bool = True,
           fused: bool = False, token_budget: int = 4096, old_noise: float = 0.0, seed: int = 0,
           chunks=None) -> dict:
    """A warm-up call per mode (its gradients kept), then `repeats` rounds alternating the modes (timed); the
    gradients' relative distance of each mode's to the first's, and of the first mode's two calls (noise).
    `chunks`: our log-prob kernel's chunk for each mode with OURS_LOGPROBS (logprobs_modes)."""
    from relate_fast.integrations.verl import register

    register()
    kw = dict(remove_padding=remove_padding, fused=fused, token_budget=token_budget)
    from benchmarks.common import perturbed

    old = perturbed(old_log_probs(engine, tensors, **kw), tensors["response_mask"], old_noise, seed)
    tensors = dict(tensors, old_log_probs=old)
    chunks = chunks or {}
    runs = {m: [] for m in modes}
    grads = {}
    for m in modes:  # warm-up: compiles, allocator; its gradient for the comparison, kept on the CPU (an fp32 copy
        # per mode on the GPU, 6.4 GiB each at 1.7B, would sit under every timed update's peak)
        runs[m].append(dict(update_once(engine, tensors, m, chunk=chunks.get(m), **kw), warmup=True))
        grads[m] = flat_grads(engine.module.parameters()).cpu()
    update_once(engine, tensors, modes[0], chunk=chunks.get(modes[0]), **kw)
    noise = float((flat_grads(engine.module.parameters()).cpu() - grads[modes[0]]).norm() / grads[modes[0]].norm())
    for _ in range(repeats):
        for m in modes:
            runs[m].append(dict(update_once(engine, tensors, m, chunk=chunks.get(m), **kw), warmup=False))
    ref = grads[modes[0]]
    summary = {m: {"update_s_median": statistics.median(r["update_s"] for r in runs[m] if not r["warmup"]),
                   "peak_gib_max": max((r["peak_gib"] or 0.0) for r in runs[m] if not r["warmup"]) or None,
                   "loss_first": runs[m][0]["loss"], "grad_norm_first": runs[m][0]["grad_norm"],
                   "grad_rel_diff_to_first_mode": float((grads[m] - ref).norm() / ref.norm())} for m in modes}
    return {"runs": runs, "summary": summary, "grad_rel_noise": noise, "old_log_probs": old,
            "tokens": int(tensors["attention_mask"].sum()), "response_tokens": int(tensors["response_mask"].sum())}


def budget_grid(engine, tensors: dict, budgets: dict, *, remove_padding: bool, fused: bool, repeats: int = 3) -> list:
    """verl's own loss at each token budget per micro-batch (`ppo_max_token_len_per_gpu`, what its users sweep):
    a warm-up call (a new packed length compiles flex_attention again), then `repeats` timed calls (median)."""
    rows = []
    for label, budget in budgets.items():
        kw = dict(remove_padding=remove_padding, fused=fused, token_budget=budget)
        try:
            update_once(engine, tensors, "vanilla", **kw)
            runs = [update_once(engine, tensors, "vanilla", **kw) for _ in range(repeats)]
            rows.append({"micro_batch": label, "token_budget": budget,
                         "update_s": statistics.median(r["update_s"] for r in runs),
                         "peak_gib": max((r["peak_gib"] or 0.0) for r in runs) or None})
        except torch.OutOfMemoryError:
            rows.append({"micro_batch": label, "token_budget": budget, "error": "out of memory"})
        engine.optimizer_zero_grad()  # the gradients kept by update_once's train_mode are not the next size's peak
    return rows


def over_vanilla(summary: dict, mode: str) -> dict:
    """A mode's median update time and peak over verl's vanilla loss's (run_ab's summary)."""
    o, v = summary[mode], summary["vanilla"]
    return {"update_s": o["update_s_median"] / v["update_s_median"],
            "peak": o["peak_gib_max"] / v["peak_gib_max"] if v["peak_gib_max"] else None}


def logprobs_ratios(summary: dict, chunks: dict) -> dict:
    """verl's loss on our log-probs over verl's loss on its own, for the first chunk (the tables' row since attempt
    10) and by chunk size (keys: the sizes as written, "0" the loss's default); {} where no such mode ran."""
    if not chunks:
        return {}
    first = next(iter(chunks))
    return {"relate_logprobs_over_vanilla": dict(over_vanilla(summary, first), chunk=chunks[first]),
            "relate_logprobs_over_vanilla_by_chunk": {str(c): over_vanilla(summary, m) for m, c in chunks.items()}}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--micro-batch", type=int, default=80, help="token budget per micro-batch, in rows of the widest row")
    ap.add_argument("--remove-padding", default="on", choices=("on", "off"))
    ap.add_argument("--fused", default="on", choices=("on", "off"), help="verl's fused log-prob kernels (triton)")
    ap.add_argument("--attn", default="flex_attention", help="the attention verl's model gets (no flash-attn there)")
    ap.add_argument("--strategy", default="fsdp", help="verl's FSDP strategy (its actor's default: fsdp)")
    ap.add_argument("--ckpt", default="off", choices=("on", "off"), help="gradient checkpointing (verl's default: on)")
    ap.add_argument("--liger", default="off", choices=("on", "off"), help="verl's model.use_liger (liger-kernel's ops)")
    ap.add_argument("--logprobs-ab", default="off", choices=("on", "off"),
                    help="also verl's vanilla loss with its log-probs from our kernels (use_fused_logprobs) in place of "
                         "verl's Triton linear_cross_entropy; needs --fused on")
    ap.add_argument("--logprobs-chunk", default=str(LOGPROBS_CHUNK_TOKENS),
                    help="tokens per chunk of our log-prob kernel (default: the integration's; 0: the loss's own "
                         "default, about 1.25 GB of logits); several, comma-separated, are each a mode of the same A/B")
    ap.add_argument("--budget-grid", default="",
                    help="also verl's own loss alone at these token budgets, in rows of the widest row (e.g. 16,40,80)")
    from benchmarks.common import ab_arguments, ab_policy, grpo_batch, provenance, write_json

    ab_arguments(ap, "verl_engine_ab.json", ROOT)
    args = ap.parse_args(argv)
    if args.logprobs_ab == "on" and args.fused != "on":
        ap.error("--logprobs-ab on swaps the kernel under verl's fused forward: it needs --fused on")
    folder, prompts, lengths = ab_policy(args)
    width = max(len(p) for p in prompts) + args.max_new_tokens
    budget = args.micro_batch * width
    init_single_process_group("nccl" if torch.cuda.is_available() else "gloo")
    if args.attn == "flash_attention_4":  # transformers' packed path hands FA4 tensor max-seqlens: benchmarks/fa4_compat
        from benchmarks.fa4_compat import int_max_seqlen_for_fa4

        args.fa4_int_max_seqlen = int_max_seqlen_for_fa4()
    rp, fused = args.remove_padding == "on", args.fused == "on"
    engine = build_engine(folder, attn=args.attn, remove_padding=rp, fused=fused, token_budget=budget, strategy=args.strategy,
                          ckpt=args.ckpt == "on", liger=args.liger == "on")
    tensors = grpo_batch(prompts, lengths, vocab=151_936, group=args.group, seed=args.seed)
    chunks = logprobs_modes(args.logprobs_chunk) if args.logprobs_ab == "on" else {}
    result = run_ab(engine, tensors, modes=("vanilla", "relate", *chunks), repeats=args.repeats, remove_padding=rp,
                    fused=fused, token_budget=budget, old_noise=args.old_noise, seed=args.seed, chunks=chunks)
    tensors["old_log_probs"] = result.pop("old_log_probs")  # the grid's batch is the A/B's
    if args.budget_grid:
        result["budget_grid"] = budget_grid(engine, tensors, {int(m): int(m) * width for m in args.budget_grid.split(",")},
                                            remove_padding=rp, fused=fused, repeats=args.repeats)
    result["settings"] = dict(vars(args), token_budget=budget, verl_strategy=engine.engine_config.strategy)
    result["info"] = provenance()
    s = result["summary"]
    result["relate_over_vanilla"] = over_vanilla(s, "relate")
    result.update(logprobs_ratios(s, chunks))
    print(json.dumps({k: result[k] for k in ("summary", "grad_rel_noise", "relate_over_vanilla", "tokens")}, indent=2))
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
