"""Our fused loss inside OpenRLHF's actor step, against OpenRLHF's own, on one batch in one process.

OpenRLHF 0.11.2's actor step computes the log-probs from the full logits (`Actor.forward`: the logits of the
whole sequence cast to fp32, then its log-softmax) and hands them to `PolicyLoss`. The drop-in of
relate_fast/integrations/openrlhf.py replaces both with one call on the last hidden states (`FusedPolicyLoss`:
the logits never exist). Here both run forward and backward over the same GRPO batch (advantages not 0) with the
same model, each over its own sweep of micro-batch sizes (gradients accumulated, each micro-batch's loss a token
mean as OpenRLHF's `token_level_loss` gives it, scaled by 1/micro-batches), each setting timed and its peak
memory read; the first setting of each side also gives the full-batch gradient, and their relative distance is
the agreement check.

    python benchmarks/openrlhf_actor_ab.py --shape 1.7b --workload fixed --out ab.json    # on the GPU machine

What differs from OpenRLHF's trainer: no DeepSpeed, no Ray, no vLLM (the old log-probs come from the actor's own
forward: on policy), no optimizer step (the same for both sides), bf16 weights without fp32 master copies;
OpenRLHF imports flash-attn's padding helpers at module level, which the lent machine lacks: they come from
tests/helpers/flash_attn_standin (each fails if called; OpenRLHF calls them only when packing samples, left off
here), and without flash-attn's cross-entropy OpenRLHF takes its own torch path for the log-probs (as on any
machine without flash-attn). tests/test_openrlhf_actor_ab.py runs it on the CPU with a tiny Qwen3.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import cuda_sync, flat_grads  # noqa: E402


def load_actor(folder: Path, dtype=torch.bfloat16, attn: str = "sdpa"):
    """OpenRLHF's Actor around the model (a model object: OpenRLHF loads a path in bf16 or fp16 only); without
    flash-attn, its padding helpers from the stand-in (this process's path from then on)."""
    from relate_fast.models import flash_attn_2_installed

    if not flash_attn_2_installed():  # (flash-attn-4's `flash_attn` lacks the FA2 helpers too)
        sys.path.insert(0, str(ROOT / "tests" / "helpers" / "flash_attn_standin"))
    from openrlhf.models.actor import Actor
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, attn_implementation=attn)
    actor = Actor(model.to("cuda" if torch.cuda.is_available() else "cpu"))
    actor.packing_samples = False  # set only on its path-loading branch: its default there
    return actor


def _rows(tensors: dict, lo: int, hi: int) -> dict:
    return {k: v[lo:hi] for k, v in tensors.items()}


def theirs(actor, mb: dict, scale: float, clip=(0.2, 0.28)) -> float:
    """OpenRLHF's step: Actor.forward (full logits, fp32 log-softmax) then PolicyLoss (token mean)."""
    from openrlhf.models.loss import PolicyLoss

    logp = actor(mb["input_ids"], action_mask=mb["response_mask"].bool(), attention_mask=mb["attention_mask"])
    loss, *_ = PolicyLoss(*clip, token_level_loss=True)(logp, mb["old_log_probs"], mb["advantages"],
                                                         mb["response_mask"].bool())
    (loss * scale).backward()
    return float(loss.detach())


def ours(actor, mb: dict, scale: float, clip=(0.2, 0.28)) -> float:
    """The drop-in's recipe (relate_fast/integrations/openrlhf.py): the trunk's last hidden states into the fused loss."""
    from relate_fast.integrations.openrlhf import FusedPolicyLoss

    A = mb["responses"].shape[1]
    # the batch's position ids count from each row's first token, as OpenRLHF's Actor.forward does: in bf16 the
    # trunk's default (shifted) positions round differently
    hidden = actor.model.model(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"],
                               position_ids=mb["position_ids"]).last_hidden_state
    loss, _ = FusedPolicyLoss(*clip, token_level_loss=True)(
        hidden[:, -A - 1:-1], actor.model.lm_head.weight, mb["input_ids"][:, -A:], mb["old_log_probs"],
        mb["advantages"], mb["response_mask"].float())
    (loss * scale).backward()
    return float(loss.detach())


def old_log_probs(actor, tensors: dict, rows: int = 8) -> torch.Tensor:
    with torch.no_grad():
        parts = [actor(mb["input_ids"], action_mask=mb["response_mask"].bool(), attention_mask=mb["attention_mask"])
                 for mb in (_rows(tensors, i, i + rows) for i in range(0, tensors["input_ids"].shape[0], rows))]
    return torch.cat(parts).float()


def one_pass(actor, tensors: dict, side, micro: int) -> tuple:
    """Forward and backward over the batch in micro-batches of `micro` rows: (seconds, first micro-batch's loss)."""
    B = tensors["input_ids"].shape[0]
    n = -(-B // micro)
    actor.zero_grad(set_to_none=True)
    cuda_sync()
    t = time.perf_counter()
    losses = [side(actor, _rows(tensors, i, i + micro), 1.0 / n) for i in range(0, B, micro)]
    cuda_sync()
    return time.perf_counter() - t, losses[0]


def agreement(actor, tensors: dict, micro: int, reference=None) -> dict:
    """Both sides at the same micro-batch size: the first micro-batch's loss and the relative distance of the
    batch's gradients (OpenRLHF's as the reference). With `reference` (the same weights in fp32), OpenRLHF's step on
    it gives the exact loss and gradients, and each side's distance to them: in bf16 the trunk's own rounding moves
    the loss of a near-on-policy batch by ~20 % (its value is a small difference of ratios near 1), the same on
    both sides, which a side-against-side distance alone cannot tell from a fault of the loss (NOTES_verl.md)."""
    res, grads = {}, {}
    sides = [("openrlhf", actor, theirs), ("ours", actor, ours)]
    if reference is not None:
        sides.append(("fp32", reference, theirs))
    for name, model, side in sides:
        res[f"{name}_loss"] = one_pass(model, tensors, side, micro)[1]
        grads[name] = flat_grads(model.parameters()).cpu()
        model.zero_grad(set_to_none=True)
    ref = grads["openrlhf"]
    out = dict(res, micro_batch=micro, grad_rel_diff=float((grads["ours"] - ref).norm() / ref.norm()))
    if reference is not None:
        exact = grads["fp32"]
        for name in ("openrlhf", "ours"):
            out[f"{name}_grad_dist_to_fp32"] = float((grads[name] - exact).norm() / exact.norm())
            out[f"{name}_loss_rel_err_to_fp32"] = abs(res[f"{name}_loss"] - res["fp32_loss"]) / abs(res["fp32_loss"])
    return out


def sweep(actor, tensors: dict, grids: dict, repeats: int = 3) -> dict:
    """Each side over its micro-batch sizes: a warm-up pass, then `repeats` timed passes (median) and the peak
    memory; a size that runs out of memory is kept as such."""
    out = {}
    for name, side in (("openrlhf", theirs), ("ours", ours)):
        rows = []
        for micro in grids[name]:
            try:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                one_pass(actor, tensors, side, micro)
                times = [one_pass(actor, tensors, side, micro)[0] for _ in range(repeats)]
                peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
                rows.append({"micro_batch": micro, "seconds": statistics.median(times), "peak_gib": peak})
            except torch.OutOfMemoryError:
                rows.append({"micro_batch": micro, "error": "out of memory"})
            actor.zero_grad(set_to_none=True)
        out[name] = rows
    best = {k: min((r for r in v if "error" not in r), key=lambda r: r["seconds"], default=None) for k, v in out.items()}
    return {"grid": out, "best": best}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--openrlhf-grid", default="4,8,16,40,80", help="OpenRLHF's micro-batch sizes (rows)")
    ap.add_argument("--ours-grid", default="16,40,80", help="ours' micro-batch sizes (rows)")
    ap.add_argument("--reference", default="fp32", choices=("fp32", "none"),
                    help="the agreement check also against OpenRLHF's step on an fp32 copy of the weights")
    from benchmarks.common import ab_arguments, ab_policy, grpo_batch, perturbed, provenance, write_json

    ab_arguments(ap, "openrlhf_actor_ab.json", ROOT)
    args = ap.parse_args(argv)
    folder, prompts, lengths = ab_policy(args)
    actor = load_actor(folder)
    device = next(actor.parameters()).device
    tensors = {k: v.to(device) for k, v in grpo_batch(prompts, lengths, vocab=151_936, group=args.group,
                                                      seed=args.seed).items()}
    tensors["old_log_probs"] = perturbed(old_log_probs(actor, tensors), tensors["response_mask"], args.old_noise, args.seed)
    grids = {"openrlhf": [int(x) for x in args.openrlhf_grid.split(",")], "ours": [int(x) for x in args.ours_grid.split(",")]}
    reference = load_actor(folder, dtype=torch.float32) if args.reference == "fp32" else None
    check = agreement(actor, tensors, micro=grids["openrlhf"][0], reference=reference)
    del reference  # not resident during the sweep's peak-memory readings
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    result = dict(sweep(actor, tensors, grids, repeats=args.repeats), agreement=check)
    b = result["best"]
    if b["openrlhf"] and b["ours"]:
        result["ratios"] = {"speedup": b["openrlhf"]["seconds"] / b["ours"]["seconds"],
                            "peak": (b["ours"]["peak_gib"] / b["openrlhf"]["peak_gib"]) if b["ours"]["peak_gib"] else None}
    result["settings"] = dict(vars(args), tokens=int(tensors["attention_mask"].sum()),
                              response_tokens=int(tensors["response_mask"].sum()))
    result["info"] = provenance()
    print(json.dumps({k: result.get(k) for k in ("grid", "ratios", "agreement")}, indent=2))
    write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
