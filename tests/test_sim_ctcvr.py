"""The click simulator (determinism, the direction of each documented effect) and the ESMM CTCVR
model (the ESMM identity and loss, AUC against brute force, learning from the simulator's logs
clearly better than a text-blind baseline, save/load, the CLI, log errors)."""
import json
import random

import numpy as np
import pytest
import torch

from relate_fast.data import sample_ads
from relate_fast.data.ads import format_ad
from relate_fast.rewards.ctcvr import (CTCVRModel, CTCVRNet, ImpressionTable, auc, esmm_loss, main, read_logs,
                                       train_ctcvr)
from relate_fast.rewards.embedding import HashedNgramEncoder
from relate_fast.sim import ClickSimulator, simulate_log, write_jsonl


@pytest.fixture(scope="module")
def rows():
    return sample_ads("train")


def test_simulator_is_deterministic_under_a_seed(rows):
    a = simulate_log(rows[:20], variants=4, impressions=5, seed=3)
    b = simulate_log(rows[:20], variants=4, impressions=5, seed=3)
    c = simulate_log(rows[:20], variants=4, impressions=5, seed=4)
    assert a == b and a != c
    assert len(a) == 20 * 4 * 5
    assert all(r["conversion"] <= r["click"] for r in a)


def test_simulator_effects(rows):
    sim = ClickSimulator(0)
    row = next(r for r in rows if r.lang == "en")
    base = row.reference
    title, desc = row.reference_title, row.reference_description
    variants = {
        "hype": format_ad(title + " guaranteed results", desc, "en"),
        "wrong": format_ad(title, desc.replace(row.facts[0].split("$")[-1], "12345") if "$" in desc else desc + " $12345",
                           "en"),
        "unformatted": title + " " + desc,
    }
    p = {k: sim.probabilities([row, row], [v, base + " "]) for k, v in variants.items()}
    # each variant against the reference, shown in the same pool of two
    assert p["hype"]["ctr"][0] > p["hype"]["ctr"][1] and p["hype"]["cvr"][0] < p["hype"]["cvr"][1]
    assert p["wrong"]["cvr"][0] < p["wrong"]["cvr"][1]
    assert p["unformatted"]["ctr"][0] < p["unformatted"]["ctr"][1]
    # fatigue: the same text in a pool of copies is clicked less than in a pool of different ads
    others = [r.reference for r in rows[:9]]
    alone = sim.probabilities([row] + rows[:9], [base] + others)["ctr"][0]
    repeated = sim.probabilities([row] * 10, [base] * 10)["ctr"][0]
    assert repeated < alone
    assert sim.probabilities([row], [""])["ctcvr"][0] == 0.0


def test_esmm_identity_and_loss():
    torch.manual_seed(0)
    net = CTCVRNet(16, hidden=32, tower=8)
    q, a, t = (torch.randn(50, 16) for _ in range(3))
    out = net(q, a, t)
    torch.testing.assert_close(out["ctcvr"], out["ctr"] * out["cvr"])
    # aggregated ESMM loss == mean per-impression BCE(click, pCTR) + BCE(click*conv, pCTCVR)
    imp = torch.randint(1, 6, (50,)).float()
    clk = torch.minimum(torch.randint(0, 4, (50,)).float(), imp)
    cnv = torch.minimum(torch.randint(0, 3, (50,)).float(), clk)
    zc, zv = net.logits(q, a, t)
    got = esmm_loss(zc.double(), zv.double(), imp.double(), clk.double(), cnv.double())
    bce = torch.nn.functional.binary_cross_entropy
    terms = []
    for k in range(50):
        n, c, v = int(imp[k]), int(clk[k]), int(cnv[k])
        y_c = torch.tensor([1.0] * c + [0.0] * (n - c), dtype=torch.float64)
        y_v = torch.tensor([1.0] * v + [0.0] * (n - v), dtype=torch.float64)
        pc = torch.sigmoid(zc[k].double()).expand(n)
        pv = (torch.sigmoid(zc[k].double()) * torch.sigmoid(zv[k].double())).expand(n)
        terms.append(bce(pc, y_c, reduction="sum") + bce(pv, y_v, reduction="sum"))
    torch.testing.assert_close(got, torch.stack(terms).sum() / imp.sum().double())


def test_auc_matches_pairwise_brute_force():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 6, 40).astype(float)  # ties on purpose
    tot = rng.integers(1, 5, 40)
    pos = rng.integers(0, 5, 40) % (tot + 1)
    labels = [(s, 1) for s, p in zip(scores, pos) for _ in range(p)] + \
             [(s, 0) for s, p, t in zip(scores, pos, tot) for _ in range(t - p)]
    P = [s for s, y in labels if y]
    N = [s for s, y in labels if not y]
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p in P for n in N])
    assert auc(scores, pos, tot) == pytest.approx(brute)


def _avg_ranks(x):
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    for v in np.unique(x):  # ties get their mean rank
        ranks[x == v] = ranks[x == v].mean()
    return ranks


def _spearman(a, b):
    ra, rb = _avg_ranks(np.asarray(a)), _avg_ranks(np.asarray(b))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


@pytest.fixture(scope="module")
def trained(rows, tmp_path_factory):
    logs = simulate_log(rows, variants=8, impressions=8, seed=0)
    table = ImpressionTable.from_logs(logs)
    train, held = table.split(0.2, seed=0)
    enc = HashedNgramEncoder(256)
    return dict(logs=logs, train=train, held=held, enc=enc,
                model=train_ctcvr(train, enc), blind=train_ctcvr(train, enc, text_blind=True))


def test_learned_ctcvr_ranks_held_out_texts_better_than_text_blind(trained, rows):
    held, model, blind = trained["held"], trained["model"], trained["blind"]
    by_id = {r.id: r for r in rows}
    texts = [r["text"] for r in held.records]
    truth = ClickSimulator(0).probabilities([by_id[r["prompt_id"]] for r in held.records], texts)["ctcvr"]
    groups = np.array(held.groups)

    def within_prompt_rho(m):
        p = m.predict_records(held.records, texts)["ctcvr"]
        return np.mean([_spearman(p[groups == g], truth[groups == g]) for g in set(held.groups)])

    rho_model, rho_blind = within_prompt_rho(model), within_prompt_rho(blind)
    m, b = model.evaluate(held), blind.evaluate(held)
    assert rho_model > 0.3 and rho_model > rho_blind + 0.3, (rho_model, rho_blind)
    assert m["ctcvr_auc"] > b["ctcvr_auc"] + 0.03, (m, b)


def test_save_load_predict(trained, tmp_path, rows):
    model = trained["model"]
    model.save(tmp_path / "m")
    back = CTCVRModel.load(tmp_path / "m", encoder=trained["enc"])
    texts = [r.reference for r in rows[:7]]
    a, b = model.predict(rows[:7], texts), back.predict(rows[:7], texts)
    for k in ("ctr", "cvr", "ctcvr"):
        np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_allclose(a["ctcvr"], a["ctr"] * a["cvr"], rtol=1e-6)
    with pytest.raises(ValueError, match="trained on encoder"):
        CTCVRModel.load(tmp_path / "m", encoder=HashedNgramEncoder(64))
    with pytest.raises(FileNotFoundError, match="expected config.json and model.pt"):
        CTCVRModel.load(tmp_path / "nothing")


def test_cli_train_and_eval(trained, tmp_path, capsys):
    path = tmp_path / "logs.jsonl"
    write_jsonl(trained["logs"][:3000], path)
    main(["train", "--logs", str(path), "--out", str(tmp_path / "m"), "--encoder", "hashed:64", "--epochs", "2"])
    report = json.loads((tmp_path / "m" / "report.json").read_text())
    assert {"model", "text_blind", "train"} <= set(report) and 0 <= report["model"]["ctr_auc"] <= 1
    assert "held-out  CTR AUC" in capsys.readouterr().out
    main(["eval", "--model", str(tmp_path / "m"), "--logs", str(path)])
    assert json.loads(capsys.readouterr().out)["impressions"] == 3000


def test_log_errors(tmp_path, trained):
    good = trained["logs"][0]
    bad_rows = [(dict(good, click=2), "field 'click': must be 0 or 1"),
                (dict(good, click=0, conversion=1), "conversion without a click"),
                ({k: v for k, v in good.items() if k != "text"}, "field 'text': missing"),
                (dict(good, facts="x"), "field 'facts': must be list")]
    for rec, msg in bad_rows:
        p = tmp_path / "l.jsonl"
        p.write_text(json.dumps(good) + "\n" + json.dumps(rec) + "\n")
        with pytest.raises(ValueError, match=rf"l.jsonl:2: .*{msg}"):
            read_logs(p)
