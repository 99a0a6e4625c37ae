"""The RELATE trainer: runs the phases of a run and checkpoints between GRPO steps.

Phases (each resumable; finished phases are recorded in <run>/checkpoint/phases.json):
  1. policy: the embedded tiny Qwen3 (built once, cached) or model.path (its weights, or with
     model.init=random its architecture with seeded random weights);
  2. cold start (`relate_fast.phases.cold_start`): SFT on the reference ads -> <run>/cold_start, the
     reference policy of the KL term and the rollout engine's starting weights (sft.steps 0: the base);
  3. CTCVR model (`relate_fast.phases.ctcvr`) on click-simulator logs -> <run>/ctcvr (unless ctcvr.model);
  4. GRPO: one `relate_fast.step.GRPOStep` per step (sample -> score -> advantages -> update -> push),
     checkpointed between steps (`relate_fast.checkpoint`);
  5. evaluation of the cold-start and the final policy -> summary.json, plots.

A run's resolved settings are its identity (<run>/config.yaml): resuming with settings that change
what it computes is refused; starting over (run.resume false) moves the old run aside. Every input
is checked before anything is written (`relate_fast.preflight`).
"""
from __future__ import annotations

import datetime
import gc
import json
import logging
import math
import random
import shutil
import signal
import sys
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from relate_fast.checkpoint import CheckpointError, CheckpointStore, atomic_write_text
from relate_fast.config import SAFE_CHANGES, Config, config_diff, config_to_dict, meaning_hash
from relate_fast.data.ads import AdPrompt
from relate_fast.distributed import all_ranks_true, barrier, device, init_distributed, replicas_identical
from relate_fast.grpo import resolve_layout
from relate_fast.models import build_tiny_model, fuse_layers, load_policy, prompt_ids
from relate_fast.policy import PolicyUpdater
from relate_fast.preflight import check_inputs
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
    s = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        s["cuda"] = torch.cuda.get_rng_state_all()
    return s


def _set_rng_state(s: dict):
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])
    if "cuda" in s and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def _seed_all(seed: int):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _yaml(d: dict) -> str:
    import yaml

    return yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


class _StopRequests:
    """SIGINT (Ctrl-C) or SIGTERM during GRPO: the first one lets the current step finish and a
    checkpoint be written; a second SIGINT stops at once (the last complete checkpoint is kept:
    checkpoints are written atomically)."""

    def __init__(self, log):
        self.count, self._log, self._old = 0, log, {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        self.count += 1
        if self.count == 1:
            self._log(f"{signal.Signals(signum).name}: finishing this GRPO step, then writing a checkpoint "
                      f"(Ctrl-C again stops at once; the last checkpoint is kept)")
        else:
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for sig, handler in self._old.items():
            signal.signal(sig, handler)
        return False


class Trainer:
    """Runs the phases of a RELATE run and checkpoints between GRPO steps; one step is `GRPOStep`."""

    def __init__(self, cfg: Config):
        self.cfg = cfg
        self.rank, self.world = init_distributed()
        if cfg.run.threads:
            torch.set_num_threads(cfg.run.threads)
        inputs = check_inputs(cfg)  # every input, before anything is written or moved
        self.rows, self.eval_rows = inputs.rows, inputs.eval_rows
        self.run_dir = Path(cfg.run.out_dir) / cfg.run.name
        self.config_dict = config_to_dict(cfg)
        self.config_hash = meaning_hash(self.config_dict)
        self.ckpt = CheckpointStore(self.run_dir / "checkpoint", rank=self.rank, world=self.world,
                                    keep=cfg.run.keep_checkpoints)
        self._prepare_run_dir()
        self.state = self.ckpt.read_phases()
        self.saved_step = 0  # the step of the newest complete checkpoint (0: none yet)
        _seed_all(cfg.run.seed)
        self._prompt_cache: Dict[str, List[int]] = {}

    # -- the run folder and its identity ----------------------------------------------------------
    def _prepare_run_dir(self):
        cfg, run_dir = self.cfg, self.run_dir
        saved = run_dir / "config.yaml"
        if saved.is_file() and cfg.run.resume:
            if (run_dir / "checkpoint" / "state.json").is_file() and not (run_dir / "checkpoint" / "phases.json").is_file():
                raise ValueError(f"{run_dir}: its checkpoint was written by an older relate_fast and cannot be "
                                 f"resumed; start over with --run.resume false (the old run is moved aside)")
            import yaml

            try:
                old = yaml.safe_load(saved.read_text(encoding="utf-8"))
            except yaml.YAMLError as e:
                raise ValueError(f"{saved}: not valid YAML ({e})") from None
            diff = config_diff(old, self.config_dict)
            changed = [d for d in diff if d[0] not in SAFE_CHANGES]
            if changed:
                raise ValueError(f"run {run_dir} was started with other settings: " + "; ".join(
                    f"{k} {a!r} -> {b!r}" for k, a, b in changed) + ". Keep them, choose another --run.name, or pass "
                    "--run.resume false to start over (the old run is moved aside)")
            if diff and self.rank == 0:  # allowed changes: recorded, and config.yaml says what runs now
                with open(run_dir / "config_changes.jsonl", "a", encoding="utf-8") as f:
                    f.write(json.dumps({"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                                        "changes": {k: [a, b] for k, a, b in diff}}) + "\n")
                atomic_write_text(saved, _yaml(self.config_dict))
                self._log("resuming with changed settings: " + ", ".join(f"{k} {a!r} -> {b!r}" for k, a, b in diff))
        else:
            if run_dir.exists() and any(run_dir.iterdir()) and self.rank == 0:
                stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
                aside = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
                run_dir.rename(aside)
                self._log(f"starting over: the previous run {run_dir} was moved to {aside}")
            barrier()
            if self.rank == 0:
                run_dir.mkdir(parents=True, exist_ok=True)
                atomic_write_text(saved, _yaml(self.config_dict))
        barrier()

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
        self.ckpt.write_phases(self.state)

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
        packed = resolve_layout(self.cfg.grpo.layout, device()) == "packed"
        return load_policy(folder, dtype=self.cfg.model.dtype, attn=self.cfg.model.attn_implementation,
                           device=device(), init=init, seed=self.cfg.run.seed, packed=packed, **kw)

    def run(self) -> dict:
        cfg = self.cfg
        t_start = time.time()
        summary_path = self.run_dir / "summary.json"
        done = self.ckpt.steps()
        if summary_path.is_file() and done and done[0] >= cfg.grpo.steps and \
                self.ckpt.verify(done[0], config_hash=self.config_hash) is None:
            self._log(f"{self.run_dir} has finished its {cfg.grpo.steps} GRPO steps ({summary_path}); nothing to do")
            return json.loads(summary_path.read_text()) if self.rank == 0 else None
        base = self.base_model_folder()
        cold = self.cold_start(base)
        from relate_fast.rewards.embedding import make_encoder

        encoder = make_encoder(cfg.reward.encoder)
        same = cfg.ctcvr.encoder == cfg.reward.encoder  # one model in memory when both use the same
        ctcvr_encoder = encoder if same else make_encoder(cfg.ctcvr.encoder)
        self.encoders = [encoder] if same else [encoder, ctcvr_encoder]
        ctcvr = self.ctcvr_model(ctcvr_encoder)
        policy, tok = self._load(cold)
        if cfg.model.gradient_checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.tok = tok
        from relate_fast.rewards.judge import judge_from_config

        t = time.time()
        judge = judge_from_config(cfg.reward, device=device(), dtype=cfg.model.dtype)
        if judge is not None:
            self._log(f"judge: {cfg.reward.judge_model} on {cfg.reward.judge_engine} ({time.time() - t:.1f} s); "
                      f"judged: correctness{', relevance' if cfg.reward.judge_relevance else ''}")
        self.reward_fn = RewardFunction.from_config(cfg.reward, tokenizer=tok, encoder=encoder, ctcvr=ctcvr,
                                                    judge=judge, vocab_size=policy.config.vocab_size)
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
        fuse_layers(policy, cfg.model.fused_layers, generates=self.rollout.name == "hf")
        self._log(f"rollout engine: {self.rollout.name} (started in {self.rollout_init_s:.1f} s); reward preset "
                  f"{cfg.reward.preset}; world size {self.world}; update: {resolve_layout(cfg.grpo.layout, device())} "
                  f"layout, attention {policy.config._attn_implementation}")
        self.updater = PolicyUpdater(policy, cfg, self.world)
        self.rollout.ensure_weights(self.updater.model)  # dummy weights: the policy's go in first
        self.step = GRPOStep(cfg, rollout=self.rollout, updater=self.updater, reward_fn=self.reward_fn, tokenizer=tok,
                             reference=reference, rank=self.rank, world=self.world)
        if not self._phase_done("eval_baseline"):
            if self.rank == 0 and cfg.eval.enabled:
                self.state["baseline"] = self.evaluate(self.updater.model, "baseline")
            self._mark("eval_baseline")
        start = self._restore()
        self._truncate_metrics(start)
        # What exists now lives for the whole run (models, compiled graphs, tokenizer, data). vLLM's sleep
        # and wake each run a full gc.collect(), which would scan all of it every step: frozen, a
        # collection scans only what the steps create.
        gc.collect()
        gc.freeze()
        nan_run = 0
        bar = self._progress(range(start, cfg.grpo.steps), desc="GRPO", initial=start, total=cfg.grpo.steps)
        try:
            with _StopRequests(self._log) as stop:
                for step in bar:
                    metrics = self.grpo_step(step)
                    self._write_metrics(metrics)
                    if not math.isfinite(metrics["loss"]):
                        nan_run += 1
                        warnings.warn(f"GRPO step {step + 1}: non-finite loss, step skipped ({nan_run} in a row)")
                        if nan_run >= cfg.run.max_nan_steps:
                            raise FloatingPointError(
                                f"{nan_run} consecutive non-finite losses (run.max_nan_steps); the checkpoint of "
                                f"step {self.saved_step} in {self.ckpt.root} is kept")
                    else:
                        nan_run = 0
                    if hasattr(bar, "set_postfix"):
                        bar.set_postfix(reward=f"{metrics['reward/total']:.3f}", loss=f"{metrics['loss']:.4f}")
                    stopping = not all_ranks_true(stop.count == 0)
                    every = cfg.run.checkpoint_every
                    last = step + 1 == cfg.grpo.steps and cfg.run.save_final
                    if stopping or (every and (step + 1) % every == 0) or last:
                        self.checkpoint(step + 1)
                    if stopping:
                        raise KeyboardInterrupt
        except KeyboardInterrupt:
            self._log(f"stopped; the run resumes from the checkpoint of step {self.saved_step} "
                      f"({self.ckpt.folder(self.saved_step) if self.saved_step else 'none yet: from the start of GRPO'})")
            raise
        finally:
            gc.unfreeze()  # what the loop kept alive can be collected again once the trainer is dropped
        summary = None
        if self.rank == 0:
            summary = {"steps": cfg.grpo.steps, "rollout_engine": self.rollout.name, "preset": cfg.reward.preset,
                       "world_size": self.world, "rollout_engine_start_s": round(self.rollout_init_s, 1)}
            if cfg.eval.enabled:
                summary.update(baseline=self.state.get("baseline"), final=self.evaluate(self.updater.model, "final"))
            summary["seconds"] = round(time.time() - t_start, 1)
            if cfg.run.save_final:
                final = self.run_dir / "final"
                tmp = self.run_dir / ".final.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                self.updater.model.save_pretrained(tmp)
                tok.save_pretrained(tmp)
                shutil.rmtree(final, ignore_errors=True)
                tmp.rename(final)
            atomic_write_text(summary_path, json.dumps(summary, indent=2))
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

    def _restore(self) -> int:
        """The GRPO phase starts from the same RNG state and empty embedding caches whatever ran before in
        this process; then the newest intact checkpoint, if any, restores everything that changes the next
        step's numbers. Returns the step to continue from."""
        _seed_all(self.cfg.run.seed + 7_919)
        for enc in self.encoders:
            enc.clear_cache()
        self.ckpt.clean_partial()
        step, folder = self.ckpt.latest_valid(config_hash=self.config_hash, log=self._log)
        if folder is None:
            if self.ckpt.steps():
                raise CheckpointError(f"no checkpoint in {self.ckpt.root} is intact (see above); move the folder "
                                      f"aside to start GRPO over")
            self.rollout.ensure_weights(self.updater.model)  # the evaluation's sleep may have discarded them
            return 0
        self.updater.load(folder)
        state = self.ckpt.read_rank_state(folder)
        _set_rng_state(state["rng"])
        self.reward_fn.load_state_dict(state)
        for enc, cache in zip(self.encoders, state.get("encoder_caches", [])):
            enc.load_cache_state(cache)
        self.rollout.mark_stale()
        self.rollout.ensure_weights(self.updater.model)
        self.saved_step = step
        self._log(f"restored GRPO step {step} from {folder}")
        return step

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
            raise RolloutError(f"{e}. The checkpoint in {self.ckpt.root} holds step {self.saved_step}; run the "
                               f"same command again to resume.") from e.__cause__
        every = self.cfg.run.check_replicas_every
        if every and (step + 1) % every == 0:
            ok, lo, hi = replicas_identical(self.updater.model)
            if not ok:
                raise RuntimeError(f"parameters differ across ranks after GRPO step {step + 1} (checksums {lo} .. {hi})")
        return {"step": step + 1, **metrics}

    # -- checkpoints, metrics ---------------------------------------------------------------------
    def checkpoint(self, step: int):
        """The state after GRPO step `step`, written atomically (relate_fast.checkpoint)."""
        state = {"step": step, "rng": _rng_state(), **self.reward_fn.state_dict(),
                 "encoder_caches": [enc.cache_state() for enc in self.encoders]}

        def write(folder: Path):
            self.updater.save(folder, {"step": step}, rank=self.rank)
            self.ckpt.write_rank_state(folder, state)

        t = time.time()
        folder = self.ckpt.save(step, write, config_hash=self.config_hash)
        self.saved_step = step
        if self.rank == 0:  # a large policy's checkpoint takes minutes: say what it cost
            self._log(f"checkpoint of step {step}: {self.ckpt.last_saved_bytes / 2**30:.2f} GiB "
                      f"in {time.time() - t:.1f} s ({folder})")

    def _write_metrics(self, m: dict):
        if self.rank != 0:
            return
        with open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps(m) + "\n")
            f.flush()
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
        """Keeps the lines of steps <= `step`. A partial last line (what a crash mid-write leaves) is cut;
        a malformed line elsewhere is an error naming the file and line."""
        path = self.run_dir / "metrics.jsonl"
        if self.rank != 0 or not path.is_file():
            return
        lines = path.read_text(encoding="utf-8").split("\n")
        complete = lines[:-1]  # the text after the last newline is never a complete line
        if lines[-1].strip():
            self._log(f"{path}: cutting a partial last line ({len(lines[-1])} characters)")
        keep = []
        for i, line in enumerate(complete, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{i}: not valid JSON ({e.msg}, column {e.colno})") from None
            if row["step"] <= step:
                keep.append(line)
        atomic_write_text(path, "".join(l + "\n" for l in keep))  # fsyncs the file and its folder

    # -- phase 5: evaluation ----------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, model, name: str) -> dict:
        from relate_fast.evaluate import evaluate_texts

        cfg = self.cfg
        rows = self.eval_rows[:cfg.eval.prompts] if cfg.eval.prompts else self.eval_rows
        pids = [self._prompt(r) for r in rows]
        self.rollout.ensure_weights(self.updater.model)
        comps = self.rollout.generate(pids, cfg.eval.samples, max_new_tokens=cfg.rollout.max_new_tokens,
                                      temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p, seed=10**9 + 7)
        flat_rows = [r for r in rows for _ in range(cfg.eval.samples)]
        flat = [c for g in comps for c in g]
        texts = self.tok.batch_decode(flat, skip_special_tokens=True)
        res = evaluate_texts(flat_rows, texts, flat, cfg.reward, self.reward_fn.ctx, group_size=cfg.eval.samples,
                             sim_seed=cfg.run.seed)
        if self.rank == 0:
            atomic_write_text(self.run_dir / f"eval_{name}.json", json.dumps(res, indent=2))
            atomic_write_text(self.run_dir / f"samples_{name}.jsonl", "".join(
                json.dumps({"id": r.id, "text": t}, ensure_ascii=False) + "\n" for r, t in zip(flat_rows, texts)))
        self._log(f"eval {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in res.items() if isinstance(v, float)))
        return res
