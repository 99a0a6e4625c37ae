"""The CTCVR reward model: a Shared-Bottom network with CTR and CVR towers, trained ESMM-style.

Inputs are sentence embeddings (rewards/embedding.py) of the query (+ bidword), the ad's metadata
(industry, bidword, selling points, facts) and the ad text. Trained over *all* impressions:

    pCTCVR = pCTR · pCVR
    loss   = BCE(click, pCTR) + BCE(click · conversion, pCTCVR)

so pCVR is learned without the sample-selection bias of training on clicks only. The text-blind
baseline is the same network without the text (query and ad only): the gap between the two is what
the text contributes, which is what a policy can change.

    python -m relate_fast.sim --out logs.jsonl                      # impression logs
    python -m relate_fast.rewards.ctcvr train --logs logs.jsonl --out runs/ctcvr
    python -m relate_fast.rewards.ctcvr eval --model runs/ctcvr --logs other_logs.jsonl

Log records (JSONL): query, bidword, industry, selling_points, facts, text, click, conversion
(prompt_id optional: held-out splits are by prompt so no prompt is on both sides).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from relate_fast.data.ads import ad_body, iter_jsonl

__all__ = ["CTCVRNet", "CTCVRModel", "ImpressionTable", "read_logs", "train_ctcvr", "auc", "log_loss"]


# --------------------------------------------------------------------------- network


class CTCVRNet(nn.Module):
    """Shared bottom over [q, a, t, q⊙t, a⊙t] (text-blind: [q, a, q⊙a]); CTR and CVR towers."""

    def __init__(self, dim: int, *, hidden: int = 256, tower: int = 64, dropout: float = 0.1, text_blind: bool = False):
        super().__init__()
        self.dim, self.text_blind = dim, text_blind
        n_in = 3 * dim if text_blind else 5 * dim
        self.bottom = nn.Sequential(nn.Linear(n_in, hidden), nn.ReLU(), nn.Dropout(dropout),
                                    nn.Linear(hidden, hidden), nn.ReLU())
        self.ctr_tower = nn.Sequential(nn.Linear(hidden, tower), nn.ReLU(), nn.Linear(tower, 1))
        self.cvr_tower = nn.Sequential(nn.Linear(hidden, tower), nn.ReLU(), nn.Linear(tower, 1))

    def logits(self, q, a, t):
        x = torch.cat([q, a, q * a] if self.text_blind else [q, a, t, q * t, a * t], dim=-1)
        h = self.bottom(x)
        return self.ctr_tower(h).squeeze(-1), self.cvr_tower(h).squeeze(-1)

    def forward(self, q, a, t) -> Dict[str, torch.Tensor]:
        zc, zv = self.logits(q, a, t)
        ctr, cvr = torch.sigmoid(zc), torch.sigmoid(zv)
        return {"ctr": ctr, "cvr": cvr, "ctcvr": ctr * cvr}


def esmm_loss(zc, zv, impressions, clicks, conversions) -> torch.Tensor:
    """ESMM loss on aggregated impressions (same value as per-impression BCE, summed), per impression.

    BCE(click, pCTR) + BCE(click·conversion, pCTCVR) with log pCTCVR = log σ(zc) + log σ(zv).
    """
    ls = nn.functional.logsigmoid
    log_ctr, log_1m_ctr = ls(zc), ls(-zc)
    log_ctcvr = ls(zc) + ls(zv)
    log_1m_ctcvr = torch.log1p(-torch.exp(log_ctcvr).clamp(max=1 - 1e-7))
    ctr_term = -(clicks * log_ctr + (impressions - clicks) * log_1m_ctr)
    ctcvr_term = -(conversions * log_ctcvr + (impressions - conversions) * log_1m_ctcvr)
    return (ctr_term + ctcvr_term).sum() / impressions.sum()


# --------------------------------------------------------------------------- data

_LOG_FIELDS = {"query": str, "bidword": str, "industry": str, "selling_points": list, "facts": list, "text": str,
               "click": int, "conversion": int}


def query_text(rec) -> str:
    return f"{rec['query']} {rec['bidword']}"


def ad_text(rec) -> str:
    return " ".join([rec["industry"], rec["bidword"], *rec["selling_points"], *rec["facts"]])


def row_record(row) -> dict:
    """The log fields of an AdPrompt (for prediction on policy outputs)."""
    return dict(query=row.query, bidword=row.bidword, industry=row.industry,
                selling_points=list(row.selling_points), facts=list(row.facts), prompt_id=row.id)


def read_logs(path) -> List[dict]:
    """Reads impression logs; a malformed record is a ValueError naming the file, line and field."""
    out = []
    for i, rec in iter_jsonl(path, "impression log"):
        if not isinstance(rec, dict):
            raise ValueError(f"{path}:{i}: expected a JSON object")
        for name, typ in _LOG_FIELDS.items():
            if name not in rec:
                raise ValueError(f"{path}:{i}: field '{name}': missing")
            v = rec[name]
            if typ is int:
                if v not in (0, 1) or isinstance(v, float):
                    raise ValueError(f"{path}:{i}: field '{name}': must be 0 or 1, got {v!r}")
            elif not isinstance(v, typ):
                raise ValueError(f"{path}:{i}: field '{name}': must be {typ.__name__}, got {type(v).__name__}")
        if rec["conversion"] and not rec["click"]:
            raise ValueError(f"{path}:{i}: field 'conversion': a conversion without a click")
        out.append(rec)
    if not out:
        raise ValueError(f"{path}: no impressions")
    return out


@dataclass
class ImpressionTable:
    """Impressions aggregated by (query, ad, text): counts of impressions, clicks and conversions."""

    records: List[dict]  # one representative record per key
    impressions: np.ndarray
    clicks: np.ndarray
    conversions: np.ndarray
    groups: List[str]  # prompt id (or query + ad) of each key, for held-out splits

    @classmethod
    def from_logs(cls, logs: Sequence[dict]) -> "ImpressionTable":
        index: Dict[tuple, int] = {}
        recs, imp, clk, cnv, groups = [], [], [], [], []
        for r in logs:
            key = (query_text(r), ad_text(r), r["text"])
            k = index.get(key)
            if k is None:
                k = index[key] = len(recs)
                recs.append(r)
                imp.append(0), clk.append(0), cnv.append(0)
                groups.append(r.get("prompt_id") or key[0] + "\x00" + key[1])
            imp[k] += 1
            clk[k] += r["click"]
            cnv[k] += r["conversion"]
        return cls(recs, np.array(imp, float), np.array(clk, float), np.array(cnv, float), groups)

    def subset(self, idx) -> "ImpressionTable":
        return ImpressionTable([self.records[i] for i in idx], self.impressions[idx], self.clicks[idx],
                               self.conversions[idx], [self.groups[i] for i in idx])

    def split(self, holdout: float, seed: int):
        names = sorted(set(self.groups))
        random.Random(seed).shuffle(names)
        held = set(names[:max(1, int(round(holdout * len(names))))])
        mask = np.array([g in held for g in self.groups])
        return self.subset(np.flatnonzero(~mask)), self.subset(np.flatnonzero(mask))


# --------------------------------------------------------------------------- metrics


def auc(scores, positives, totals) -> float:
    """ROC AUC with aggregated labels: row k has `positives[k]` positives among `totals[k]` impressions."""
    scores, pos = np.asarray(scores, float), np.asarray(positives, float)
    neg = np.asarray(totals, float) - pos
    order = np.argsort(scores, kind="mergesort")
    s, p, n = scores[order], pos[order], neg[order]
    # ties share credit: process equal scores as one block
    _, starts = np.unique(s, return_index=True)
    ends = np.append(starts[1:], len(s))
    neg_below = 0.0
    area = 0.0
    for a, b in zip(starts, ends):
        pb, nb = p[a:b].sum(), n[a:b].sum()
        area += pb * (neg_below + 0.5 * nb)
        neg_below += nb
    total = p.sum() * n.sum()
    return float(area / total) if total > 0 else float("nan")


def log_loss(probs, positives, totals) -> float:
    p = np.clip(np.asarray(probs, float), 1e-7, 1 - 1e-7)
    pos, tot = np.asarray(positives, float), np.asarray(totals, float)
    return float(-(pos * np.log(p) + (tot - pos) * np.log1p(-p)).sum() / tot.sum())


# --------------------------------------------------------------------------- model (network + encoder)


class CTCVRModel:
    """A trained CTCVR network with its encoder: ``predict(rows, texts) -> {"ctr", "cvr", "ctcvr"}``."""

    def __init__(self, net: CTCVRNet, encoder, *, device: str = "cpu", info: Optional[dict] = None):
        self.net, self.encoder, self.device = net.to(device).eval(), encoder, device
        self.info = info or {}

    def _embed(self, records: Sequence[dict], texts: Sequence[str]):
        enc = self.encoder.encode
        q = enc([query_text(r) for r in records])
        a = enc([ad_text(r) for r in records])
        t = enc([ad_body(x) for x in texts])
        to = lambda x: torch.from_numpy(x).to(self.device)  # noqa: E731
        return to(q), to(a), to(t)

    @torch.no_grad()
    def predict_records(self, records: Sequence[dict], texts: Sequence[str], batch_size: int = 4096):
        outs = {"ctr": [], "cvr": [], "ctcvr": []}
        for i in range(0, len(texts), batch_size):
            o = self.net(*self._embed(records[i:i + batch_size], texts[i:i + batch_size]))
            for k in outs:
                outs[k].append(o[k].float().cpu().numpy())
        return {k: np.concatenate(v) if v else np.zeros(0, np.float32) for k, v in outs.items()}

    def predict(self, rows: Sequence, texts: Sequence[str]) -> Dict[str, np.ndarray]:
        """Batched inference for AdPrompt rows and policy outputs (labels are stripped from the texts)."""
        return self.predict_records([row_record(r) for r in rows], texts)

    def evaluate(self, table: ImpressionTable) -> dict:
        p = self.predict_records(table.records, [r["text"] for r in table.records])
        return dict(ctr_auc=auc(p["ctr"], table.clicks, table.impressions),
                    ctcvr_auc=auc(p["ctcvr"], table.conversions, table.impressions),
                    ctr_logloss=log_loss(p["ctr"], table.clicks, table.impressions),
                    ctcvr_logloss=log_loss(p["ctcvr"], table.conversions, table.impressions),
                    impressions=int(table.impressions.sum()))

    def save(self, folder) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        cfg = dict(dim=self.net.dim, text_blind=self.net.text_blind, hidden=self.net.bottom[0].out_features,
                   tower=self.net.ctr_tower[0].out_features, encoder=self.encoder.name, info=self.info)
        torch.save(self.net.state_dict(), folder / "model.pt")
        (folder / "config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, folder, *, encoder=None, device: str = "cpu") -> "CTCVRModel":
        folder = Path(folder)
        if not (folder / "config.json").is_file() or not (folder / "model.pt").is_file():
            raise FileNotFoundError(f"CTCVR model {folder}: expected config.json and model.pt "
                                    f"(train one with python -m relate_fast.rewards.ctcvr train)")
        cfg = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        if encoder is None:
            from relate_fast.rewards.embedding import make_encoder
            encoder = make_encoder(cfg["encoder"], device=device)
        elif encoder.name != cfg["encoder"] or encoder.dim != cfg["dim"]:
            raise ValueError(f"CTCVR model {folder} was trained on encoder {cfg['encoder']!r} (dim {cfg['dim']}), "
                             f"got {encoder.name!r} (dim {encoder.dim})")
        net = CTCVRNet(cfg["dim"], hidden=cfg["hidden"], tower=cfg["tower"], text_blind=cfg["text_blind"])
        net.load_state_dict(torch.load(folder / "model.pt", map_location="cpu", weights_only=True))
        return cls(net, encoder, device=device, info=cfg.get("info"))


def train_ctcvr(train: ImpressionTable, encoder, *, text_blind: bool = False, epochs: int = 12, lr: float = 2e-3,
                weight_decay: float = 1e-4, batch_size: int = 512, hidden: int = 128, seed: int = 0,
                device: str = "cpu", progress: bool = False) -> CTCVRModel:
    """Trains the network on aggregated impressions (the ESMM loss); returns the model in eval mode."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = CTCVRNet(encoder.dim, hidden=hidden, text_blind=text_blind).to(device)
    model = CTCVRModel(net, encoder, device=device)
    q, a, t = model._embed(train.records, [r["text"] for r in train.records])
    n_imp, n_clk, n_cnv = (torch.from_numpy(x).float().to(device)
                           for x in (train.impressions, train.clicks, train.conversions))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    it = range(epochs)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="ctcvr" + (" (text-blind)" if text_blind else ""), file=sys.stderr)
    for _ in it:
        net.train()
        perm = torch.from_numpy(rng.permutation(len(train.records))).to(device)
        for i in range(0, len(perm), batch_size):
            b = perm[i:i + batch_size]
            zc, zv = net.logits(q[b], a[b], t[b])
            loss = esmm_loss(zc, zv, n_imp[b], n_clk[b], n_cnv[b])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    return model


# --------------------------------------------------------------------------- CLI


def _train_cli(args) -> None:
    from relate_fast.rewards.embedding import make_encoder

    t0 = time.time()
    table = ImpressionTable.from_logs(read_logs(args.logs))
    train, held = table.split(args.holdout, args.seed)
    print(f"{int(table.impressions.sum())} impressions, {len(table.records)} (query, ad, text) keys; "
          f"held out {len(set(held.groups))} of {len(set(table.groups))} prompts", file=sys.stderr)
    encoder = make_encoder(args.encoder, device=args.device)
    kw = dict(epochs=args.epochs, lr=args.lr, seed=args.seed, device=args.device, progress=True)
    model = train_ctcvr(train, encoder, **kw)
    blind = train_ctcvr(train, encoder, text_blind=True, **kw)
    report = {"model": model.evaluate(held), "text_blind": blind.evaluate(held), "train": model.evaluate(train),
              "encoder": encoder.name, "logs": str(args.logs), "seconds": round(time.time() - t0, 1)}
    model.info = report
    model.save(args.out)
    (Path(args.out) / "report.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    m, b = report["model"], report["text_blind"]
    print(f"held-out  CTR AUC {m['ctr_auc']:.4f} (text-blind {b['ctr_auc']:.4f})  "
          f"CTCVR AUC {m['ctcvr_auc']:.4f} (text-blind {b['ctcvr_auc']:.4f})\n"
          f"          CTR log-loss {m['ctr_logloss']:.4f} ({b['ctr_logloss']:.4f})  "
          f"CTCVR log-loss {m['ctcvr_logloss']:.4f} ({b['ctcvr_logloss']:.4f})\nsaved to {args.out}")


def _eval_cli(args) -> None:
    model = CTCVRModel.load(args.model, device=args.device)
    table = ImpressionTable.from_logs(read_logs(args.logs))
    print(json.dumps(model.evaluate(table), indent=2))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m relate_fast.rewards.ctcvr",
                                 description="Train or evaluate the ESMM CTCVR reward model on impression logs.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train on logs, report held-out AUC/log-loss vs a text-blind baseline, save")
    tr.add_argument("--logs", required=True, help="impression log JSONL (python -m relate_fast.sim makes one)")
    tr.add_argument("--out", required=True, help="folder to save model.pt, config.json and report.json")
    tr.add_argument("--encoder", default="minilm", help="'minilm' (English-only, offline), 'hashed', or a path")
    tr.add_argument("--epochs", type=int, default=12)
    tr.add_argument("--lr", type=float, default=2e-3)
    tr.add_argument("--holdout", type=float, default=0.15, help="share of prompts held out for the report")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default="cpu")
    ev = sub.add_parser("eval", help="AUC and log-loss of a saved model on logs")
    ev.add_argument("--model", required=True)
    ev.add_argument("--logs", required=True)
    ev.add_argument("--device", default="cpu")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    (_train_cli if args.cmd == "train" else _eval_cli)(args)


if __name__ == "__main__":
    main()
