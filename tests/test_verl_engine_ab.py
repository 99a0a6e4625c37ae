"""benchmarks/verl_engine_ab.py on the CPU: verl 0.9.1's own FSDP engine (`FSDPEngineWithLMHead.train_batch`: its
forward, `ppo_loss`, backward and optimizer step) on a tiny Qwen3, once with verl's vanilla policy loss and once
with ours registered as "relate", on one GRPO batch whose advantages are not 0. verl runs its real code; only its
platform is a CPU stand-in (tests/helpers/verl_cpu_platform.py: verl ships none). In a fresh process: verl's
platform and the process group are per process."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import json, sys
sys.path[:0] = [{root!r}, {helpers!r}]
import torch
from transformers import Qwen3Config, Qwen3ForCausalLM
import verl_cpu_platform
verl_cpu_platform.install()
from benchmarks import verl_engine_ab as ab
from benchmarks.common import grpo_batch
torch.manual_seed(0)
cfg = Qwen3Config(vocab_size=300, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=256, tie_word_embeddings=False)
Qwen3ForCausalLM(cfg).save_pretrained({model!r})
ab.init_single_process_group("gloo")
engine = ab.build_engine({model!r}, attn="sdpa", remove_padding={rmpad}, fused=False, token_budget=4096, strategy="fsdp2",
                         ckpt={rmpad})
g = torch.Generator().manual_seed(3)
prompts = [torch.randint(0, 300, (int(n),), generator=g).tolist() for n in torch.randint(5, 12, (10,), generator=g)]
lengths = torch.randint(3, 17, (10,), generator=g).tolist()
tensors = grpo_batch(prompts, lengths, vocab=300, group=5, seed=1)
res = ab.run_ab(engine, tensors, repeats=1, remove_padding={rmpad}, fused=False, token_budget=4096)
grid = ab.budget_grid(engine, dict(tensors, old_log_probs=res["old_log_probs"]), {{2: 60, 10: 4096}},
                      remove_padding={rmpad}, fused=False, repeats=1)
print("RESULT" + json.dumps({{"summary": res["summary"], "noise": res["grad_rel_noise"], "grid": grid,
                             "ckpt": bool(engine.module.is_gradient_checkpointing)}}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("rmpad", [True, False], ids=["remove_padding_ckpt", "padded"])
def test_ours_inside_verls_engine_equals_its_vanilla_loss(tmp_path, rmpad):
    pytest.importorskip("verl")
    pytest.importorskip("tensordict")
    code = SCRIPT.format(root=str(ROOT), helpers=str(ROOT / "tests" / "helpers"), model=str(tmp_path / "m"), rmpad=rmpad)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert proc.returncode == 0 and line, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(line[0][len("RESULT"):])
    van, ours = res["summary"]["vanilla"], res["summary"]["relate"]
    assert abs(van["loss_first"]) > 1e-4  # the check compares something: advantages are not 0
    assert ours["loss_first"] == pytest.approx(van["loss_first"], rel=1e-3, abs=1e-6)
    assert ours["grad_norm_first"] == pytest.approx(van["grad_norm_first"], rel=1e-3)
    assert ours["grad_rel_diff_to_first_mode"] < 1e-3 and res["noise"] < 1e-3
    # checkpointing as asked (verl's model config would turn it on), and verl's loss alone at two token budgets
    assert res["ckpt"] is rmpad
    assert [r["micro_batch"] for r in res["grid"]] == [2, 10] and all(r["update_s"] > 0 for r in res["grid"])


def test_a_mode_with_our_logprobs_swaps_verls_kernel_for_its_call_only():
    """`vanilla+relate_logprobs` (--logprobs-ab on): verl's vanilla loss with verl's linear_cross_entropy replaced
    by ours for that call, and verl's own back afterwards, also when the call fails."""
    pytest.importorskip("verl.utils.kernel.linear_cross_entropy", reason="verl is not installed")
    import verl.utils.kernel.linear_cross_entropy as lce

    from benchmarks import verl_engine_ab as ab

    own = lce.linear_cross_entropy
    with ab.logprobs_kernel("vanilla") as loss_mode:
        assert loss_mode == "vanilla" and lce.linear_cross_entropy is own
    with pytest.raises(RuntimeError):
        with ab.logprobs_kernel("vanilla" + ab.OURS_LOGPROBS, 1024) as loss_mode:
            assert loss_mode == "vanilla" and lce.linear_cross_entropy is not own
            assert lce.linear_cross_entropy.func.__module__ == "relate_fast.integrations.verl"
            assert lce.linear_cross_entropy.keywords["chunk_size"] == 1024
            raise RuntimeError("the engine failed")
    assert lce.linear_cross_entropy is own
    # several chunk sizes in one A/B: the first is the plain mode, each further one names its size (0: the default)
    modes = ab.logprobs_modes("1024,0,2048")
    assert modes == {"vanilla+relate_logprobs": 1024, "vanilla+relate_logprobs@0": 0, "vanilla+relate_logprobs@2048": 2048}
    for mode, chunk in list(modes.items())[1:]:
        with ab.logprobs_kernel(mode, chunk) as loss_mode:
            assert loss_mode == "vanilla" and lce.linear_cross_entropy.keywords["chunk_size"] == (chunk or None)
    assert lce.linear_cross_entropy is own
    with pytest.raises(SystemExit):  # argument error before any work: the swap needs verl's fused forward
        ab.main(["--logprobs-ab", "on", "--fused", "off"])


def test_the_log_prob_ratios_by_chunk_read_as_the_recorded_a_b_wrote_them():
    """logprobs_ratios on the summary of the H200 A/B at 116ad6a (--logprobs-chunk 1024,0) gives what that run
    wrote, keys and all: the tables read these names."""
    from benchmarks import verl_engine_ab as ab

    d = json.loads((ROOT / "benchmarks" / "results" / "verl_engine_ab_h200_1.7b_fixed_116ad6a.json").read_text())
    got = ab.logprobs_ratios(d["summary"], ab.logprobs_modes(d["settings"]["logprobs_chunk"]))
    assert got["relate_logprobs_over_vanilla_by_chunk"] == d["relate_logprobs_over_vanilla_by_chunk"]
    assert got["relate_logprobs_over_vanilla"] == d["relate_logprobs_over_vanilla"]
    assert ab.logprobs_ratios(d["summary"], {}) == {}
