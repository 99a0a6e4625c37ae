"""The RELATE trainer: runs the phases of a run and checkpoints between GRPO steps.

Phases (each resumable; finished phases are recorded in <run>/checkpoint/state.json):
  1. policy: the embedded tiny Qwen3 (built once, cached) or model.path (its weights, or with
     model.init=random its architecture with seeded random weights);
  2. cold start (`relate_fast.phases.cold_start`): SFT on the reference ads -> <run>/cold_start, the
     reference policy of the KL term and the rollout engine's starting weights (sft.steps 0: the base);
  3. CTCVR model (`relate_fast.phases.ctcvr`) on click-simulator logs -> <run>/ctcvr (unless ctcvr.model);
  4. GRPO: one `relate_fast.step.GRPOStep` per step (sample -> score -> advantages -> update -> push);
  5. evaluation of the cold-start and the final policy -> summary.json, plots.
"""
from __future__ import annotations

import json
import logging
import math
import pickle
import random
import sys
import time
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from relate_fast.config import Config, config_to_dict
from relate_fast.data.ads import AdPrompt, load_ads
from relate_fast.distributed import barrier, device, init_distributed, replicas_identical
from relate_fast.models import build_tiny_model, load_policy, prompt_ids
from relate_fast.policy import PolicyUpdater
from relate_fast.rewards import RewardFunction
from relate_fast.step import GRPOStep, RolloutError, lr_at

log = logging.getLogger("relate_fast")

__all__ = ["Trainer", "RolloutError"]


# --------------------------------------------------------------------------- helpers


def _progress(it, cfg: Config, rank: int, **kw):
    if not cfg.run.progress or rank != 0:
        return it
    from tqdm import tqdm

    return tqdm(it, file=sys.stderr, dynamic_ncols=True, **kw)


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(s: dict):
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


class Trainer:
    """Runs the phases of a RELATE run and checkpoints between GRPO steps; one step is `GRPOStep`."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rank, self.world = init_distributed()
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        self.run_dir = Path(cfg.run.out_dir) / cfg.run.name
        self.ckpt_dir = self.run_dir / "checkpoint"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.state: dict = {"phases": [], "step": 0}
        if cfg.run.resume and (self.ckpt_dir / "state.json").is_file():
            self.state = json.loads((self.ckpt_dir / "state.json").read_text())
            self._log(f"resuming {self.run_dir}: phases done {self.state['phases']}, GRPO step {self.state['step']}")
        elif self.rank == 0:
            for stale in ("metrics.jsonl", "summary.json"):
                (self.run_dir / stale).unlink(missing_ok=True)
        if self.rank == 0:
            (self.run_dir / "config.yaml").write_text(_yaml(config_to_dict(cfg)), encoding="utf-8")
        random.seed(cfg.run.seed)
        np.random.seed(cfg.run.seed)
        torch.manual_seed(cfg.run.seed)
        self.rows = load_ads(cfg.data.path, split="train", langs=cfg.data.langs)
        self.eval_rows = load_ads(cfg.data.path, split=cfg.eval.split, langs=cfg.data.langs)
        self._prompt_cache: Dict[str, List[int]] = {}

    # -- bookkeeping ------------------------------------------------------------------------------
    def _log(self, msg: str):
        if self.rank == 0:
            print(f"[relate_fast] {msg}", file=sys.stderr, flush=True)

    def _progress(self, it, **kw):
        return _progress(it, self.cfg, self.rank, **kw)

    def _phase_done(self, name: str) -> bool:
        return name in self.state["phases"]

    def _mark(self, name: str):
        self.state["phases"].append(name)
        self._write_state()

    def _write_state(self):
        if self.rank == 0:
            self.ckpt_dir.mkdir(parents=True, exist_ok=True)
            tmp = self.ckpt_dir / "state.json.tmp"
            tmp.write_text(json.dumps(self.state, indent=1))
            tmp.replace(self.ckpt_dir / "state.json")

    # -- phase 1: the policy ----------------------------------------------------------------------
    def base_model_folder(self) -> Path:
        if self.cfg.model.path is not None:
            return Path(self.cfg.model.path)
        cache = Path(self.cfg.run.out_dir) / "_tiny_model"
        if self.rank == 0:  # one rank builds; the others then find it cached
            build_tiny_model(self.cfg.model.tiny, cache, seed=self.cfg.run.seed)
        barrier()
        return build_tiny_model(self.cfg.model.tiny, cache, seed=self.cfg.run.seed)

    # -- phase 2: supervised cold start -------------------------------------------------------------
    def cold_start(self, base: Path) -> Tuple[Path, str]:
        """(folder, init) of the cold-start policy: <run>/cold_start after SFT, or the base policy itself
        when sft.steps is 0 (nothing is copied)."""
        if self.cfg.sft.steps == 0:
            return base, self.cfg.model.init
        out = self.run_dir / "cold_start"
        if not self._phase_done("cold_start"):
            from relate_fast.phases.cold_start import run_cold_start

            run_cold_start(self.cfg, self.rows, base, out, rank=self.rank, progress=self._progress, log=self._log)
            self._mark("cold_start")
        return out, "pretrained"

    # -- phase 3: the CTCVR model -----------------------------------------------------------------
    def ctcvr_model(self, encoder):
        from relate_fast.rewards.ctcvr import CTCVRModel

        if self.cfg.ctcvr.model is not None:
            return CTCVRModel.load(self.cfg.ctcvr.model, encoder=encoder)
        out = self.run_dir / "ctcvr"
        if not self._phase_done("ctcvr"):
            from relate_fast.phases.ctcvr import train_ctcvr_phase

            train_ctcvr_phase(self.cfg, self.rows, encoder, out, rank=self.rank, log=self._log)
            self._mark("ctcvr")
        return CTCVRModel.load(out, encoder=encoder)

    # -- phase 4: GRPO ----------------------------------------------------------------------------
    def _load(self, source: Tuple[Path, str], **kw):
        folder, init = source
        return load_policy(folder, dtype=self.cfg.model.dtype, attn=self.cfg.model.attn_implementation,
                           device=device(), init=init, seed=self.cfg.run.seed, **kw)

    def run(self) -> dict:
        cfg = self.cfg
        t_start = time.time()
        base = self.base_model_folder()
        cold = self.cold_start(base)
        from relate_fast.rewards.embedding import make_encoder

        encoder = make_encoder(cfg.reward.encoder)
        same = cfg.ctcvr.encoder == cfg.reward.encoder  # one model in memory when both use the same
        ctcvr = self.ctcvr_model(encoder if same else make_encoder(cfg.ctcvr.encoder))
        policy, tok = self._load(cold)
        if cfg.model.gradient_checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.tok = tok
        self.reward_fn = RewardFunction.from_config(cfg.reward, tokenizer=tok, encoder=encoder, ctcvr=ctcvr,
                                                    vocab_size=policy.config.vocab_size)
        reference = None
        if cfg.grpo.beta != 0:
            reference, _ = self._load(cold)
            reference.eval().requires_grad_(False)
        from relate_fast.rollout import make_engine

        t = time.time()
        self.rollout = make_engine(cfg.rollout, model_folder=cold[0], tokenizer=tok, policy=policy, dtype=cfg.model.dtype,
                                   seed=cfg.run.seed, max_model_len=cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens + 8,
                                   dummy_weights=cold[1] == "random")
        self.rollout_init_s = time.time() - t
        self._log(f"rollout engine: {self.rollout.name} (started in {self.rollout_init_s:.1f} s); reward preset "
                  f"{cfg.reward.preset}; world size {self.world}")
        self.updater = PolicyUpdater(policy, cfg, self.world)
        if self.rollout.needs_weights:  # dummy weights: the policy's go in first
            self.rollout.push_weights(self.updater.model)
        self.step = GRPOStep(cfg, rollout=self.rollout, updater=self.updater, reward_fn=self.reward_fn, tokenizer=tok,
                             reference=reference, rank=self.rank, world=self.world)
        if self.rank == 0 and cfg.eval.enabled and not self._phase_done("eval_baseline"):
            self.state["baseline"] = self.evaluate(self.updater.model, "baseline")
        if not self._phase_done("eval_baseline"):
            self._mark("eval_baseline")
        if self.state["step"] > 0:
            client = self.updater.load(self.ckpt_dir)
            _set_rng_state(client["rng"])
            if client.get("ngrams"):
                self.reward_fn.ctx.ngrams = pickle.loads(client["ngrams"])
            self.rollout.push_weights(self.updater.model)
            self._log(f"restored GRPO step {self.state['step']} from {self.ckpt_dir}")
        elif self.rollout.needs_weights:  # the evaluation's sleep discarded them
            self.rollout.push_weights(self.updater.model)
        self._truncate_metrics(self.state["step"])
        nan_run = 0
        bar = self._progress(range(self.state["step"], cfg.grpo.steps), desc="GRPO", initial=self.state["step"],
                             total=cfg.grpo.steps)
        try:
            for step in bar:
                metrics = self.grpo_step(step)
                self._write_metrics(metrics)
                if not math.isfinite(metrics["loss"]):
                    nan_run += 1
                    warnings.warn(f"GRPO step {step + 1}: non-finite loss, step skipped ({nan_run} in a row)")
                    if nan_run >= cfg.run.max_nan_steps:
                        raise FloatingPointError(f"{nan_run} consecutive non-finite losses (run.max_nan_steps); "
                                                 f"last checkpoint: {self.ckpt_dir}")
                else:
                    nan_run = 0
                self.state["step"] = step + 1
                if hasattr(bar, "set_postfix"):
                    bar.set_postfix(reward=f"{metrics['reward/total']:.3f}", loss=f"{metrics['loss']:.4f}")
                every = cfg.run.checkpoint_every
                if (every and (step + 1) % every == 0) or step + 1 == cfg.grpo.steps:
                    self.checkpoint()
        except KeyboardInterrupt:
            self._log("interrupted: writing a checkpoint before exiting")
            self.checkpoint()
            raise
        summary = None
        if self.rank == 0:
            summary = {"steps": cfg.grpo.steps, "rollout_engine": self.rollout.name, "preset": cfg.reward.preset,
                       "world_size": self.world, "rollout_engine_start_s": round(self.rollout_init_s, 1)}
            if cfg.eval.enabled:
                summary.update(baseline=self.state.get("baseline"), final=self.evaluate(self.updater.model, "final"))
            summary["seconds"] = round(time.time() - t_start, 1)
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            self.updater.model.save_pretrained(self.run_dir / "final")
            tok.save_pretrained(self.run_dir / "final")
            if (self.run_dir / "metrics.jsonl").is_file():  # no GRPO step, no curves
                try:
                    from relate_fast.plots import plot_rewards
                    plot_rewards(self.run_dir / "metrics.jsonl", self.run_dir / "plots")
                except ImportError as e:
                    self._log(f"plots skipped: {e}")
            if cfg.eval.enabled:
                b, f = summary["baseline"], summary["final"]
                self._log("summary (baseline -> final): " + ", ".join(
                    f"{k} {b[k]:.4f} -> {f[k]:.4f}" for k in ("reward", "compliance_rate", "diversity", "ctcvr_model",
                                                               "ctcvr_sim")))
        barrier()
        return summary

    def _prompt(self, row: AdPrompt) -> List[int]:
        ids = self._prompt_cache.get(row.id)
        if ids is None:
            ids = prompt_ids(self.tok, row.prompt)
            if len(ids) > self.cfg.data.max_prompt_tokens:
                raise ValueError(f"prompt {row.id}: {len(ids)} tokens > data.max_prompt_tokens "
                                 f"({self.cfg.data.max_prompt_tokens})")
            self._prompt_cache[row.id] = ids
        return ids

    def _step_prompts(self, step: int) -> List[AdPrompt]:
        """The prompts of `step` on this rank: a seeded permutation per epoch, strided over ranks so no
        group is split across ranks."""
        per_rank = self.cfg.rollout.prompts_per_step
        per_step = per_rank * self.world
        n = len(self.rows)
        out = []
        for k in range(per_rank):
            pos = step * per_step + k * self.world + self.rank
            epoch, i = divmod(pos, n)
            perm = random.Random(self.cfg.run.seed * 1_000_003 + epoch).sample(range(n), n)
            out.append(self.rows[perm[i]])
        return out

    def grpo_step(self, step: int) -> dict:
        """GRPO step `step` (0-based): this rank's prompts through `GRPOStep.run`, then the replica check."""
        rows = self._step_prompts(step)
        try:
            metrics = self.step.run(step, rows, [self._prompt(r) for r in rows], lr_at(self.cfg, step))
        except RolloutError as e:
            raise RolloutError(f"{e}. The checkpoint in {self.ckpt_dir} holds step {self.state['step']}; run the "
                               f"same command again to resume.") from e.__cause__
        every = self.cfg.run.check_replicas_every
        if every and (step + 1) % every == 0:
            ok, lo, hi = replicas_identical(self.updater.model)
            if not ok:
                raise RuntimeError(f"parameters differ across ranks after GRPO step {step + 1} (checksums {lo} .. {hi})")
        return {"step": step + 1, **metrics}

    # -- checkpoints, metrics ---------------------------------------------------------------------
    def checkpoint(self):
        client = {"rng": _rng_state(), "ngrams": pickle.dumps(self.reward_fn.ctx.ngrams) if self.reward_fn.ctx.ngrams else None,
                  "step": self.state["step"]}
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.updater.save(self.ckpt_dir, client)
        self._write_state()  # state.json last: a crash before it leaves the previous step's state consistent

    def _write_metrics(self, m: dict):
        if self.rank != 0:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(m) + "\n")
        if getattr(self, "_tb", None) is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
                self._tb = SummaryWriter(str(self.run_dir / "tensorboard"))
            except ImportError:
                self._tb = False
        if self._tb:
            for k, v in m.items():
                if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(k, v, m["step"])
            self._tb.flush()

    def _truncate_metrics(self, step: int):
        path = self.run_dir / "metrics.jsonl"
        if self.rank != 0 or not path.is_file():
            return
        keep = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= step]
        path.write_text("".join(l + "\n" for l in keep))

    # -- phase 5: evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, name: str) -> dict:
        from relate_fast.evaluate import evaluate_texts

        cfg = self.cfg
        rows = self.eval_rows[:cfg.eval.prompts] if cfg.eval.prompts else self.eval_rows
        pids = [self._prompt(r) for r in rows]
        comps = self.rollout.generate(pids, cfg.eval.samples, max_new_tokens=cfg.rollout.max_new_tokens,
                                     temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, seed=10**9 + 7)
        flat_rows = [r for r in rows for _ in range(cfg.eval.samples)]
        flat = [c for g in comps for c in g]
        texts = self.tok.batch_decode(flat, skip_special_tokens=True)
        res = evaluate_texts(flat_rows, texts, flat, cfg.reward, self.reward_fn.ctx, group_size=cfg.eval.samples,
                             sim_seed=cfg.run.seed)
        if self.rank == 0:
            (self.run_dir / f"eval_{name}.json").write_text(json.dumps(res, indent=2))
            with open(self.run_dir / f"samples_{name}.jsonl", "w", encoding="utf-8") as f:
                for r, t in zip(flat_rows, texts):
                    f.write(json.dumps({"id": r.id, "text": t}, ensure_ascii=False) + "\n")
        self._log(f"eval {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in res.items() if isinstance(v, float)))
        return res


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)
