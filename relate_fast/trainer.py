"""The RELATE trainer: runs the phases of a run and checkpoints between GRPO steps.

Phases (each resumable; finished phases are recorded in <run>/checkpoint/phases.json):
  1. policy: the embedded tiny Qwen3 (built once, cached) or model.path (its weights, or with
     model.init=random its architecture with seeded random weights);
  2. cold start (`relate_fast.phases.cold_start`): SFT on the reference ads -> <run>/cold_start, the
     reference policy of the KL term and the rollout engine's starting weights (sft.steps 0: the base);
  3. CTCVR model (`relate_fast.phases.train_ctcvr`) on click-simulator logs -> <run>/ctcvr (unless ctcvr.model);
  4. GRPO: one `relate_fast.step.GRPOStep` per step (sample -> score -> advantages -> update -> push),
     checkpointed between steps (`relate_fast.resume`);
  5. evaluation of the cold-start and the final policy -> summary.json, plots.

A run's resolved settings are its identity (<run>/config.yaml): resuming with settings that change
what it computes is refused; starting over (run.resume false) moves the old run aside. Every input
is checked before anything is written (`relate_fast.preflight`).
"""
from __future__ import annotations

import gc
import json
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Tuple

import torch

from relate_fast.assemble import assemble
from relate_fast.checkpoint import CheckpointStore, atomic_save_pretrained, atomic_write_text, seed_all
from relate_fast.config import Config, config_to_dict, meaning_hash
from relate_fast.data.schedule import PromptSchedule
from relate_fast.distributed import all_ranks_true, barrier, init_distributed, replicas_identical
from relate_fast.loss.rows import configure as configure_loss
from relate_fast.metrics_log import MetricsLog, progress_bar
from relate_fast.models import base_model_folder
from relate_fast.preflight import check_inputs
from relate_fast.resume import GRPOCheckpoints
from relate_fast.rollout.split import SamplerLink, sampling_rank, split_roles
from relate_fast.run_dir import prepare_run_dir
from relate_fast.step import RolloutError, lr_at
from relate_fast.stop_requests import StopRequests

__all__ = ["Trainer", "RolloutError"]


class Trainer:
    """Runs the phases of a RELATE run and checkpoints between GRPO steps; one step is `GRPOStep`."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rank, self.world = init_distributed()
        # rollout.sampler_ranks: the last ranks only sample (relate_fast.rollout.split); the rest train
        self.split, self.rank, self.world = split_roles(cfg, self.rank, self.world)
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        inputs = check_inputs(cfg)  # every input, before anything is written or moved
        self.rows, self.eval_rows = inputs.rows, inputs.eval_rows
        if self.split and self.split.is_sampler:  # a sampling rank: run() is its loop, it writes nothing
            return
        configure_loss(backend=None if cfg.grpo.loss_backend == "auto" else cfg.grpo.loss_backend,
                       logits=cfg.grpo.logits_path)
        self.run_dir = Path(cfg.run.out_dir) / cfg.run.name
        self.config_dict = config_to_dict(cfg)
        self.ckpt = CheckpointStore(self.run_dir / "checkpoint", rank=self.rank, world=self.world,
                                    keep=cfg.run.keep_checkpoints)
        self.checkpoints = GRPOCheckpoints(self.ckpt, config_hash=meaning_hash(self.config_dict), seed=cfg.run.seed,
                                           rank=self.rank, log=self._log)
        prepare_run_dir(self.run_dir, self.config_dict, resume=cfg.run.resume, rank=self.rank, log=self._log)
        self.metrics = MetricsLog(self.run_dir, rank=self.rank, log=self._log)
        self.state = self.ckpt.read_phases()
        seed_all(cfg.run.seed)

    # -- bookkeeping ------------------------------------------------------------------------------
    def _log(self, msg: str):
        if self.rank == 0:
            print(f"[relate_fast] {msg}", file=sys.stderr, flush=True)

    def _progress(self, it, **kw):
        return progress_bar(it, self.cfg.run.progress and self.rank == 0, **kw)

    def _phase_done(self, name: str) -> bool:
        return name in self.state["phases"]

    def _mark(self, name: str):
        self.state["phases"].append(name)
        self.ckpt.write_phases(self.state)

    # -- phase 1: the policy ----------------------------------------------------------------------
    def base_model_folder(self) -> Path:
        return base_model_folder(self.cfg.model, Path(self.cfg.run.out_dir), seed=self.cfg.run.seed, rank=self.rank)

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
            from relate_fast.phases.train_ctcvr import train_ctcvr_phase

            train_ctcvr_phase(self.cfg, self.rows, encoder, out, rank=self.rank, log=self._log)
            self._mark("ctcvr")
        return CTCVRModel.load(out, encoder=encoder)

    # -- phase 4: GRPO ----------------------------------------------------------------------------
    def run(self) -> dict:
        """Every phase in order; each one done before (a resumed run) is skipped. Returns the summary."""
        t_start = time.time()
        if self.split and self.split.is_sampler:
            return sampling_rank(self.cfg, self.split, self.rows)
        if self._finished():
            if self.split:
                SamplerLink(self.split).finish()
            return json.loads((self.run_dir / "summary.json").read_text()) if self.rank == 0 else None
        cold = self.cold_start(self.base_model_folder())
        parts = assemble(self.cfg, cold, ctcvr_model=self.ctcvr_model, rank=self.rank, world=self.world, log=self._log)
        self.parts, self.tok, self.reward_fn = parts, parts.tokenizer, parts.reward_fn
        self.rollout, self.rollout_init_s, self.updater, self.grpo = \
            parts.rollout, parts.rollout_init_s, parts.updater, parts.step
        self.prompts = PromptSchedule(self.rows, self.tok, prompts_per_step=self.cfg.rollout.prompts_per_step,
                                      seed=self.cfg.run.seed, rank=self.rank, world=self.world,
                                      max_prompt_tokens=self.cfg.data.max_prompt_tokens)
        if not self._phase_done("eval_baseline"):
            if self.rank == 0 and self.cfg.eval.enabled:
                self.state["baseline"] = self.evaluate(self.updater.model, "baseline")
            self._mark("eval_baseline")
        start = self.checkpoints.restore(parts)
        if self.split:
            self.grpo.start_sampling_ranks(SamplerLink(self.split), start, self.cfg.grpo.steps, *cold)
        self.metrics.truncate(start)
        self._train(start)
        return self._finish(t_start)

    def _finished(self) -> bool:
        summary = self.run_dir / "summary.json"
        if summary.is_file() and self.checkpoints.finished(self.cfg.grpo.steps):
            self._log(f"{self.run_dir} has finished its {self.cfg.grpo.steps} GRPO steps ({summary}); nothing to do")
            return True
        return False

    def _train(self, start: int) -> None:
        """GRPO steps `start`..grpo.steps, a checkpoint every run.checkpoint_every and at a stop request."""
        cfg = self.cfg
        # What exists now lives for the whole run (models, compiled graphs, tokenizer, data). vLLM's sleep
        # and wake each run a full gc.collect(), which would scan all of it every step: frozen, a
        # collection scans only what the steps create.
        gc.collect()
        gc.freeze()
        nan_run = 0
        bar = self._progress(range(start, cfg.grpo.steps), desc="GRPO", initial=start, total=cfg.grpo.steps)
        try:
            with StopRequests(self._log) as stop:
                for step in bar:
                    metrics = self.grpo_step(step)
                    self.metrics.write(metrics)
                    if not math.isfinite(metrics["loss"]):
                        nan_run += 1
                        warnings.warn(f"GRPO step {step + 1}: non-finite loss, step skipped ({nan_run} in a row)")
                        if nan_run >= cfg.run.max_nan_steps:
                            raise FloatingPointError(
                                f"{nan_run} consecutive non-finite losses (run.max_nan_steps); the run resumes "
                                f"from {self.checkpoints.where()}")
                    else:
                        nan_run = 0
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(reward=f"{metrics['reward/total']:.3f}", loss=f"{metrics['loss']:.4f}")
                    stopping = not all_ranks_true(stop.count == 0)
                    every = cfg.run.checkpoint_every
                    last = step + 1 == cfg.grpo.steps and cfg.run.save_final
                    if stopping or (every and (step + 1) % every == 0) or last:
                        self.checkpoints.save(step + 1, self.parts)
                    if stopping or step + 1 == cfg.grpo.steps:
                        self.grpo.stop_sampling_ranks()
                    if stopping:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self._log(f"stopped; the run resumes from {self.checkpoints.where()}")
            raise
        finally:
            gc.unfreeze()  # what the loop kept alive can be collected again once the trainer is dropped

    def _finish(self, t_start: float) -> dict:
        """The final evaluation, model, summary and plots (rank 0)."""
        cfg, summary = self.cfg, None
        if self.rank == 0:
            summary = {"steps": cfg.grpo.steps, "rollout_engine": self.rollout.name, "preset": cfg.reward.preset,
                       "world_size": self.world, "rollout_engine_start_s": round(self.rollout_init_s, 1)}
            if cfg.eval.enabled:
                summary.update(baseline=self.state.get("baseline"), final=self.evaluate(self.updater.model, "final"))
            summary["seconds"] = round(time.time() - t_start, 1)
            if cfg.run.save_final:
                atomic_save_pretrained(self.run_dir / "final", self.updater.model, self.tok)
            if self.parts.memory_plan is not None:  # model.auto_checkpointing's prediction beside what was measured
                summary["memory_plan"] = self.parts.memory_plan.save(self.run_dir / "memory_plan.json", self.metrics.read())
            atomic_write_text(self.run_dir / "summary.json", json.dumps(summary, indent=2))
            self.metrics.plot(self.run_dir / "plots")
            if cfg.eval.enabled:
                b, f = summary["baseline"], summary["final"]
                self._log("summary (baseline -> final): " + ", ".join(
                    f"{k} {b[k]:.4f} -> {f[k]:.4f}" for k in ("reward", "compliance_rate", "diversity", "ctcvr_model",
                                                               "ctcvr_sim")))
        barrier()
        return summary

    def grpo_step(self, step: int) -> dict:
        """GRPO step `step` (0-based): this rank's prompts through `GRPOStep.run`, then the replica check."""
        rows = self.prompts.step_rows(step)
        ahead = {}
        if self.cfg.rollout.mode == "one_step_off":  # also after the last step: a run extended later continues alike
            nxt = self.prompts.step_rows(step + 1)
            ahead = dict(next_prompts=nxt, next_prompt_ids=[self.prompts.ids(r) for r in nxt])
        try:
            metrics = self.grpo.run(step, rows, [self.prompts.ids(r) for r in rows], lr_at(self.cfg, step), **ahead)
        except RolloutError as e:
            raise RolloutError(f"{e}. The checkpoint in {self.ckpt.root} holds step {self.checkpoints.saved_step}; run "
                               f"the same command again to resume.") from e.__cause__
        every = self.cfg.run.check_replicas_every
        if every and (step + 1) % every == 0:
            ok, lo, hi = replicas_identical(self.updater.model)
            if not ok:
                raise RuntimeError(f"parameters differ across ranks after GRPO step {step + 1} (checksums {lo} .. {hi})")
        return {"step": step + 1, **metrics}

    # -- phase 5: evaluation ----------------------------------------------------------------------
    def evaluate(self, model, name: str) -> dict:
        from relate_fast.evaluate import evaluate_policy

        cfg = self.cfg
        self.rollout.ensure_weights(model)
        return evaluate_policy(self.rollout, self.tok, self.reward_fn, self.eval_rows[:cfg.eval.prompts or None],
                               self.prompts.ids, cfg, out_dir=self.run_dir if self.rank == 0 else None, name=name,
                               log=self._log)
