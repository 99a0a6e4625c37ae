"""Is verl's generation slow in how it asks vLLM? (issue 26)

verl 0.9.1's trainer spends 2.0 s generating 80 x 128 tokens of the Qwen3-1.7B shape on an H200, awake or asleep;
ours generates the same work in 0.45 s on the same vLLM 0.26 (benchmarks/RESULTS.md, "verl beside ours"). This
probe asks one vLLM for that work the two ways, each path in a process of its own:

- `ours`: relate_fast's own engine (relate_fast.rollout.vllm_engine.VLLMEngine) as the trainer runs it: `LLM` in this
  process, one request per prompt with n = G, token ids only (no detokenizer), final outputs only.
- `verl`: `AsyncLLM` with its engine core in a process of its own and verl's engine arguments (as verl's
  `vLLMHttpServer` starts it at bench_vs_verl.py's settings), one request per sequence (verl repeats each prompt G
  times), each awaited by a coroutine of its own to its last output, `SamplingParams` as verl's server builds them
  (`logprobs=0` in its bypass mode, repetition penalty 1.0; detokenized, every step's output streamed: vLLM's
  defaults, which verl keeps).
- verl's path with one thing changed at a time, to say which part costs: `verl_no_detokenize`, `verl_no_logprobs`,
  `verl_final_only` (only the last output sent back), `verl_grouped` (n = G per prompt), and `verl_as_ours` (all four).
- `ours_own_process` (GPU only): ours with vLLM's engine core in a process of its own (`rollout.vllm_own_process`),
  the one part of verl's way that is not a request setting. On the CPU our engine in its own process reloads pushed
  weights from files and cannot start from dummy ones, so `--paths` leaves it out there.

Not in it: verl's agent-loop workers and the Ray call from them to the server (one per sequence), its chat
template and its reward inside the loop. If `verl` here takes about what verl's trainer takes, the time is in vLLM's
request path; if it takes about what `ours` takes, it is in verl's layers above vLLM.

Random weights (vLLM's dummy loader). `--vocab` shrinks the vocabulary (the CPU's sampler over 151,936 logits per
sequence would hide the host path being measured); prompt ids are taken modulo it.

    python benchmarks/probe_rollout_path.py --shape 1.7b --out path.json              # the GPU
    python benchmarks/probe_rollout_path.py --shape tiny --vocab 4096 --out path.json # this CPU
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from benchmarks.common import provenance, qwen3_folder, write_json  # noqa: E402

G = 5
PATHS = ("ours", "ours_own_process", "verl")  # one process each
# each variant: verl's request path with the named things changed (see the module's docstring)
VARIANTS = {
    "verl": {},
    "verl_no_detokenize": {"detokenize": False},
    "verl_no_logprobs": {"logprobs": None},
    "verl_final_only": {"final_only": True},
    "verl_grouped": {"grouped": True},
    "verl_as_ours": {"detokenize": False, "logprobs": None, "final_only": True, "grouped": True},
}


def policy_folder(work: Path, shape: str, vocab: int | None) -> Path:
    """A Qwen3-`shape` config and the real tokenizer (no weights: vLLM's dummy loader makes them); `vocab` rewrites
    the config's vocabulary size, with the pad and EOS ids inside it (vLLM refuses a stop id outside it), the same
    EOS in the config and the tokenizer, so both paths stop on the same token."""
    from transformers import AutoTokenizer

    folder = qwen3_folder(work / f"qwen3_{shape}_{vocab or 'full'}", shape, weights=False)
    if vocab:
        path = folder / "config.json"
        cfg = json.loads(path.read_text())
        cfg.update(vocab_size=vocab, pad_token_id=0, eos_token_id=vocab - 1)
        path.write_text(json.dumps(cfg, indent=2))
        tok = AutoTokenizer.from_pretrained(str(folder))
        tok.eos_token = tok.convert_ids_to_tokens(vocab - 1)
        tok.save_pretrained(str(folder))
    return folder


def prompts(folder: Path, count: int, vocab: int | None) -> list:
    """`count` English ad prompts from the sample set, chat-templated as the trainer sends them."""
    from relate_fast.data import sample_ads
    from relate_fast.models import prompt_ids
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    rows = sample_ads("train", langs=["en"])
    ids = [prompt_ids(tok, rows[i % len(rows)].prompt) for i in range(count)]
    return [[t % vocab for t in p] for p in ids] if vocab else ids


def verl_engine_args(folder: Path, args, cuda: bool) -> dict:
    """verl 0.9.1's `vLLMHttpServer` engine arguments (verl/workers/rollout/vllm_rollout/vllm_async_server.py) at
    bench_vs_verl.py's settings: its rollout defaults, vLLM awake at 0.3 of the GPU, dummy weights."""
    kw = dict(model=str(folder), dtype="bfloat16" if cuda else "float32", load_format="dummy", skip_tokenizer_init=False,
              distributed_executor_backend="mp", max_model_len=args.max_model_len, max_num_seqs=256,
              enable_chunked_prefill=True, max_num_batched_tokens=8192, enable_prefix_caching=True,
              logprobs_mode="processed_logprobs", seed=0, disable_log_stats=True)
    if cuda:
        kw.update(gpu_memory_utilization=args.gpu_memory_utilization, enforce_eager=False,
                  compilation_config={"cudagraph_mode": "FULL_AND_PIECEWISE"})
    else:
        kw.update(enforce_eager=True, kv_cache_memory_bytes=int(args.kv_cache_gb * 2**30))
    return kw


def verl_sampling_params(change: dict, max_tokens: int):
    """`SamplingParams` as verl's server builds them for one sequence (bypass mode asks for the sampled token's
    log-prob), with a variant's changes."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    kw = dict(temperature=1.0, top_k=-1, top_p=1.0, logprobs=change.get("logprobs", 0), repetition_penalty=1.0,
              ignore_eos=False, max_tokens=max_tokens, detokenize=change.get("detokenize", True))
    if change.get("grouped"):
        kw["n"] = G
    if change.get("final_only"):
        kw["output_kind"] = RequestOutputKind.FINAL_ONLY
    return SamplingParams(**kw)


async def verl_round(engine, pids: list, change: dict, max_tokens: int, tag: str) -> tuple:
    """One generation of G sequences per prompt on verl's path: seconds and tokens generated."""
    from vllm.inputs import TokensPrompt

    async def one(i: int, p: list) -> int:
        final = None
        gen = engine.generate(prompt=TokensPrompt(prompt_token_ids=p), request_id=f"{tag}-{i}",
                              sampling_params=verl_sampling_params(change, max_tokens))
        async for out in gen:  # verl's server keeps the last output
            final = out
        return sum(len(c.token_ids) for c in final.outputs)

    per = list(pids) if change.get("grouped") else [p for p in pids for _ in range(G)]
    t = time.perf_counter()
    tokens = await asyncio.gather(*[one(i, p) for i, p in enumerate(per)])
    return time.perf_counter() - t, sum(tokens)


async def run_verl_path(folder: Path, pids: list, args, cuda: bool) -> dict:
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    t = time.perf_counter()
    engine = AsyncLLM.from_engine_args(AsyncEngineArgs(**verl_engine_args(folder, args, cuda)))
    start = time.perf_counter() - t
    names = [n for n in VARIANTS if n.startswith("verl")]
    times = {n: [] for n in names}
    tokens = {}
    try:
        for r in range(args.repeats + 1):  # round 0 warms up; the variants alternate within each round
            for n in names:
                s, k = await verl_round(engine, pids, VARIANTS[n], args.max_new_tokens, f"{n}-{r}")
                if r:
                    times[n].append(s)
                tokens[n] = k
    finally:
        engine.shutdown()
    return {"start_s": round(start, 1), "variants": {n: summary(times[n], tokens[n], len(pids), args) for n in names}}


def run_ours_path(folder: Path, pids: list, args, cuda: bool, own_process: bool = False) -> dict:
    from relate_fast.rollout.vllm_engine import VLLMEngine
    from transformers import AutoTokenizer

    t = time.perf_counter()
    engine = VLLMEngine(folder, AutoTokenizer.from_pretrained(str(folder)), dtype="bfloat16" if cuda else "float32",
                        seed=0, max_model_len=args.max_model_len, kv_cache_gb=args.kv_cache_gb,
                        gpu_memory_utilization=args.gpu_memory_utilization, sleep=False, dummy_weights=True,
                        own_process=own_process)
    engine.needs_weights = False  # dummy weights are fine for timing
    start = time.perf_counter() - t
    times, tokens = [], 0
    for r in range(args.repeats + 1):
        t = time.perf_counter()
        out = engine.generate(pids, G, max_new_tokens=args.max_new_tokens, temperature=1.0, seed=r)
        if r:
            times.append(time.perf_counter() - t)
        tokens = sum(len(c) for group in out for c in group)
    engine.close()
    name = "ours_own_process" if own_process else "ours"
    return {"start_s": round(start, 1), "variants": {name: summary(times, tokens, len(pids), args)}}


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def summary(times: list, tokens: int, prompt_count: int, args) -> dict:
    med = statistics.median(times)
    return {"generate_s": round(med, 4), "repeats_s": [round(x, 4) for x in times], "tokens": tokens,
            "sequences": prompt_count * G, "ms_per_decode_step": round(med / args.max_new_tokens * 1e3, 3)}


def child(args) -> dict:
    import torch

    cuda = torch.cuda.is_available()
    folder = policy_folder(Path(args.work), args.shape, args.vocab)
    pids = prompts(folder, args.prompts, args.vocab)
    if args.path in ("ours", "ours_own_process"):  # the trainer's engine, in its process unless asked otherwise
        return run_ours_path(folder, pids, args, cuda, own_process=args.path == "ours_own_process")
    return asyncio.run(run_verl_path(folder, pids, args, cuda))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shape", default="1.7b")
    ap.add_argument("--vocab", type=int, default=None, help="a smaller vocabulary (the CPU: 4096); default the real one")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per generation (x G = 5 sequences)")
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--max-model-len", type=int, default=640)
    ap.add_argument("--repeats", type=int, default=3, help="timed generations per variant, after one warm-up")
    ap.add_argument("--gpu-memory-utilization", type=float, default=0.3)
    ap.add_argument("--kv-cache-gb", type=float, default=1.0, help="the CPU's KV cache")
    ap.add_argument("--paths", default=None, help="which processes to run, of ours, ours_own_process (GPU only) and "
                                                  "verl; default all three on a GPU, ours and verl on the CPU")
    ap.add_argument("--path", default=None, choices=PATHS, help=argparse.SUPPRESS)  # one child
    ap.add_argument("--work", default=None, help="folder for the policy config (a temporary one by default)")
    ap.add_argument("--timeout", type=int, default=240, help="seconds for each path's process (start included)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "rollout_path.json"))
    args = ap.parse_args(argv)
    if args.path:  # a child: one path, its result as JSON on the last line
        print("RESULT " + json.dumps(child(args)), flush=True)
        return None
    args.work = args.work or tempfile.mkdtemp(prefix="probe_rollout_path_")
    paths = (args.paths or ",".join(PATHS if _cuda() else ("ours", "verl"))).split(",")
    if set(paths) - set(PATHS):
        ap.error(f"--paths: {sorted(set(paths) - set(PATHS))} not among {PATHS}")
    if "ours_own_process" in paths and not _cuda():
        ap.error("--paths ours_own_process needs a GPU: on the CPU our engine in its own process cannot start from "
                 "dummy weights")
    res = {"shape": args.shape, "vocab": args.vocab or "full", "prompts": args.prompts, "group_size": G,
           "max_new_tokens": args.max_new_tokens, "paths": {}, "variants": {}}
    for path in paths:  # a path that fails or outlives --timeout is kept with the end of its output; the others run
        cmd = [sys.executable, str(Path(__file__).resolve()), "--path", path, *_child_args(args)]
        rc, output = _run_path(cmd, args.timeout)
        lines = [ln for ln in output.splitlines() if ln.startswith("RESULT ")]
        if rc or not lines:
            res["paths"][path] = {"error": f"exit {rc}", "output_tail": output[-3000:]}
            print(f"the {path} path failed ({rc}); the end of its output:\n{output[-3000:]}", file=sys.stderr)
            continue
        one = json.loads(lines[-1][len("RESULT "):])
        res["paths"][path] = {"start_s": one["start_s"]}
        res["variants"].update(one["variants"])
    if not res["variants"]:
        raise SystemExit("no path ran (their errors are above)")
    if "ours" in res["variants"]:
        base = res["variants"]["ours"]["generate_s"]
        res["over_ours"] = {n: round(v["generate_s"] / base, 3) for n, v in res["variants"].items()}
    res["info"] = provenance()
    write_json(args.out, res)
    print(json.dumps({k: v for k, v in res.items() if k != "info"}, indent=2))
    return res


def _run_path(cmd: list, timeout: int) -> tuple:
    """One path's process: its exit status (or why it was stopped) and its output. Stopped with its whole process
    group, so no vLLM engine core it started outlives it holding the GPU."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=timeout)
        return proc.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        return f"timeout after {timeout} s", proc.communicate()[0]


def _child_args(a) -> list:
    out = ["--shape", a.shape, "--prompts", str(a.prompts), "--max-new-tokens", str(a.max_new_tokens),
           "--max-model-len", str(a.max_model_len), "--repeats", str(a.repeats),
           "--gpu-memory-utilization", str(a.gpu_memory_utilization), "--kv-cache-gb", str(a.kv_cache_gb),
           "--work", a.work]
    return out + (["--vocab", str(a.vocab)] if a.vocab else [])


if __name__ == "__main__":
    main()
