"""What a forward keeps for the backward on the GPU, layer checkpointing k of L, against the memory plan's
model (base + T·((L−k)·a + k·h), a from `activation_bytes_per_token`): the diagnosis of
tests/test_gpu_memory_plan.py's failures of 2026-12-03 (k = 6 of 6 plain, k = 2 compiled).

    python benchmarks/probe_memory_plan.py --out probe_memory_plan.json      # one GPU, ~30 s

Per fused setting (none, compile) and per k: the allocator's growth over a forward of the whole causal LM
(logits excluded, as in the test) and of the trunk alone (its output excluded, as in the probe), and the
plan's prediction from the probe's a."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import provenance, write_json  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "probe_memory_plan.json"))
    args = ap.parse_args(argv)
    import torch

    from relate_fast.memory_plan import activation_bytes_per_token, kept_by_forward
    from relate_fast.models import checkpoint_layers, decoder_trunk
    from tests.test_gpu_memory_plan import _model  # the test's model, so the probe diagnoses what it measures

    T, L, H = args.tokens, 6, 512
    h = H * 2
    rows = []
    for fused in ("none", "compile"):
        model = _model(fused)
        a = activation_bytes_per_token(model, T)
        ids = torch.randint(0, 1000, (1, T), device="cuda")
        base = None
        for k in range(L + 1):
            chosen = checkpoint_layers(model, k)
            full = kept_by_forward(lambda: model(input_ids=ids, use_cache=False).logits)
            trunk = kept_by_forward(lambda: decoder_trunk(model)(input_ids=ids, use_cache=False).last_hidden_state)
            if base is None:
                base = full - L * a * T
            pred = base + T * ((L - k) * a + k * h)
            rows.append({"fused": fused, "k": k, "chosen": chosen, "a_per_token": a, "a_over_h": a / h,
                         "kept_full": full, "kept_trunk": trunk, "predicted_full": pred, "error": full / pred - 1})
            print(f"{fused:8} k={k} chosen={chosen} a={a / h:5.2f}h  full {full / 2**20:7.2f} MiB  trunk "
                  f"{trunk / 2**20:7.2f} MiB  plan {pred / 2**20:7.2f} MiB  ({full / pred - 1:+.1%})", flush=True)
    write_json(args.out, {"rows": rows, "tokens": T, "layers": L, "hidden": H, "info": provenance()})


if __name__ == "__main__":
    main()
