"""benchmarks/bench_attention.py on the CPU: the packed rows, the reference, flex_attention's block mask (eager;
the GPU runs it compiled), and that a backend which cannot run here is reported, not fatal. torch_varlen and
flash-attn 4 run on the GPU only (gpu_issue26.sh attention)."""
import pytest
import torch

from benchmarks import bench_attention as ba


def test_row_lengths_are_prompt_plus_response():
    fixed, real = ba.row_lengths("fixed", 50), ba.row_lengths("realistic", 50)
    assert all(86 + 128 <= n <= 103 + 128 for n in fixed)
    assert all(86 + 16 <= n <= 103 + 128 for n in real) and len(set(real)) > 10


def test_flex_block_mask_is_causal_within_each_row():
    lengths = [5, 1, 9, 4]
    q, k, v, cu, m = ba.packed_inputs(lengths, heads=4, kv_heads=2, head_dim=16, device=torch.device("cpu"),
                                      dtype=torch.float32)
    ref = ba.backend_fn("reference", lengths, torch.device("cpu"))(q, k, v, cu, m)
    flex = ba._flex(lengths, torch.device("cpu"), compiled=False)(q, k, v, cu, m)
    assert ba.rel(flex, ref) < 1e-5
    # and the reference itself is a causal per-row attention: a later row's keys do not reach an earlier row
    k2 = k.clone()
    k2[cu[2]:] += 5.0
    again = ba.backend_fn("reference", lengths, torch.device("cpu"))(q, k2, v, cu, m)
    assert torch.equal(again[: cu[2]], ref[: cu[2]]) and not torch.allclose(again[cu[2]:], ref[cu[2]:])


def test_the_cpu_smoke_run_measures_what_runs_and_reports_what_does_not(tmp_path):
    res = ba.main(["--quick", "--backends", "sdpa_rows,fa4", "--out", str(tmp_path / "a.json")])
    for wl in ("fixed", "realistic"):
        rows = res["workloads"][wl]["backends"]
        assert rows["sdpa_rows"]["out_rel"] < 1e-6 and rows["sdpa_rows"]["dq_rel"] < 1e-6
        assert rows["sdpa_rows"]["ms"] > 0
        assert "error" in rows["fa4"] or rows["fa4"]["out_rel"] < 2e-2  # no flash-attn 4 on a CPU machine
    assert (tmp_path / "a.json").is_file() and res["info"]["commit"]


def test_transformers_fa4_check_says_why_where_flash_attn_4_cannot_load():
    res = ba.transformers_fa4_check(torch.device("cpu"))  # no FA4 (and no GPU) here: a reason, not a crash
    assert set(res) == {"error"} and "FlashAttention4" in res["error"] or res["packed_vs_alone_rel"] < 2e-2


def test_an_unknown_backend_is_refused_before_any_work():
    with pytest.raises(SystemExit):
        ba.main(["--quick", "--backends", "flash3"])
