"""GPU vLLM rollout engine at full speed (compiled, CUDA graphs), and the trainer on 2 GPUs: weight push
in place, sleep level 2, and a 2-GPU run resumed from its checkpoint. Skipped without CUDA (and vLLM).
vLLM builds one engine per process, so each check of an engine runs in its own subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.gpu

ENGINE_CHECK = r'''
import json, sys, torch
from relate_fast.config import TinyModelConfig
from relate_fast.data import sample_ads
from relate_fast.models import build_tiny_model, load_policy, prompt_ids
from relate_fast.rollout.hf import HFEngine
from relate_fast.rollout.vllm_engine import VLLMEngine

# the guard: an engine core in its own process is spawned, and a spawned process imports this script again
if __name__ == "__main__":
    folder = build_tiny_model(TinyModelConfig(vocab_size=400, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                                              num_attention_heads=2, num_key_value_heads=1, head_dim=64), sys.argv[1])
    model, tok = load_policy(folder, dtype="bfloat16", device="cuda")
    pids = [prompt_ids(tok, r.prompt) for r in sample_ads("train")[:8]]
    engine = VLLMEngine(folder, tok, dtype="bfloat16", execution=sys.argv[2], gpu_memory_utilization=0.2,
                        own_process=sys.argv[4] == "own")
    hf = HFEngine(model, tok)
    kw = dict(max_new_tokens=8, temperature=0.0)
    first = engine.generate(pids, 1, **kw)            # sleeps at level 2 afterwards: weights discarded
    assert engine.needs_weights
    free_asleep = torch.cuda.mem_get_info()[0]
    try:
        engine.generate(pids, 1, **kw)
        raise SystemExit("generate without weights must fail")
    except RuntimeError as e:
        assert "ensure_weights" in str(e)
    torch.manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    engine.mark_stale()
    engine.ensure_weights(model)
    free_awake_weights = torch.cuda.mem_get_info()[0]
    after = engine.generate(pids, 1, **kw)
    ref = hf.generate(pids, 1, **kw)
    same4 = sum(a[0][:4] == b[0][:4] for a, b in zip(after, ref))
    changed = sum(a != b for a, b in zip(after, first))
    json.dump({"same_first4": same4, "changed": changed, "free_asleep": free_asleep, "free_weights": free_awake_weights},
              open(sys.argv[3], "w"))
    engine.close()
'''


def _cuda_count():
    try:
        import torch
        return torch.cuda.device_count()
    except ImportError:
        return 0


@pytest.mark.parametrize("execution,process", [("compiled", "in"), ("cuda_graphs", "in"), ("compiled", "own")])
def test_vllm_push_in_place_matches_hf_greedy(tmp_path, execution, process):
    """The engine samples the weights pushed to it: in this process (copied in place), and with its engine core in
    a process of its own (rollout.vllm_own_process: CUDA IPC handles of the policy's tensors)."""
    pytest.importorskip("vllm")
    script = tmp_path / "check.py"
    script.write_text(ENGINE_CHECK)
    out = tmp_path / "out.json"
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{os.environ.get('PYTHONPATH', '')}")
    res = subprocess.run([sys.executable, str(script), str(tmp_path / "m"), execution, str(out), process], env=env,
                         capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    r = json.loads(out.read_text())
    assert r["same_first4"] >= 6, r  # bf16: the first greedy tokens of most prompts agree with HF
    assert r["changed"] >= 4, r  # the pushed weights are the ones sampled from
    assert r["free_asleep"] > r["free_weights"], r  # level 2 released the weights' memory


SMALL = ["--run.progress", "false", "--model.dtype", "bfloat16", "--model.tiny.head_dim", "64",
         "--sft.steps", "0", "--ctcvr.encoder", "hashed", "--reward.encoder", "hashed", "--ctcvr.variants", "3",
         "--ctcvr.impressions", "3", "--ctcvr.epochs", "1", "--rollout.engine", "vllm", "--rollout.prompts_per_step", "4",
         "--rollout.max_new_tokens", "24", "--rollout.vllm_gpu_memory_utilization", "0.2", "--eval.enabled", "false",
         "--run.checkpoint_every", "2", "--run.check_replicas_every", "1"]


def _torchrun(tmp_path, name, steps, port):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(port),
           "-m", "relate_fast.train", "--run.out_dir", str(tmp_path), "--run.name", name, "--grpo.steps", str(steps),
           *SMALL]
    env = dict(os.environ, PYTHONPATH=f"{ROOT}:{os.environ.get('PYTHONPATH', '')}", NCCL_NVLS_ENABLE="0")
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-4000:]
    return [json.loads(l) for l in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.skipif(_cuda_count() < 2, reason="needs 2 GPUs")
def test_two_gpus_checkpoint_resumes_on_two_gpus(tmp_path):
    """ZeRO-2 + one vLLM engine per rank on 2 GPUs (replicas checked every step): a run stopped after
    step 2 and resumed continues like the uninterrupted run — the same sampled responses (seeded per
    step and rank) and the same metrics within bf16 noise."""
    pytest.importorskip("vllm")
    full = _torchrun(tmp_path, "full", 3, 29631)
    _torchrun(tmp_path, "part", 2, 29632)
    resumed = _torchrun(tmp_path, "part", 3, 29633)
    assert [m["step"] for m in resumed] == [1, 2, 3]
    a, b = full[2], resumed[2]
    (tmp_path.parent / "resume_2gpu.json").write_text(json.dumps({"uninterrupted": a, "resumed": b}, indent=1))
    assert a["response_tokens_mean"] == b["response_tokens_mean"]
    for k in ("reward/total", "reward/length", "reward/format"):
        assert abs(a[k] - b[k]) <= 1e-6 * max(1.0, abs(a[k])), (k, a[k], b[k])
    for k in ("loss", "grad_norm", "entropy"):
        assert abs(a[k] - b[k]) <= 0.02 * max(abs(a[k]), 1e-3), (k, a[k], b[k])
