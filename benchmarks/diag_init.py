"""Where the start-up time of a large random-init policy and its vLLM engine goes (one GPU):
    python benchmarks/diag_init.py --shape 8b
Prints the time of each part; every 30 s a traceback of all threads (a stall shows where it sits)."""
import argparse, faulthandler, os, sys, tempfile, time
from pathlib import Path
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
from benchmarks.common import qwen3_folder  # noqa: E402

ap = argparse.ArgumentParser()
ap.add_argument("--shape", default="8b")
ap.add_argument("--util", type=float, default=0.4)
args = ap.parse_args()
faulthandler.dump_traceback_later(30, repeat=True, file=sys.stderr)
t = time.time()
folder = qwen3_folder(Path(tempfile.mkdtemp()) / args.shape, args.shape, weights=False)
print(f"folder {time.time() - t:.1f} s", flush=True)
from relate_fast.models import load_policy  # noqa: E402
t = time.time()
model, tok = load_policy(folder, dtype="bfloat16", device="cuda", init="random")
import torch  # noqa: E402
torch.cuda.synchronize()
print(f"random init {time.time() - t:.1f} s on {next(model.parameters()).device}", flush=True)
from relate_fast.rollout.vllm_engine import VLLMEngine  # noqa: E402
t = time.time()
eng = VLLMEngine(folder, tok, dtype="bfloat16", gpu_memory_utilization=args.util, dummy_weights=True, max_model_len=800)
print(f"vllm init {time.time() - t:.1f} s", flush=True)
t = time.time()
eng.ensure_weights(model)
torch.cuda.synchronize()
print(f"push {time.time() - t:.2f} s", flush=True)
faulthandler.cancel_dump_traceback_later()
