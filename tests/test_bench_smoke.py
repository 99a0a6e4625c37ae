"""CI smoke run of the loss benchmark's CPU mode: it must run and its correctness columns must hold."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# torchrun's variables, which a trainer run earlier in this pytest process leaves in its environment
# (with its process group still bound to MASTER_PORT): a benchmark started as a single process must
# not inherit them, or it joins that port and fails
_LAUNCHER_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


def _single_process_env():
    import os

    return {k: v for k, v in os.environ.items() if k not in _LAUNCHER_VARS}


def test_bench_loss_quick(tmp_path):
    out = tmp_path / "loss.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_loss.py"), "--quick", "--chunks", "64",
                    "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["info"]["device"] == "cpu" and len(result["rows"]) == 2
    for row in result["rows"]:  # ours with 64 tokens per chunk (--chunks): more chunks, the same loss
        for impl in ("ours", "ours_recompute", "naive", "ours_fp32_chunk64"):
            assert row[f"{impl}_err_loss"] < 1e-5, (impl, row)
            assert row[f"{impl}_err_grad_hidden"] < 1e-5 and row[f"{impl}_err_grad_weight"] < 1e-5, (impl, row)
            assert row[f"{impl}_ms"] > 0
        assert row["floor_ms"] > 0 and row["logprobs_err"] < 1e-5


def test_the_verl_anchor_of_the_loss_bench_gives_the_reference_loss_and_gradients():
    """bench_loss.py's verl anchor (verl 0.9.1's chunked torch log-prob path + the GRPO math) on the CPU in fp32:
    the same loss and gradients as the fp32 reference the bench checks every implementation against (its Triton
    kernel needs CUDA: it runs in the GPU calls)."""
    pytest.importorskip("verl")
    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks import bench_loss as bl

    anchors = bl.verl_anchors()
    assert "verl_torch" in anchors
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(3, 37, 48, generator=g).requires_grad_(True)
    weight = (torch.randn(1003, 48, generator=g) / 7).requires_grad_(True)
    targets = torch.randint(0, 1003, (3, 37), generator=g)
    mask = torch.rand(3, 37, generator=g) > 0.2
    adv = torch.randn(3, generator=g)
    with torch.no_grad():
        old = torch.log_softmax(hidden @ weight.t(), -1).gather(-1, targets[..., None])[..., 0] + 0.3 * torch.randn(3, 37, generator=g)
    loss_ref, dh_ref, dw_ref = bl.fp32_reference(hidden, weight, targets, mask, adv, old)
    loss = anchors["verl_torch"](hidden, weight, targets, mask, adv, old)
    loss.backward()
    assert bl.rel(loss.detach(), loss_ref) < 1e-5
    assert bl.rel(hidden.grad, dh_ref) < 1e-5 and bl.rel(weight.grad, dw_ref) < 1e-5


def test_bench_rewards_quick(tmp_path):
    out = tmp_path / "rewards.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_rewards.py"), "--quick", "--encoder", "hashed",
                    "--out", str(out)], check=True, capture_output=True, timeout=300)
    result = json.loads(out.read_text())
    assert result["responses"] == 100 and result["pass_ms"] > 0
    assert {"length", "format", "ctcvr", "relevance", "correctness", "risk_token", "diversity_token",
            "ngram_update"} <= set(result["parts_ms"])


def test_bench_train_quick(tmp_path):
    out = tmp_path / "train.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_train.py"), "--quick", "--out", str(out)],
                   check=True, capture_output=True, timeout=600, env=_single_process_env())
    result = json.loads(out.read_text())
    assert result["steps_measured"] == 2 and result["tokens_per_second"] > 0
    assert {"time/rollout", "time/rewards", "time/update", "time/weight_push", "time/total"} <= set(result["step_ms"])
    assert "time/old_logprobs" not in result["step_ms"]  # one update per batch: on-policy, no extra forward
    assert result["info"]["commit"] and result["info"]["date"] and result["info"]["device"].startswith("cpu")


def test_bench_train_qwen3_shape_under_torchrun(tmp_path):
    """The GPU benchmark's code path (Qwen3 shape, random init, several ranks) on 2 CPU ranks: every
    rank must find the same work folder (a per-rank temporary folder once left ranks 1..N waiting)."""
    import os

    out = tmp_path / "train.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    res = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29614",
                          str(ROOT / "benchmarks" / "bench_train.py"), "--gpu", "--shape", "tiny", "--engine", "hf",
                          "--prompts", "1", "--max-new-tokens", "6", "--steps", "2", "--warmup", "0", "--out", str(out),
                          "--model.dtype", "float32", "--grpo.micro_batch_tokens", "4096"],
                         env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["info"]["world_size"] == 2 and result["responses_per_step"] == 10  # 2 ranks x 1 prompt x G=5
    assert result["steps_measured"] == 2 and result["tokens_per_second_per_gpu"] > 0


def test_generated_result_tables_match_their_json(tmp_path, monkeypatch):
    """benchmarks/RESULTS.md's generated tables equal what results_tables.py makes of the JSON, and a
    number typed into one is caught."""
    sys.path.insert(0, str(ROOT))
    import benchmarks.results_tables as rt

    assert rt.main(["--check"]) == 0
    doc, readme = tmp_path / "RESULTS.md", tmp_path / "README.md"
    doc.write_text(rt.DOC.read_text().replace("| 2 | 2.63 s |", "| 2 | 2.50 s |"))
    readme.write_text(rt.README.read_text())
    monkeypatch.setattr(rt, "DOC", doc)
    monkeypatch.setattr(rt, "README", readme)
    assert rt.main(["--check"]) == 1
    assert rt.main([]) == 0 and rt.main(["--check"]) == 0 and "| 2 | 2.63 s |" in doc.read_text()
    # the README's headline numbers come from the same JSON
    fixed = json.loads((rt.RESULTS / "vs_trl_h200_1.7b_fixed_f72f346.json").read_text())["ratios"]
    shown = f"**{fixed['end_to_end_tokens_per_second']:.2f}×** TRL's tokens/s"
    assert shown in readme.read_text()
    readme.write_text(readme.read_text().replace(shown, "**3.00×** TRL's tokens/s"))
    assert rt.main(["--check"]) == 1


def test_bench_update_quick(tmp_path):
    """The update benchmark's CPU mode: every setting of the grid runs, packed and padded alike."""
    out = tmp_path / "update.json"
    subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_update.py"), "--quick", "--out", str(out)],
                   check=True, capture_output=True, timeout=300, env=_single_process_env())
    result = json.loads(out.read_text())
    assert len(result["grid"]) == 8 and not any(g.get("oom") for g in result["grid"])
    assert {(g["layout"], g["ckpt"]) for g in result["grid"]} == {(l, c) for l in ("padded", "packed") for c in (True, False)}
    assert all(g["update_s"] > 0 and g["model_tflops"] > 0 for g in result["grid"])
    assert result["settings"]["tokens"] < result["settings"]["padded_tokens"]
    assert result["info"]["commit"]


def test_update_profile_sorts_kernels_by_kind():
    """bench_update --profile: kernel names as the profiler lists them on the H200 land in the right kind, and
    one profiled call's time by kind adds up to its kernels' time, products found among them."""
    import torch

    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_update import kernel_kind, profile_once

    assert kernel_kind("sm90_xmma_gemm_bf16bf16_bf16f32_f32_tn_n_tilesize128x128x64") == "products"
    assert kernel_kind("nvjet_hsh_256x128_64x4_1x2_h_bz_coopA_NTN") == "products"
    assert kernel_kind("_logits_stats_kernel") == "loss" and kernel_kind("_row_dlogits_kernel") == "loss"
    assert kernel_kind("void pytorch_flash::flash_fwd_kernel<Flash_fwd_kernel_traits<128>>") == "attention"
    assert kernel_kind("triton_poi_fused_add_mul_silu_0") == "fused elementwise"
    assert kernel_kind("void multi_tensor_apply_kernel<TensorListMetadata<4>, FusedAdamMathFunctor>") == "optimizer"
    assert kernel_kind("Memcpy DtoD (Device -> Device)") == "copies"
    assert kernel_kind("void at::native::vectorized_elementwise_kernel<4, multiplicative>") == "other"
    a = torch.randn(256, 256)
    p = profile_once(lambda: (a @ a).exp().sum(), cuda=False)
    assert p["wall_s"] > 0 and p["by_kind_s"]["products"] > 0
    assert abs(sum(p["by_kind_s"].values()) - p["kernels_s"]) < 1e-9
    assert p["top"] and all(k["kind"] == kernel_kind(k["name"]) for k in p["top"])
    assert set(p["top_of_kind"]) == set(p["by_kind_s"])  # each kind's largest kernels, at most 5, largest first
    for kind, rows in p["top_of_kind"].items():
        assert 0 < len(rows) <= 5 and all(kernel_kind(r["name"]) == kind for r in rows)
        assert [r["s"] for r in rows] == sorted((r["s"] for r in rows), reverse=True)


@pytest.mark.slow
def test_bench_vs_trl_sweep_runs_both_sides(tmp_path):
    """The comparison with TRL on the CPU (tiny shape, HF generate, the realistic workload's stopping
    policy): both sides run the same reward through a sweep, and the result has the grid, each side's
    best and the ratios — so the benchmark cannot rot unnoticed again."""
    out = tmp_path / "vs_trl.json"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_vs_trl.py"), "--sweep", "--shape", "tiny",
                          "--engine", "hf", "--steps", "1", "--warmup", "0", "--prompts", "2", "--grid", "5", "--ckpts",
                          "on", "--trl-speeds", "none", "--max-new-tokens", "6", "--workload", "realistic", "--work", str(tmp_path / "work"),
                          "--out", str(out)], capture_output=True, text=True, timeout=600,
                         env=_single_process_env())
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    result = json.loads(out.read_text())
    for side in ("ours", "trl"):
        (row,) = result["grid"][side]
        assert "error" not in row, row
        assert row["tokens_per_second"] > 0 and row["update_s"] > 0 and 0 < row["response_tokens_mean"] <= 6
        assert result["best"][side] == row and result["info"][side]["commit"]
    assert result["ratios"]["end_to_end_tokens_per_second"] > 0
    assert result["settings"]["workload"] == "realistic"
    assert result["settings"]["lr"] == 1e-12  # the hand-made stopping policy must stay put (probe_stop_drift.py)


def test_bench_vs_trl_combines_trl_speed_options_into_the_grid(tmp_path):
    """TRL's speed options are settings of their own in the grid (one file each), and the best may be one."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_vs_trl import _setting, combine_dir

    def write(side, mb, ckpt, speed, tps, mode="sleep"):
        res = {"step_s": 1.0, "generation_s": 0.5, "update_s": 0.5, "tokens_per_second": tps, "peak_mem_gib": 10.0}
        (tmp_path / f"{_setting(side, mb, ckpt, speed, mode)}.json").write_text(json.dumps(
            {side: res, "settings": {"micro_batch": mb, "ckpt": ckpt, "trl_speed": speed, "vllm_mode": mode, "shape": "tiny"}}))

    write("ours", 40, "off", "none", 300.0)
    write("ours", 40, "off", "none", 350.0, mode="awake")
    write("trl", 40, "off", "none", 100.0)
    write("trl", 40, "off", "liger", 150.0)
    assert _setting("trl", 40, "off", "liger") == "trl_mb40_ckptoff_liger" and _setting("ours", 8, "on") == "ours_mb8_ckpton"
    assert _setting("trl", 40, "off", "liger", "awake") == "trl_mb40_ckptoff_liger_awake"
    result = combine_dir(tmp_path)
    assert [r["speed"] for r in result["grid"]["trl"]] == ["liger", "none"]
    assert result["best"]["trl"]["speed"] == "liger" and result["best"]["ours"]["vllm_mode"] == "awake"
    assert result["ratios"]["end_to_end_tokens_per_second"] == 350.0 / 150.0


def test_bench_vs_trl_labels_our_rollout_modes_and_a_failed_one(tmp_path):
    """Our rollout modes are settings of the grid: each ran mode gets its ratio to sync, and a mode that failed
    keeps its own label (a failed setting's JSON holds only what the sweep gave it)."""
    sys.path.insert(0, str(ROOT))
    from benchmarks.bench_vs_trl import _failed_settings, _setting, combine_dir

    def write(mode, tps=None):
        speed = "none" if mode == "sync" else mode
        name = _setting("ours", 80, "off", speed, "awake")
        res = {"error": "exit 1"} if tps is None else {"step_s": 1.0, "generation_s": 0.5, "update_s": 0.5,
                                                      "tokens_per_second": tps, "peak_mem_gib": 10.0}
        settings = _failed_settings("ours", 80, "off", speed, "awake")
        (tmp_path / f"{name}.json").write_text(json.dumps({"ours": res, "settings": settings}))

    write("sync", 200.0)
    write("one_step_off", 180.0)
    write("one_step_off_process", 250.0)
    write("sync_process")  # failed
    result = combine_dir(tmp_path)
    assert result["one_step_off_over_sync"] == 0.9 and result["one_step_off_process_over_sync"] == 1.25
    failed = [r for r in result["grid"]["ours"] if "error" in r]
    assert [r["speed"] for r in failed] == ["sync_process"] and "sync_process_over_sync" not in result


def test_bench_vs_trl_only_names_settings_of_the_grid(tmp_path):
    """--only runs the named settings alone, and a name outside the grid is refused before any run."""
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "bench_vs_trl.py"), "--sweep", "--grid", "40",
                          "--ckpts", "off", "--vllm-modes", "sleep,awake", "--only", "ours_mb40_ckptoff,trl_mb80_ckptoff",
                          "--sweep-dir", str(tmp_path / "s"), "--out", str(tmp_path / "o.json")],
                         capture_output=True, text=True, timeout=120, env=_single_process_env())
    assert res.returncode != 0 and "trl_mb80_ckptoff not in the grid" in res.stderr, res.stderr[-2000:]
    assert not list((tmp_path / "s").glob("*.json"))


def test_make_stop_gives_random_weights_varied_stopping_lengths():
    """A random Qwen3 never samples EOS; after make_stop its responses end with EOS after about the
    asked-for number of tokens, at varied lengths."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    sys.path.insert(0, str(ROOT))
    from benchmarks.common import QWEN3_SHAPES, make_stop, qwen3_tokenizer
    from relate_fast.data import sample_ads
    from relate_fast.models import prompt_ids

    tok = qwen3_tokenizer()
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(Qwen3Config(vocab_size=151_936, eos_token_id=eos, pad_token_id=tok.pad_token_id,
                                         **QWEN3_SHAPES["tiny"])).eval()
    assert make_stop(model, tok, 10.0) > 0
    lengths = []
    for r in sample_ads("train", langs=["en"])[:4]:
        p = torch.tensor([prompt_ids(tok, r.prompt)])
        out = model.generate(p, do_sample=True, top_k=0, max_new_tokens=60, num_return_sequences=8, eos_token_id=eos,
                             pad_token_id=tok.pad_token_id)[:, p.shape[1]:].tolist()
        lengths += [s.index(eos) + 1 if eos in s else 61 for s in out]
    assert sum(n <= 60 for n in lengths) >= 28  # almost all stop
    assert 4 <= sum(lengths) / len(lengths) <= 25 and len(set(lengths)) >= 8  # about 10 on average, varied
