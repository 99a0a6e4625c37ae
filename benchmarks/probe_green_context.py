"""Can sampling and learning share one GPU faster than they alternate? (issue 27)

The colocated one_step_off run of 2026-12-02 overlapped vLLM's decoding with the update and each phase took
about twice as long as alone (0.99x sync). One reading: the update's products are persistent kernels that take
every SM until they finish, so the decoder's small kernels wait for them and the two phases time-slice instead of
sharing. This probe asks the GPU directly, without vLLM or the trainer, on stand-ins of the 1.7B shape:

- "update": the products of one update (forward and two backward products per weight, 28 layers) at T tokens;
- "decode": one decode step of 80 sequences (the same weights read once, plus the lm_head) captured in a CUDA
  graph, as vLLM does, replayed until it takes about as long as the update alone;

then runs them one after the other, at once on two streams, at once with the decode's stream at high priority,
and at once with the update confined by a CUDA green context to n of the SMs (the decode keeps the whole GPU),
and the decode confined instead, if the driver allows replaying a graph there. A step that overlaps well takes
close to max(update, decode); alternating takes their sum.

    python benchmarks/probe_green_context.py --out green.json      # one GPU, ~40 s
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import provenance, write_json  # noqa: E402

# Qwen3-1.7B: hidden 2048, 28 layers, q/k/v 2048 -> 4096 (16 heads, 8 kv heads of 128), MLP 6144, vocab 151,936
HIDDEN, LAYERS, QKV, MLP, VOCAB = 2048, 28, 4096, 6144, 151_936


def layer_weights(torch, dev):
    """Each layer's four products as (in, out) weights: qkv, o, gate_up, down."""
    shapes = [(HIDDEN, QKV), (HIDDEN, HIDDEN), (HIDDEN, 2 * MLP), (MLP, HIDDEN)]
    return [[torch.randn(i, o, device=dev, dtype=torch.bfloat16) * 0.02 for i, o in shapes] for _ in range(LAYERS)]


def green_context(torch, num_sms: int):
    """A green context of `num_sms` SMs and its enter/leave calls (the API was renamed between torch versions)."""
    from torch.cuda.green_contexts import GreenContext

    gc = GreenContext.create(num_sms=num_sms, device_id=torch.cuda.current_device())
    enter = getattr(gc, "set_context", None) or gc.make_current
    leave = getattr(gc, "pop_context", None) or gc.pop_current
    return gc, enter, leave


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tokens", type=int, default=17_920, help="tokens of the update (80 sequences x 224)")
    ap.add_argument("--batch", type=int, default=80, help="sequences per decode step")
    ap.add_argument("--sms", default="66,100,116,124", help="SMs of the update's green context, comma-separated")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "out" / "probe_green_context.json"))
    args = ap.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        sys.exit("probe_green_context.py needs a CUDA GPU")
    dev = torch.device("cuda")
    sms_total = torch.cuda.get_device_properties(dev).multi_processor_count
    weights = layer_weights(torch, dev)
    head = torch.randn(HIDDEN, VOCAB, device=dev, dtype=torch.bfloat16) * 0.02
    xs = {i: torch.randn(args.tokens, i, device=dev, dtype=torch.bfloat16) for i in (HIDDEN, MLP)}
    gs = {o: torch.randn(args.tokens, o, device=dev, dtype=torch.bfloat16) for o in (QKV, HIDDEN, 2 * MLP)}

    def update():
        """The products of one update: y = x W, dx = dy W^T, dW = x^T dy for every weight."""
        for layer in weights:
            for w in layer:
                i, o = w.shape
                torch.mm(xs[i], w)
                torch.mm(gs[o], w.t())
                torch.mm(xs[i].t(), gs[o])

    h = torch.randn(args.batch, HIDDEN, device=dev, dtype=torch.bfloat16)
    hm = torch.randn(args.batch, MLP, device=dev, dtype=torch.bfloat16)

    def decode_step():
        for qkv, o, gate_up, down in weights:
            torch.mm(h, qkv)
            torch.mm(h, o)
            torch.mm(h, gate_up)
            torch.mm(hm, down)
        torch.mm(h, head)

    side = torch.cuda.Stream()
    with torch.cuda.stream(side):  # warm cuBLAS on the capture stream, then capture one step
        decode_step()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, stream=side):
        decode_step()
    torch.cuda.synchronize()

    def timed(fn) -> float:
        runs = []
        for _ in range(args.reps + 1):  # the first is a warm-up
            torch.cuda.synchronize()
            t = time.perf_counter()
            fn()
            torch.cuda.synchronize()
            runs.append(time.perf_counter() - t)
        return statistics.median(runs[1:])

    update_s = timed(update)
    step_s = timed(graph.replay)
    steps = max(1, round(update_s / step_s))  # the decode about as long as the update

    def decode(stream):
        with torch.cuda.stream(stream):
            for _ in range(steps):
                graph.replay()

    decode_s = timed(lambda: decode(side))
    print(f"{torch.cuda.get_device_name()} ({sms_total} SMs): update {update_s * 1e3:.1f} ms, "
          f"decode {steps} steps {decode_s * 1e3:.1f} ms ({step_s * 1e3:.2f} ms per step)")
    rows = [{"run": "one after the other", "s": update_s + decode_s}]

    def both(update_stream, decode_stream):
        with torch.cuda.stream(update_stream):
            update()
        decode(decode_stream)

    main_stream = torch.cuda.Stream()
    rows.append({"run": "two streams", "s": timed(lambda: both(main_stream, side))})
    urgent = torch.cuda.Stream(priority=-1)  # lower is more urgent
    rows.append({"run": "two streams, decode at high priority", "s": timed(lambda: both(main_stream, urgent))})

    for n in [int(s) for s in args.sms.split(",") if s]:
        run = f"update in a green context of {n} SMs"
        try:
            gc, enter, leave = green_context(torch, n)  # gc: the context lives as long as it is named

            def green_update():
                enter()
                try:
                    update()
                finally:
                    leave()
                decode(side)

            alone = timed(lambda: (enter(), update(), leave()))
            rows.append({"run": run, "s": timed(green_update), "update_alone_s": alone})
        except Exception as e:  # an API or driver that refuses: say which, keep probing
            rows.append({"run": run, "error": f"{type(e).__name__}: {e}"[:300]})
    for n in [int(s) for s in args.sms.split(",") if s][:2]:
        run = f"decode in a green context of {sms_total - n} SMs"
        try:
            gc, enter, leave = green_context(torch, sms_total - n)

            def green_decode():
                with torch.cuda.stream(main_stream):
                    update()
                enter()
                try:
                    for _ in range(steps):
                        graph.replay()
                finally:
                    leave()

            rows.append({"run": run, "s": timed(green_decode)})
        except Exception as e:
            rows.append({"run": run, "error": f"{type(e).__name__}: {e}"[:300]})

    ideal = max(update_s, decode_s)
    for r in rows:
        if "s" in r:
            r["over_alternating"] = (update_s + decode_s) / r["s"]
            r["over_ideal"] = r["s"] / ideal
        print(f"{r['run']:45} " + (f"{r['s'] * 1e3:8.1f} ms  {r['over_alternating']:.2f}x alternating"
                                   + (f"  (update alone {r['update_alone_s'] * 1e3:.1f} ms)" if "update_alone_s" in r else "")
                                   if "s" in r else r["error"]))
    write_json(args.out, {"sms": sms_total, "update_s": update_s, "decode_s": decode_s, "decode_steps": steps,
                          "step_s": step_s, "tokens": args.tokens, "batch": args.batch, "rows": rows,
                          "info": provenance()})


if __name__ == "__main__":
    main()
