"""The tables of benchmarks/RESULTS.md that are generated from the JSON in benchmarks/results/.

    python benchmarks/results_tables.py           # rewrite the generated blocks of RESULTS.md
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
    runs = [_load(f"scaling_{n}gpu_h100.json")["ours"] for n in (1, 2)]
    base = runs[0]["tokens_per_second"] / runs[0]["world_size"]
    lines = ["| GPUs | step | rollout | update | push | tokens/s | tokens/s/GPU | kept | peak memory/GPU |",
             "|---|---|---|---|---|---|---|---|---|"]
    for o in runs:
        n, st = o["world_size"], o["stages_s"]
        per_gpu = o["tokens_per_second"] / n
        kept = "—" if n == 1 else f"**{100 * per_gpu / base:.1f} %**"
        lines.append(_row([str(n), f"{o['step_s']:.2f} s", f"{st['rollout']:.2f} s", f"{st['update']:.2f} s",
                           f"{st['weight_push']:.2f} s", f"{o['tokens_per_second']:,.0f}", f"{per_gpu:,.0f}", kept,
                           f"{o['peak_mem_gib']:.1f} GiB"]))
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


TABLES = {"vs_trl": vs_trl, "scaling": scaling, "paper8b": paper8b}


def render(text: str) -> str:
    for name, make in TABLES.items():
        pat = re.compile(rf"(<!-- table:{name} -->\n)(.*?)(\n<!-- /table:{name} -->)", re.S)
        if not pat.search(text):
            raise SystemExit(f"{DOC}: no block <!-- table:{name} --> ... <!-- /table:{name} -->")
        text = pat.sub(lambda m: m.group(1) + make() + m.group(3), text)
    return text


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true", help="exit 1 when RESULTS.md differs from the JSON")
    args = ap.parse_args(argv)
    text = DOC.read_text()
    new = render(text)
    if args.check:
        if new != text:
            print(f"{DOC}: generated tables differ from benchmarks/results/ (run python benchmarks/results_tables.py)",
                  file=sys.stderr)
            return 1
        return 0
    DOC.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
