"""Evaluation: metrics on hand-made texts, bootstrap intervals that cover the truth, GSB plumbing,
and the CLI's report equal to a recomputation from its saved generations."""
import json

import numpy as np
import pytest

from relate_fast.data.ads import AdPrompt, format_ad
from relate_fast.evaluate import (bootstrap_diff_ci, bootstrap_lift_ci, bootstrap_mean_ci, gsb_by_judge, gsb_by_reward,
                                  main, report_from_generations, text_metrics)
from relate_fast.rewards import RewardConfig, RewardFunction
from relate_fast.rewards.embedding import HashedNgramEncoder

EN = AdPrompt(id="e", lang="en", industry="education", query="ielts course in london", bidword="ielts course",
              selling_points=("small classes", "free trial lesson"), facts=("course fee $290", "8 weeks of lessons"))


class _CTCVR:
    """Stands in for the learned model in the metric test (the real one is tested in test_sim_ctcvr.py)."""

    def predict(self, rows, texts):
        return {"ctcvr": np.full(len(texts), 0.05)}


def test_text_metrics_on_hand_made_texts(small_bpe):
    good = format_ad("IELTS prep course in London", "Small classes and a free trial lesson. Course fee $290 for 8 "
                     "weeks of lessons. Book now.", "en")
    hype = format_ad("The best IELTS course", "Guaranteed pass, course fee $999. Book now with small classes "
                     "and a free trial lesson today.", "en")
    unformatted = "IELTS course in London, small classes"
    texts = [good, hype, unformatted]
    cfg = RewardConfig(preset="model4", ngram_min_count=2)
    rewards = RewardFunction.from_config(cfg, tokenizer=small_bpe, encoder=HashedNgramEncoder(), ctcvr=_CTCVR())
    ids = [small_bpe.encode(t) for t in texts]
    m = text_metrics([EN] * 3, texts, ids, cfg, rewards, group_size=1)
    assert m["compliance"].tolist() == [1.0, 0.0, 1.0]  # "the best", "guaranteed pass"
    assert m["format_pass"].tolist() == [1.0, 1.0, 0.0]
    assert m["correctness"].tolist() == [1.0, -1.0, 1.0]  # $999 is not in the facts
    assert m["ctcvr_model"].tolist() == [0.05] * 3
    assert m["ctcvr_sim"][0] > m["ctcvr_sim"][2]  # the simulator prefers the well-formed factual ad
    # diversity (eq. 4): "small classes and a free trial lesson" recurs in the first two texts only
    assert m["diversity"][0] < 0 and m["diversity"][1] < 0


def test_bootstrap_intervals_cover_the_truth():
    """Synthetic prompts with correlated samples: the 95% intervals cover the true mean, difference and
    lift in about 95% of 200 repetitions (a wrong resampling unit under-covers badly)."""
    rng = np.random.default_rng(0)
    cover = {"mean": 0, "diff": 0, "lift": 0}
    reps, P, S = 200, 40, 3
    for r in range(reps):
        effect = rng.normal(0, 1, P)  # prompt effect shared by its samples and by both models
        base = (1.0 + effect[:, None] + rng.normal(0, 0.5, (P, S))).ravel()
        model = (1.3 + effect[:, None] + rng.normal(0, 0.5, (P, S))).ravel()
        groups = np.repeat(np.arange(P), S)
        m = bootstrap_mean_ci(base, groups, n_boot=400, seed=r)
        d = bootstrap_diff_ci(model, base, groups, groups, n_boot=400, seed=r)
        lift = bootstrap_lift_ci(model + 5, base + 5, groups, groups, n_boot=400, seed=r)
        cover["mean"] += m["lo"] <= 1.0 <= m["hi"]
        cover["diff"] += d["lo"] <= 0.3 <= d["hi"]
        cover["lift"] += lift["lo"] <= 6.3 / 6.0 - 1 <= lift["hi"]
    for k, c in cover.items():
        assert 0.88 <= c / reps <= 0.995, (k, c / reps)


def test_gsb_by_reward_and_by_judge():
    groups = ["a", "a", "b", "b", "c", "c"]
    g = gsb_by_reward([1, 1, 0, 0, 2, 2], [0, 0, 0, 0.01, 3, 3], groups, groups)
    assert (g["good"], g["same"], g["bad"]) == (1, 1, 1) and "no LLM judge" in g["by"]
    rows = {k: EN for k in "abc"}
    model = {k: f"model-{k}" for k in "abc"}
    base = {k: f"base-{k}" for k in "abc"}

    def judge(prompts):  # a scripted judge that always prefers the model's text, wherever it is shown
        return ["A" if p.index("model-") < p.index("base-") else "B" for p in prompts]

    g = gsb_by_judge(judge, rows, model, base, seed=1)
    assert (g["good"], g["same"], g["bad"], g["unparsed"]) == (3, 0, 0, 0) and g["by"] == "LLM judge"


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Two tiny policies (random and perturbed) and a small CTCVR model on the hashed encoder."""
    import torch

    from relate_fast.config import TinyModelConfig
    from relate_fast.data import sample_ads
    from relate_fast.models import build_tiny_model, load_policy
    from relate_fast.rewards.ctcvr import ImpressionTable, train_ctcvr
    from relate_fast.sim import simulate_log

    root = tmp_path_factory.mktemp("evalrun")
    base = build_tiny_model(TinyModelConfig(vocab_size=400, hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                            num_attention_heads=2, num_key_value_heads=1, head_dim=32), root / "cache")
    model, tok = load_policy(base)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    model.save_pretrained(root / "final")
    tok.save_pretrained(root / "final")
    ctcvr = train_ctcvr(ImpressionTable.from_logs(simulate_log(sample_ads("train")[:30], variants=3, impressions=3)),
                        HashedNgramEncoder(64), epochs=1)
    ctcvr.save(root / "ctcvr")
    return root, base


def test_cli_report_equals_recomputation_from_generations(tiny_run, capsys):
    root, base = tiny_run
    out = root / "eval"
    rc = main(["--model", str(root / "final"), "--baseline", str(base), "--split", "test", "--prompts", "5",
               "--samples", "2", "--max-new-tokens", "12", "--ctcvr-model", str(root / "ctcvr"), "--preset", "model4",
               "--out", str(out), "--bootstrap", "300"])
    assert rc == 0
    rep = json.loads((out / "report.json").read_text())
    again = report_from_generations(out, n_boot=300, seed=0)
    for part in ("model", "baseline", "difference", "lift"):
        assert set(again[part]) == set(rep[part])
        for k, v in again[part].items():
            for stat in ("mean", "lo", "hi"):
                assert v[stat] == pytest.approx(rep[part][k][stat], abs=1e-12), (part, k, stat)
    assert {"compliance", "diversity", "ctcvr_model", "ctcvr_sim", "format_pass"} <= set(rep["model"])
    assert sum(rep["gsb"][k] for k in ("good", "same", "bad")) == 5
    assert (out / "report.md").read_text().startswith("# Evaluation") and (out / "metrics.png").is_file()
    assert main(["--model", str(root / "nope")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_cli_takes_the_run_settings_from_its_config_yaml(tiny_run, tmp_path):
    """A run's own config.yaml (beside final/) is the evaluation's settings: its reward preset, its
    response length, its samples per prompt; flags override them. A bad value in it is an error naming
    the file."""
    import shutil

    import yaml

    root, _ = tiny_run
    run = tmp_path / "run"
    shutil.copytree(root / "final", run / "final")
    (run / "config.yaml").write_text(yaml.safe_dump({"rollout": {"engine": "hf", "max_new_tokens": 4},
                                                     "reward": {"preset": "model2"}, "eval": {"samples": 3}}))
    out = tmp_path / "eval"
    assert main(["--model", str(run / "final"), "--prompts", "2", "--ctcvr-model", str(root / "ctcvr"), "--out",
                 str(out), "--bootstrap", "50"]) == 0
    info = json.loads((out / "report.json").read_text())["info"]
    assert (info["preset"], info["samples"], info["engine"]) == ("model2", 3, "hf")
    rows = [json.loads(l) for l in (out / "generations_model.jsonl").read_text().splitlines()]
    assert len(rows) == 6
    assert main(["--model", str(run / "final"), "--prompts", "1", "--samples", "1", "--preset", "model1",
                 "--ctcvr-model", str(root / "ctcvr"), "--out", str(out), "--bootstrap", "50"]) == 0
    info = json.loads((out / "report.json").read_text())["info"]
    assert (info["preset"], info["samples"]) == ("model1", 1)
    (run / "config.yaml").write_text(yaml.safe_dump({"rollout": {"top_p": 2.0}}))
    with pytest.raises(ValueError, match=r"run/config.yaml: rollout.top_p: must be in"):
        main(["--model", str(run / "final"), "--ctcvr-model", str(root / "ctcvr"), "--out", str(out)])
