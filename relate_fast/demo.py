"""Demo of the native matcher on the shipped sample ads: blacklist hits (with normalisation and
exemptions), their token indices, frequent n-grams, and RELATE's token-level rewards.

    python -m relate_fast.demo [--texts FILE] [--tokenizer PATH] [--min-count N] [--out DIR]

Without --tokenizer it trains a small byte-level BPE on the texts (no model hub needed); with a
path (e.g. a local Qwen3 tokenizer folder) it uses that tokenizer. Writes DIR/matcher_demo.json.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from importlib import resources
from pathlib import Path

from relate_fast.matcher import Blacklist, NgramCounter, TokenAligner, token_rewards


def read_texts(path) -> list:
    if path is None:
        text = (resources.files("relate_fast.data") / "sample_ads.txt").read_text(encoding="utf-8")
    else:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as e:
            raise SystemExit(f"--texts {path}: cannot read as UTF-8 text: {e}")
    texts = [line for line in text.splitlines() if line.strip() and not line.startswith("#")]
    if not texts:
        raise SystemExit(f"--texts {path or 'sample_ads.txt'}: no texts (one per line, # for comments)")
    return texts


def small_bpe(texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(texts * 4, trainers.BpeTrainer(
        vocab_size=400, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=tok)


def mark(text, spans, left="⟦", right="⟧"):
    out, pos = [], 0
    for s, e in sorted(spans):
        if s < pos:  # overlapping hits: extend the open bracket
            continue
        out += [text[pos:s], left, text[s:e], right]
        pos = e
    return "".join(out + [text[pos:]])


def render_rewards(aligner, ids, row) -> str:
    import numpy as np

    cps, cp_byte, tok_byte = aligner.decode_offsets(ids)
    # token index holding the first and the last byte of each character
    first = np.searchsorted(tok_byte, cp_byte[:-1], side="right") - 1
    last = np.searchsorted(tok_byte, cp_byte[1:] - 1, side="right") - 1
    out, run, run_r = [], [], 0.0
    for k, cp in enumerate(cps):
        r = float(min(row[first[k]:last[k] + 1].min(), 0.0))
        if r != run_r and run:
            out.append("".join(run) if run_r == 0 else f"[{''.join(run)}|{run_r:g}]")
            run = []
        run_r = r
        run.append(chr(cp))
    if run:
        out.append("".join(run) if run_r == 0 else f"[{''.join(run)}|{run_r:g}]")
    return "".join(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", help="UTF-8 file, one ad text per line (default: the shipped sample)")
    ap.add_argument("--tokenizer", help="a local Hugging Face tokenizer folder (default: train a small BPE)")
    ap.add_argument("--blacklist", help="a list file (default: the shipped compliance list)")
    ap.add_argument("--min-count", type=int, default=3, help="G_high threshold: n-grams in at least this many texts")
    ap.add_argument("--out", default="runs/demo", help="output folder")
    args = ap.parse_args(argv)

    texts = read_texts(args.texts)
    t0 = time.perf_counter()
    bl = Blacklist.from_file(args.blacklist) if args.blacklist else Blacklist.default()
    build_ms = (time.perf_counter() - t0) * 1e3
    print(f"{bl} built in {build_ms:.1f} ms\n")

    print("Blacklist hits (⟦ ⟧; offsets are into the original text, separators skipped, exemptions applied):")
    hits = bl.find_batch(texts)
    for text, hs in zip(texts, hits):
        terms = ", ".join(f"{bl.patterns[p]}[{bl.categories[p]}]" for _, _, p in hs) or "compliant"
        print(f"  {mark(text, [(s, e) for s, e, _ in hs])}\n      -> {terms}")

    if args.tokenizer:
        from transformers import AutoTokenizer
        try:
            tokenizer = AutoTokenizer.from_pretrained(args.tokenizer)
        except Exception as e:  # noqa: BLE001 - report any loader failure with the path
            raise SystemExit(f"--tokenizer {args.tokenizer}: cannot load a tokenizer there: {e}")
    else:
        tokenizer = small_bpe(texts)
    aligner = TokenAligner(tokenizer)
    batch = [tokenizer.encode(t, add_special_tokens=False) for t in texts]
    counter = NgramCounter(2, 10)
    counter.update(batch)
    r_tok = token_rewards(batch, blacklist=bl, aligner=aligner, ngram_counter=counter, min_count=args.min_count,
                          lambda_blacklist=1.0, lambda_ngram=0.5)
    frequent = counter.frequent(args.min_count)
    print(f"\nTokens ({aligner.kind} tokenizer, {aligner.vocab_size} ids): r_tok = -1·blacklist - 0.5·frequent n-gram "
          f"(G_high: {len(frequent)} n-grams in >= {args.min_count} texts)")
    print("  (shown per character: a character takes the lowest reward of the tokens holding its bytes, so a\n"
          "   character split across tokens shows once; [text|r] marks runs with reward r)")
    rows = []
    for text, ids, row in zip(texts, batch, r_tok):
        print("  " + render_rewards(aligner, ids, row) + f"   ({int((row[:len(ids)] != 0).sum())}/{len(ids)} tokens)")
        rows.append({"text": text, "token_ids": list(map(int, ids)), "r_tok": [float(x) for x in row[:len(ids)]]})

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "blacklist": {"patterns": len(bl), "exemptions": len(bl.exemptions), "build_ms": build_ms},
        "compliance_rate": sum(1 for h in hits if not h) / len(texts),
        "hits": [[{"start": s, "end": e, "pattern": bl.patterns[p], "category": bl.categories[p]} for s, e, p in h]
                 for h in hits],
        "frequent_ngrams": [tokenizer.decode(list(g)) for g in frequent],
        "responses": rows,
    }
    (out / "matcher_demo.json").write_text(json.dumps(result, ensure_ascii=False, indent=1), encoding="utf-8")
    print(f"\ncompliance rate {result['compliance_rate']:.2f}; wrote {out / 'matcher_demo.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
