"""benchmarks/openrlhf_actor_ab.py on the CPU: OpenRLHF 0.11.2's real Actor and PolicyLoss against the drop-in's
recipe on a tiny Qwen3 (fp32) and a GRPO batch with non-zero advantages, through the bench's own functions: the
same loss and gradients at a common micro-batch size (fp32; in bf16 each side against the fp32 step), and a sweep that times every size of each side. In a fresh
process: the bench puts a stand-in for flash-attn on its process's path."""
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
sys.path.insert(0, {root!r})
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM
from benchmarks import openrlhf_actor_ab as ab
from benchmarks.common import grpo_batch
torch.manual_seed(0)
cfg = Qwen3Config(vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                  num_key_value_heads=1, head_dim=16, max_position_embeddings=128, tie_word_embeddings=False)
Qwen3ForCausalLM(cfg).save_pretrained({model!r})
actor = ab.load_actor({model!r}, dtype=torch.float32)
g = torch.Generator().manual_seed(2)
prompts = [torch.randint(3, 300, (int(n),), generator=g).tolist() for n in torch.randint(4, 9, (10,), generator=g)]
tensors = grpo_batch(prompts, torch.randint(2, 8, (10,), generator=g).tolist(), vocab=300, group=5, seed=1)
tensors["old_log_probs"] = ab.old_log_probs(actor, tensors, rows=4) + 0.05 * torch.randn(10, 7, generator=g)
check = ab.agreement(actor, tensors, micro=5)
bf16 = ab.load_actor({model!r}, dtype=torch.bfloat16)  # as on the GPU, against the fp32 weights as the reference
check_bf16 = ab.agreement(bf16, tensors, micro=5, reference=actor)
res = ab.sweep(actor, tensors, {{"openrlhf": [3, 10], "ours": [10]}}, repeats=1)
print("RESULT" + json.dumps({{"check": check, "check_bf16": check_bf16, "sizes": [r["micro_batch"] for r in res["grid"]["openrlhf"]],
                              "ours_seconds": res["best"]["ours"]["seconds"]}}))
"""


@pytest.mark.slow
def test_the_openrlhf_ab_agrees_and_sweeps(tmp_path):
    for name in ("openrlhf", "peft", "deepspeed"):
        if importlib.util.find_spec(name) is None:
            pytest.skip(f"{name} is not installed (bash scripts/setup.sh train peers)")
    code = SCRIPT.format(root=str(ROOT), model=str(tmp_path / "m"))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(line[0][len("RESULT"):])
    check = res["check"]
    assert abs(check["openrlhf_loss"]) > 1e-4  # the check compares something: advantages are not 0
    assert check["ours_loss"] == pytest.approx(check["openrlhf_loss"], rel=1e-5, abs=1e-7)
    assert check["grad_rel_diff"] < 1e-5
    assert res["sizes"] == [3, 10] and res["ours_seconds"] > 0
    # bf16 weights (the GPU run's): each side against OpenRLHF's step on the fp32 weights. Ours rounds no logits to
    # bf16, so it is no farther from the exact gradients than OpenRLHF's own step (a fault in the loss would be ~1)
    b = res["check_bf16"]
    assert 0 < b["openrlhf_grad_dist_to_fp32"] < 0.1
    assert b["ours_grad_dist_to_fp32"] <= 1.5 * b["openrlhf_grad_dist_to_fp32"] + 1e-3
    assert b["ours_loss_rel_err_to_fp32"] <= 1.5 * b["openrlhf_loss_rel_err_to_fp32"] + 1e-3
