"""bench_vs_verl.py's CPU-checkable parts: verl's command per setting, the parquet and reward verl reads,
and the grid against ours. verl itself runs only on the GPU machine (scripts/gpu_issue26.sh); its Hydra
overrides were checked there and, once, against verl 0.9.1's config by hydra's compose (not in CI: verl
and Hydra are not installed here)."""
import argparse
import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_vs_verl as bv  # noqa: E402


def _args(**kw):
    a = dict(shape="tiny", workload="fixed", steps=6, warmup=2, prompts=16, max_new_tokens=128, lr=1e-6, micro_batch=40,
             ckpt="off", verl_speed="none", remove_padding="off", vllm_mode="sleep", vllm_memory=0.3, awake_memory=0.1,
             reward_workers=2, transformers_dir=None, hide="trl", verl_loss="vanilla", dynamic_bsz=True, extra=[], work=None,
             fused_backend="triton", attention="auto", attention_dir=None)
    a.update(kw)
    return argparse.Namespace(**a)


def _kv(overrides):
    return dict(o.lstrip("+").split("=", 1) for o in overrides)


def test_verl_overrides_follow_the_setting(tmp_path):
    kv = _kv(bv.verl_overrides(_args(micro_batch=40, ckpt="on", verl_speed="bypass_liger"), tmp_path / "p", tmp_path / "d.parquet",
                               tmp_path / "r", width=300, prompt_len=172))
    assert kv["actor_rollout_ref.actor.ppo_max_token_len_per_gpu"] == "12000"  # 40 rows of the widest row
    assert kv["actor_rollout_ref.model.enable_gradient_checkpointing"] == "True"
    assert kv["algorithm.rollout_correction.bypass_mode"] == "True"
    assert kv["actor_rollout_ref.model.use_liger"] == "True"
    assert kv["actor_rollout_ref.rollout.free_cache_engine"] == "True"
    assert kv["actor_rollout_ref.rollout.gpu_memory_utilization"] == "0.3"
    assert kv["actor_rollout_ref.model.override_config.attn_implementation"] == "sdpa"
    assert kv["data.max_prompt_length"] == "172" and kv["actor_rollout_ref.rollout.n"] == "5"
    kv = _kv(bv.verl_overrides(_args(vllm_mode="awake", dynamic_bsz=False, remove_padding="on"), tmp_path, tmp_path, tmp_path,
                               width=300, prompt_len=172))
    assert kv["actor_rollout_ref.rollout.free_cache_engine"] == "False"
    assert kv["actor_rollout_ref.rollout.gpu_memory_utilization"] == "0.1"
    assert kv["actor_rollout_ref.actor.ppo_micro_batch_size_per_gpu"] == "40"
    assert kv["actor_rollout_ref.model.override_config.attn_implementation"] == "flex_attention"
    assert kv["algorithm.rollout_correction.bypass_mode"] == "False"
    assert "actor_rollout_ref.model.use_fused_kernels" not in kv
    kv = _kv(bv.verl_overrides(_args(verl_speed="bypass_fused", remove_padding="on"), tmp_path, tmp_path, tmp_path,
                               width=300, prompt_len=172))
    assert kv["actor_rollout_ref.model.use_fused_kernels"] == "True"
    assert kv["actor_rollout_ref.model.fused_kernel_options.impl_backend"] == "triton"
    assert kv["actor_rollout_ref.model.use_remove_padding"] == "True"
    assert bv.setting_name(_args(micro_batch=80, verl_speed="bypass_fused", remove_padding="on")) == \
        "verl_mb80_ckptoff_bypass_fused_rmpad"


# flex_attention on the CPU compiles for ~25 s on the 2-core CI machine: its case runs with the GPU tests
# (it passed on the CPU too, once, 2026-12-03); SDPA goes through the same packed-sequence mask on the CPU
@pytest.mark.parametrize("attention", [pytest.param("flex_attention", marks=pytest.mark.gpu), "sdpa"])
def test_verls_packed_row_attends_within_each_sequence(attention):
    """What verl's remove-padding path feeds the model here: one row of several sequences, per-sequence position
    ids, no attention mask, no cache. transformers finds the sequences from the position ids and masks each to
    itself, so the packed logits equal each sequence's own (the reason flex_attention may stand in for flash-attn's
    varlen kernels on the GPU machine; it fails if the sequences attended across each other)."""
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    cfg = Qwen3Config(vocab_size=128, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, attn_implementation=attention)
    torch.manual_seed(0)
    dev = "cuda" if attention == "flex_attention" else "cpu"
    model = Qwen3ForCausalLM(cfg).to(dev).eval()
    seqs = [torch.randint(0, 128, (1, n), device=dev) for n in (7, 5, 9)]
    with torch.no_grad():
        alone = torch.cat([model(s, use_cache=False).logits for s in seqs], 1)
        pos = torch.cat([torch.arange(s.shape[1], device=dev) for s in seqs])[None]
        packed = model(input_ids=torch.cat(seqs, 1), position_ids=pos, attention_mask=None, use_cache=False).logits
    assert (packed - alone).abs().max() < 1e-5


def test_the_parquet_and_verl_reward_score_as_the_other_sides(tmp_path):
    pytest.importorskip("pyarrow")
    import pandas as pd

    from benchmarks.bench_vs_trl import SameReward
    from benchmarks.common import qwen3_folder
    from benchmarks.verl_reward import compute_score

    folder = qwen3_folder(tmp_path / "policy", "tiny", weights=False)
    frame = pd.read_parquet(bv.write_dataset(folder, tmp_path / "prompts.parquet"))
    assert len(frame) == len(bv.prompt_rows()) and list(frame["prompt"][3][0].keys()) == ["role", "content"]
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    same = SameReward(tok)
    for i, text in [(0, "Cotton tees in many colours, free shipping."), (3, "x"), (7, "Buy now! " * 30)]:
        extra = dict(frame["extra_info"][i])
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert compute_score("relate_fast_ads", text, "", extra) == pytest.approx(same(None, [text], [ids], [i])[0])


def test_combine_puts_ours_against_verls_best(tmp_path):
    def verl(name, tps, step, gen):
        a = _args(micro_batch=int(name.split("mb")[1].split("_")[0]), ckpt="off")
        (tmp_path / f"{name}.json").write_text(json.dumps({"verl": {"tokens_per_second": tps, "step_s": step, "generation_s": gen,
                                                                    "update_s": step - gen, "peak_mem_gib": 1.0,
                                                                    "response_tokens_mean": 128.0},
                                                           "settings": bv._settings(a)}))
    verl("verl_mb40_ckptoff", 8000, 2.0, 1.0)
    verl("verl_mb80_ckptoff", 10000, 1.6, 1.0)
    (tmp_path / "verl_mb20_ckptoff.json").write_text(json.dumps({"verl": {"error": "exit 1"},
                                                                 "settings": bv._settings(_args(micro_batch=20))}))
    ours = tmp_path / "ours.json"
    ours.write_text(json.dumps({"ours": {"tokens_per_second": 20000, "step_s": 0.8, "generation_s": 0.5, "update_s": 0.3},
                                "settings": {"micro_batch": 80, "ckpt": "off", "vllm_mode": "awake"}}))
    res = bv.combine_dir(tmp_path, ours)
    assert res["best"]["verl"]["setting"] == "verl_mb80_ckptoff"
    assert res["ratios"]["end_to_end_tokens_per_second"] == pytest.approx(2.0)
    assert res["ratios"]["update_speedup"] == pytest.approx(0.6 / 0.3)
    assert res["ratios"]["best_update_speedup"] == pytest.approx(0.6 / 0.3)
    assert len(res["grid"]["verl"]) == 3


def test_a_timed_out_verl_run_is_stopped_with_what_it_started(tmp_path):
    import os
    import time

    pidfile = tmp_path / "child.pid"
    script = (f"import subprocess, time; p = subprocess.Popen(['sleep', '60']); open({str(pidfile)!r}, 'w').write(str(p.pid)); "
              "print('started', flush=True); time.sleep(60)")
    t = time.time()
    rc, log = bv._run_with_timeout([sys.executable, "-c", script], tmp_path, dict(os.environ), timeout=3)
    assert rc == "timeout" and "started" in log and time.time() - t < 30
    child = int(pidfile.read_text())
    time.sleep(0.2)
    status = Path(f"/proc/{child}/status")  # the grandchild went with the group: gone, or a zombie left to init
    assert not status.exists() or "\nState:\tZ" in status.read_text()


def test_a_verl_run_that_logged_its_steps_but_does_not_exit_is_stopped_and_counted(tmp_path):
    """verl 0.9.1 on the H200 finished its steps and then did not exit; the run is counted once its metrics file has
    the steps, and it is stopped a grace period later, long before the timeout."""
    import os
    import time

    metrics = tmp_path / "metrics.jsonl"
    script = (f"import json, time; f = open({str(metrics)!r}, 'w')\n"
              "for i in range(2): f.write(json.dumps({'step': i + 1, 'data': {'timing_s/step': 1.0}}) + '\\n'); f.flush()\n"
              "f.write('{\"step\": 3, \"da'); f.flush(); print('steps done', flush=True); time.sleep(60)")
    t = time.time()
    rc, log = bv._run_with_timeout([sys.executable, "-c", script], tmp_path, dict(os.environ), timeout=50,
                                   metrics_path=metrics, steps=2, grace=1.0)
    assert rc == "stopped_after_steps" and "steps done" in log and time.time() - t < 30
    assert len(bv._metric_rows(metrics)) == 2  # the half-written third line is not read


def test_a_loss_check_on_all_zero_advantages_says_it_compared_nothing():
    zero = {"critic/advantages/max": 0.0, "critic/advantages/min": 0.0, "actor/relate_minus_vanilla": 0.0,
            "actor/vanilla_pg_loss": 0.0, "actor/pg_loss": 0.0}
    assert bv.loss_check([zero, zero])["vacuous"] is True
    assert bv.loss_check([zero, dict(zero, **{"critic/advantages/max": 1.2, "critic/advantages/min": -0.8})])["vacuous"] is False


def test_ours_inside_verl_is_set_against_verls_own_loss_at_the_same_settings(tmp_path):
    def write(loss, update, peak, actor):
        a = _args(micro_batch=80, verl_loss=loss)
        (tmp_path / f"{bv.setting_name(a)}.json").write_text(json.dumps({
            "verl": {"tokens_per_second": 1.0, "step_s": 1.0 + update, "generation_s": 1.0, "update_s": update,
                     "stages_s": {"update_actor": actor}, "peak_mem_gib": peak, "response_tokens_mean": 128.0},
            "settings": bv._settings(a)}))
    write("vanilla", 0.5, 40.0, 0.4)
    write("relate_checked", 0.4, 30.0, 0.3)
    res = bv.combine_dir(tmp_path)
    assert res["best"]["verl"]["loss"] == "vanilla"  # verl at its best is verl with its own loss
    (pair,) = res["ours_inside_verl"]
    assert pair["setting"] == "verl_mb80_ckptoff_relate_checked"
    assert pair["update_s_ratio"] == pytest.approx(0.8) and pair["peak_mem_ratio"] == pytest.approx(0.75)
    assert pair["update_actor_ratio"] == pytest.approx(0.75) and pair["against"] == "verl_mb80_ckptoff"


def test_verls_fused_kernels_are_swept_packed_only_and_refused_padded(tmp_path, monkeypatch):
    ran = []
    monkeypatch.setattr(bv, "run_setting", lambda out_dir, name, cmd, **kw: ran.append(name))
    monkeypatch.setattr(bv, "combine_dir", lambda out_dir, ours=None: {})
    a = _args(grid="80", ckpts="off", verl_speeds="bypass,bypass_fused", vllm_modes="sleep", verl_losses="vanilla",
              remove_paddings="off,on", only=None, sweep_dir=str(tmp_path), out=str(tmp_path / "o.json"), ours=None,
              rerun=False, run_timeout=100)
    bv.sweep(a)
    assert ran == ["verl_mb80_ckptoff_bypass", "verl_mb80_ckptoff_bypass_rmpad", "verl_mb80_ckptoff_bypass_fused_rmpad"]
    with pytest.raises(SystemExit, match="needs --remove-padding on"):
        bv.main(["--side", "verl", "--verl-speed", "bypass_fused", "--remove-padding", "off", "--work", str(tmp_path)])


def _env_verl_starts_with(monkeypatch, tmp_path, args) -> dict:
    """run_verl up to verl's start, with no model, data or verl: the environment verl's process would get."""
    seen = {}

    def fake_run(cmd, run_dir, env, *a, **kw):
        seen.update(env)
        raise SystemExit("stop before verl")
    monkeypatch.setattr(bv, "_run_with_timeout", fake_run)
    monkeypatch.setattr(bv, "shared_policy", lambda *a: tmp_path)
    monkeypatch.setattr(bv, "write_dataset", lambda *a: tmp_path / "d.parquet")
    monkeypatch.setattr(bv, "longest_prompt_tokens", lambda *a: 100)
    with pytest.raises(SystemExit, match="stop before verl"):
        bv.run_verl(args, tmp_path)
    return seen


def test_ours_with_our_logprob_kernels_runs_only_over_verls_fused_forward(tmp_path, monkeypatch):
    """--verl-loss relate_kernels: ours checked against verl's vanilla (the loss mode "relate_checked", its module
    imported) and RELATE_FAST_VERL_LOGPROBS in verl's environment; swept only with a _fused speed (it replaces that
    kernel), refused before verl starts otherwise."""
    kv = _kv(bv.verl_overrides(_args(verl_speed="bypass_fused", remove_padding="on", verl_loss="relate_kernels"),
                               tmp_path, tmp_path, tmp_path, width=300, prompt_len=172))
    assert kv["actor_rollout_ref.actor.policy_loss.loss_mode"] == "relate_checked"
    assert bv.setting_name(_args(micro_batch=80, verl_speed="bypass_fused", remove_padding="on",
                                 verl_loss="relate_kernels")) == "verl_mb80_ckptoff_bypass_fused_relate_kernels_rmpad"
    seen = _env_verl_starts_with(monkeypatch, tmp_path, _args(verl_speed="bypass_fused", remove_padding="on",
                                                              verl_loss="relate_kernels", verl_timeout=10))
    assert seen["RELATE_FAST_VERL_LOGPROBS"] == "1"
    assert seen["VERL_USE_EXTERNAL_MODULES"].split(",") == ["relate_fast.integrations.verl_plugin", "benchmarks.verl_check"]
    ran = []
    monkeypatch.setattr(bv, "run_setting", lambda out_dir, name, cmd, **kw: ran.append(name))
    monkeypatch.setattr(bv, "combine_dir", lambda out_dir, ours=None: {})
    bv.sweep(_args(grid="80", ckpts="off", verl_speeds="bypass,bypass_fused", vllm_modes="sleep", verl_losses="relate_kernels",
                   remove_paddings="on", only=None, sweep_dir=str(tmp_path), out=str(tmp_path / "o.json"), ours=None,
                   rerun=False, run_timeout=100))
    assert ran == ["verl_mb80_ckptoff_bypass_fused_relate_kernels_rmpad"]
    with pytest.raises(SystemExit, match="needs a --verl-speed with _fused"):
        bv.main(["--side", "verl", "--verl-speed", "bypass", "--remove-padding", "on", "--verl-loss", "relate_kernels",
                 "--work", str(tmp_path)])


def test_the_tables_of_the_ab_benches_render_what_the_benches_write():
    """benchmarks/results_tables.py's tables for verl_engine_ab.py and openrlhf_actor_ab.py, on results shaped as
    the benches write them (run_ab's summary, sweep's grid and best, agreement)."""
    import benchmarks.results_tables as rt

    s = {"update_s_median": 0.5, "peak_gib_max": 40.0, "loss_first": 0.1, "grad_norm_first": 1.5,
         "grad_rel_diff_to_first_mode": 0.0}
    verl = rt.verl_engine_ab_table({"summary": {"vanilla": s, "relate": dict(s, update_s_median=0.49)},
                                    "relate_over_vanilla": {"update_s": 0.98, "peak": 1.0}, "grad_rel_noise": 1e-4,
                                    "tokens": 17665, "budget_grid": [{"micro_batch": 16, "token_budget": 3616,
                                                                      "update_s": 0.7, "peak_gib": 20.0}],
                                    "settings": {"micro_batch": 80, "token_budget": 18080, "remove_padding": "on",
                                                 "fused": "on", "attn": "flex_attention", "strategy": "fsdp"}})
    assert "| relate | 0.490 s | 40.0 |" in verl and "0.980×" in verl
    assert "checkpointing on (verl's default" in verl and "| 16 rows (3,616 tokens) | 0.700 s | 20.0 |" in verl
    by_chunk = {"1024": {"update_s": 0.9, "peak": 0.99}, "0": {"update_s": 0.88, "peak": 1.01}}  # --logprobs-chunk 1024,0
    verl = rt.verl_engine_ab_table({"summary": {"vanilla": s}, "relate_over_vanilla": {"update_s": 1.0, "peak": 1.0},
                                    "relate_logprobs_over_vanilla": dict(by_chunk["1024"], chunk=1024),
                                    "relate_logprobs_over_vanilla_by_chunk": by_chunk, "grad_rel_noise": 0.0, "tokens": 10,
                                    "settings": {"micro_batch": 80, "token_budget": 18080, "remove_padding": "on",
                                                 "fused": "on", "attn": "flex_attention", "strategy": "fsdp"}})
    assert "| update time, verl's loss on our log-prob kernel, 1,024 tokens per chunk | 0.900× |" in verl
    assert "| peak memory, the same, the loss's default chunk | 1.010× |" in verl
    grid = {"openrlhf": [{"micro_batch": 8, "seconds": 2.0, "peak_gib": 50.0}, {"micro_batch": 80, "error": "out of memory"}],
            "ours": [{"micro_batch": 80, "seconds": 1.0, "peak_gib": 20.0}]}
    orl = rt.openrlhf_actor_ab_table({"grid": grid, "best": {"openrlhf": grid["openrlhf"][0], "ours": grid["ours"][0]},
                                      "ratios": {"speedup": 2.0, "peak": 0.4},
                                      "agreement": {"micro_batch": 8, "openrlhf_loss": 0.1, "ours_loss": 0.1, "grad_rel_diff": 1e-3,
                                                    "fp32_loss": 0.09, "openrlhf_loss_rel_err_to_fp32": 0.11,
                                                    "ours_loss_rel_err_to_fp32": 0.1, "openrlhf_grad_dist_to_fp32": 0.05,
                                                    "ours_grad_dist_to_fp32": 0.04}})
    assert "| OpenRLHF 0.11.2 (Actor + PolicyLoss) | 80 | out of memory |  |" in orl and "**2.00×**" in orl
    assert "| gradient distance to it, OpenRLHF / ours | 5.00e-02 / 4.00e-02 |" in orl
    row = {"N": 8192, **{f"{k}_ms": ms for k, ms in (("ours_epilogue", 20.0), ("ours", 25.0), ("verl_triton", 50.0),
                                                      ("verl_torch", 80.0), ("naive", 30.0), ("ours_epilogue_chunk1024", 22.0),
                                                      ("ours_epilogue_chunk512", 24.0))}}
    row.update({k.replace("_ms", "_vs_floor"): v / 20.0 for k, v in list(row.items()) if k.endswith("_ms")})
    row.update({k.replace("_ms", "_extra_GiB"): 0.5 for k in list(row) if k.endswith("_ms")})
    loss = rt.loss_vs_verl_table({"rows": [row]}).splitlines()  # the chunk sizes in order, after ours' default
    assert [ln.split(" | ")[0] for ln in loss[4:6]] == ["| ours, epilogue path, 512 tokens per chunk",
                                                        "| ours, epilogue path, 1,024 tokens per chunk"]
    assert "| 22.0 ms (1.10×) | 0.50 |" in loss[5] and "**2.50×**" in loss[-1]


def test_a_settings_figures_are_medians_after_the_warm_up_and_every_step_is_kept():
    """bench_vs_verl.summarise on verl's metrics rows of the H200 run of 2026-12-03 (43dfae5, its console steps file):
    the medians over steps 2-4 (one warm-up step), and every step's stages kept, so an unsettled run shows."""
    import re

    text = (ROOT / "benchmarks" / "results" / "vs_verl_h200_1.7b_fixed_43dfae5"
            / "verl_mb80_ckptoff_bypass_fused_rmpad_console_steps.txt").read_text()
    rows = [{k: float(v) for k, v in re.findall(r"([a-z_]+/[a-z_/]+):([0-9.e-]+)(?= - |$)", line)} for line in text.splitlines()]
    res = bv.summarise(rows, _args(warmup=1, micro_batch=80), width=235, exit_status=0)
    assert res["step_s"] == pytest.approx(4.613944984)  # the median of 24.98, 3.80 and 4.61 s
    assert res["generation_s"] == pytest.approx(2.0621773909999774)
    assert [round(s["update_actor"], 2) for s in res["per_step_s"]] == [46.22, 22.27, 1.21, 2.01]
    assert res["peak_mem_gib"] == pytest.approx(73.88271856307983) and res["micro_batch_tokens"] == 80 * 235


def test_a_verl_run_stopped_at_the_limit_counts_its_steps_past_the_warm_up(tmp_path, monkeypatch):
    """run_verl when verl is stopped at --run-timeout: the steps it logged after the warm-up make a result that
    says it is incomplete; stopped within the warm-up it is an error naming the steps it did."""
    row = {"timing_s/step": 3.0, "timing_s/gen": 1.0, "timing_s/update_actor": 1.5, "perf/total_num_tokens": 9000.0,
           "response_length/mean": 40.0}
    logged = []

    def fake_run(cmd, cwd, env, timeout, metrics_path, steps):
        metrics_path.write_text("".join(json.dumps({"step": i + 1, "data": row}) + "\n" for i in range(len(logged))))
        return "timeout", "the end of verl's log"

    monkeypatch.setattr(bv, "shared_policy", lambda work, shape, workload: tmp_path)
    monkeypatch.setattr(bv, "write_dataset", lambda folder, path: path)
    monkeypatch.setattr(bv, "longest_prompt_tokens", lambda folder: 100)
    monkeypatch.setattr(bv, "_run_with_timeout", fake_run)
    args = _args(steps=6, warmup=2, verl_timeout=10, hide="")
    logged[:] = [1, 2, 3]
    res = bv.run_verl(args, tmp_path)
    assert res["complete"] is False and res["steps_done"] == 3 and res["tokens_per_second"] == pytest.approx(3000.0)
    logged[:] = [1, 2]
    with pytest.raises(SystemExit, match="timed out after 2 of 6 steps"):
        bv.run_verl(args, tmp_path)


def test_the_verl_table_marks_a_setting_stopped_at_the_limit():
    import benchmarks.results_tables as rt

    d = json.loads((ROOT / "benchmarks" / "results" / "vs_verl_h200_1.7b_fixed_43dfae5.json").read_text())
    assert "time limit reached" not in rt.vs_verl_table(d)
    d["grid"]["verl"][0].update(complete=False, steps_done=3)
    assert "vLLM sleep (the run's time limit reached after 3 steps) | 3,844 |" in rt.vs_verl_table(d)


def test_the_verl_table_says_when_the_loss_check_inside_verl_compared_nothing():
    import benchmarks.results_tables as rt

    d = json.loads((ROOT / "benchmarks" / "results" / "vs_verl_h200_1.7b_fixed_116ad6a.json").read_text())
    assert "| the actor's update | 0.914× |" in rt.vs_verl_table(d)
    assert "vacuous: every advantage 0" in rt.vs_verl_table(d)
    check = d["ours_inside_verl"][0]["loss_check"]
    check.update({"vacuous": False, "actor/relate_minus_vanilla": [1e-6, -3e-6]})
    assert "| per-step loss check, ours − verl's on the same log-probs | at most 3.00e-06 |" in rt.vs_verl_table(d)
    assert "the probe" not in rt.vs_verl_table(d)  # runs before verl_check had one
    check.update({"actor/probe_relate_minus_vanilla": [2e-7, -1e-6], "actor/probe_vanilla_pg_loss": [0.5, 0.25],
                  "actor/probe_grad_rel_diff": [0.0, 1e-5]})
    assert "gradient distance | at most 4.00e-06, 1.00e-05 |" in rt.vs_verl_table(d)


def test_an_asked_attention_reaches_verls_model_its_name_and_its_sweep(tmp_path, monkeypatch):
    """--attention flash_attention_4 (with --attention-dir, flash-attn 4's site): verl's attn_implementation, the
    setting's name and settings, each swept setting's command, and verl's processes (the site first on their path,
    benchmarks/fa4_compat applied in each: verl's own loss, so no other module) except its vLLM servers, which keep
    the path without the site (benchmarks/verl_rollout_env); auto stays flex_attention packed, sdpa padded."""
    seen = _env_verl_starts_with(monkeypatch, tmp_path, _args(remove_padding="on", verl_speed="bypass_fused",
                                                              attention="flash_attention_4", verl_timeout=10,
                                                              attention_dir="/tmp/site_fa4/dsl:/tmp/site_fa4"))
    assert seen["VERL_USE_EXTERNAL_MODULES"] == "benchmarks.fa4_compat_apply,benchmarks.verl_rollout_env"
    assert seen["PYTHONPATH"].startswith("/tmp/site_fa4/dsl:/tmp/site_fa4:" + str(bv.ROOT))
    assert seen["PYTHONPATH"] == "/tmp/site_fa4/dsl:/tmp/site_fa4:" + seen["RELATE_FAST_ROLLOUT_PYTHONPATH"]
    assert "site_fa4" not in seen["RELATE_FAST_ROLLOUT_PYTHONPATH"]
    a = _args(remove_padding="on", verl_speed="bypass_fused", attention="flash_attention_4", attention_dir="/tmp/site_fa4")
    kv = _kv(bv.verl_overrides(a, Path("/m"), Path("/d.parquet"), tmp_path / "run", 230, 102))
    assert kv["actor_rollout_ref.model.override_config.attn_implementation"] == "flash_attention_4"
    assert bv.setting_name(a) == "verl_mb40_ckptoff_bypass_fused_rmpad_fa4"
    assert bv._settings(a)["attention"] == "flash_attention_4"
    cmd = bv._one_setting_args(a)
    assert cmd[cmd.index("--attention") + 1] == "flash_attention_4" and cmd[cmd.index("--attention-dir") + 1] == "/tmp/site_fa4"
    auto = _args(remove_padding="on")
    assert _kv(bv.verl_overrides(auto, Path("/m"), Path("/d"), tmp_path / "r", 230, 102))[
        "actor_rollout_ref.model.override_config.attn_implementation"] == "flex_attention"
    assert bv.setting_name(auto) == "verl_mb40_ckptoff_rmpad" and "--attention" not in bv._one_setting_args(auto)


def test_ours_inside_verl_is_never_set_against_verl_on_another_attention(tmp_path):
    def write(loss, attention):
        a = _args(micro_batch=80, verl_loss=loss, remove_padding="on", attention=attention)
        (tmp_path / f"{bv.setting_name(a)}.json").write_text(json.dumps({
            "verl": {"tokens_per_second": 1.0, "step_s": 1.5, "generation_s": 1.0, "update_s": 0.5, "peak_mem_gib": 40.0,
                     "response_tokens_mean": 128.0, "attention": bv.attention_of("on", attention)},
            "settings": bv._settings(a)}))
    write("vanilla", "auto")
    write("relate_checked", "flash_attention_4")
    assert "ours_inside_verl" not in bv.combine_dir(tmp_path)
    write("vanilla", "flash_attention_4")
    (pair,) = bv.combine_dir(tmp_path)["ours_inside_verl"]
    assert pair["against"] == "verl_mb80_ckptoff_rmpad_fa4"
