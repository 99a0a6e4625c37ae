"""The RELATE trainer: cold start, CTCVR model, GRPO with DeepSpeed ZeRO-2 and vLLM rollouts, evaluation.

Phases (each one resumable; finished phases are recorded in <run>/checkpoint/state.json):
  1. policy: the embedded tiny Qwen3 (built once, cached) or the weights at model.path;
  2. cold start: supervised fine-tuning on the reference ads -> <run>/cold_start (also the reference
     policy of the KL term and the rollout engine's starting weights);
  3. CTCVR model trained on click-simulator logs -> <run>/ctcvr (unless ctcvr.model is given);
  4. GRPO: rollouts (vLLM, or HF generate) -> rewards -> group advantages + token rewards -> fused
     loss on the last hidden states in the DeepSpeed engine -> step -> weights pushed to vLLM;
  5. evaluation of the cold-start and the final policy -> summary.json, plots.
"""
from __future__ import annotations

import json
import logging
import math
import os
import pickle
import random
import shutil
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from relate_fast.config import Config, config_to_dict
from relate_fast.data.ads import AdPrompt, load_ads
from relate_fast.grpo import completion_hidden, grpo_micro_loss, micro_batches, pack, sequence_logprobs
from relate_fast.loss import group_advantages
from relate_fast.models import build_tiny_model, load_policy, prompt_ids
from relate_fast.rewards import RewardFunction, RolloutBatch

log = logging.getLogger("relate_fast")


class RolloutError(RuntimeError):
    """The rollout engine failed; the checkpoint holds the last finished step."""


# --------------------------------------------------------------------------- distributed


def init_distributed():
    """torch.distributed from torchrun's environment, or a one-process group (DeepSpeed needs one)."""
    import torch.distributed as dist

    if dist.is_initialized():  # e.g. by an in-process vLLM engine; DeepSpeed still reads LOCAL_RANK
        os.environ.setdefault("LOCAL_RANK", "0" if dist.get_world_size() == 1 else str(dist.get_rank()))
        return dist.get_rank(), dist.get_world_size()
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1",
                          MASTER_PORT=str(29500 + os.getpid() % 1000))
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    return dist.get_rank(), dist.get_world_size()


def _device():
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


# --------------------------------------------------------------------------- the policy engine


class PolicyEngine:
    """The policy under DeepSpeed ZeRO-2 (or plain torch), with explicit accumulation boundaries."""

    def __init__(self, model, cfg: Config, world: int):
        self.cfg, self.world = cfg, world
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.grpo.lr, weight_decay=cfg.grpo.weight_decay,
                                betas=(0.9, 0.99))
        self.deepspeed = cfg.deepspeed.enabled
        if self.deepspeed:
            import importlib

            import deepspeed

            # The CPU shared-memory comm op JIT-compiles for minutes; gloo is enough. (`import
            # deepspeed.comm.torch as m` would bind the torch package: deepspeed.comm imports torch.)
            importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
            ds = cfg.deepspeed
            ds_cfg = {
                "train_micro_batch_size_per_gpu": 1,
                "gradient_accumulation_steps": 1,  # boundaries are set explicitly per step (token-budget micro-batches)
                "gradient_clipping": cfg.grpo.max_grad_norm,
                "zero_optimization": {"stage": ds.zero_stage, "overlap_comm": ds.overlap_comm and torch.cuda.is_available(),
                                      "reduce_bucket_size": ds.reduce_bucket_size,
                                      "allgather_bucket_size": ds.allgather_bucket_size, "contiguous_gradients": True},
                "bf16": {"enabled": cfg.model.dtype == "bfloat16"},
                "zero_allow_untested_optimizer": True,
                "steps_per_print": 10**9,
                "wall_clock_breakdown": False,
            }
            self.engine, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=ds_cfg)
            self.module = self.engine.module
        else:
            self.engine, self.optimizer, self.module = model, opt, model
            if world > 1:
                self.engine = torch.nn.parallel.DistributedDataParallel(model)

    def set_lr(self, lr: float):
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def backward(self, loss, boundary: bool):
        if self.deepspeed:
            self.engine.set_gradient_accumulation_boundary(boundary)
            self.engine.backward(loss)
        else:
            loss.backward()

    def step(self) -> float:
        if self.deepspeed:
            self.engine.step()
            gn = self.engine.get_global_grad_norm()
            return float(gn) if gn is not None else float("nan")
        gn = torch.nn.utils.clip_grad_norm_(self.module.parameters(), self.cfg.grpo.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(gn)

    def discard_gradients(self):
        if self.deepspeed:
            self.engine.zero_grad()
            self.engine.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.zero_grad(set_to_none=True)

    def save(self, folder: Path, client_state: dict):
        if self.deepspeed:
            self.engine.save_checkpoint(str(folder), tag="policy", client_state=client_state)
        else:
            torch.save({"model": self.module.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "client_state": client_state}, folder / "policy.pt")

    def load(self, folder: Path) -> dict:
        if self.deepspeed:
            _, client = self.engine.load_checkpoint(str(folder), tag="policy")
            return client
        state = torch.load(folder / "policy.pt", map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return state["client_state"]


# --------------------------------------------------------------------------- helpers


def _progress(it, cfg: Config, rank: int, **kw):
    if not cfg.run.progress or rank != 0:
        return it
    from tqdm import tqdm

    return tqdm(it, file=sys.stderr, dynamic_ncols=True, **kw)


@contextmanager
def _timer(times: dict, key: str):
    t = time.perf_counter()
    yield
    times[key] = times.get(key, 0.0) + time.perf_counter() - t


def _rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def _set_rng_state(s: dict):
    random.setstate(s["python"])
    np.random.set_state(s["numpy"])
    torch.set_rng_state(s["torch"])


class Trainer:
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
        if cfg.rollout.group_size < 2:
            raise ValueError(f"rollout.group_size must be >= 2 (GRPO compares responses within a group), "
                             f"got {cfg.rollout.group_size}")

    # -- bookkeeping ------------------------------------------------------------------------------
    def _log(self, msg: str):
        if self.rank == 0:
            print(f"[relate_fast] {msg}", file=sys.stderr, flush=True)

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
        self._barrier()
        return build_tiny_model(self.cfg.model.tiny, cache, seed=self.cfg.run.seed)

    def _barrier(self):
        import torch.distributed as dist

        if dist.is_initialized() and self.world > 1:
            dist.barrier()

    # -- phase 2: supervised cold start -------------------------------------------------------------
    def cold_start(self, base: Path) -> Path:
        out = self.run_dir / "cold_start"
        if self._phase_done("cold_start"):
            return out
        model, tok = load_policy(base, dtype=self.cfg.model.dtype, attn=self.cfg.model.attn_implementation,
                                 device=_device())
        sft = self.cfg.sft
        if sft.steps > 0:
            rows = [r for r in self.rows if r.reference]
            opt = torch.optim.AdamW(model.parameters(), lr=sft.lr, weight_decay=0.0)
            sched = torch.optim.lr_scheduler.LambdaLR(
                opt, lambda s: min(1.0, (s + 1) / 10) * 0.5 * (1 + math.cos(math.pi * s / sft.steps)))
            rng = random.Random(self.cfg.run.seed + 1)
            model.train()
            bar = _progress(range(sft.steps), self.cfg, self.rank, desc="cold start (SFT)")
            for step in bar:
                batch = rng.sample(rows, min(sft.batch_size, len(rows)))
                p = [prompt_ids(tok, r.prompt) for r in batch]
                c = [tok.encode(r.reference, add_special_tokens=False) + [tok.eos_token_id] for r in batch]
                packed = pack(p, c, tok.pad_token_id)
                h = completion_hidden(model, packed)
                logits = torch.nn.functional.linear(h, model.lm_head.weight).float()
                loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), packed.targets.to(h.device).flatten(),
                                                         reduction="none")
                loss = (loss * packed.mask.to(h.device).flatten()).sum() / packed.mask.sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                opt.step()
                sched.step()
                if hasattr(bar, "set_postfix") and step % 10 == 0:
                    bar.set_postfix(loss=f"{loss.item():.3f}")
            self._log(f"cold start: {sft.steps} steps, final SFT loss {loss.item():.3f}")
        if self.rank == 0:
            tmp = out.with_name("cold_start.tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            model.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            shutil.rmtree(out, ignore_errors=True)
            tmp.rename(out)
        self._barrier()
        self._mark("cold_start")
        return out

    # -- phase 3: the CTCVR model -----------------------------------------------------------------
    def ctcvr_model(self, encoder):
        from relate_fast.rewards.ctcvr import CTCVRModel, ImpressionTable, train_ctcvr
        from relate_fast.sim import simulate_log

        if self.cfg.ctcvr.model is not None:
            return CTCVRModel.load(self.cfg.ctcvr.model, encoder=encoder)
        out = self.run_dir / "ctcvr"
        if self._phase_done("ctcvr"):
            return CTCVRModel.load(out, encoder=encoder)
        c = self.cfg.ctcvr
        if self.rank == 0:
            t = time.time()
            logs = simulate_log(self.rows, variants=c.variants, impressions=c.impressions, seed=self.cfg.run.seed)
            table = ImpressionTable.from_logs(logs)
            train, held = table.split(0.15, self.cfg.run.seed)
            model = train_ctcvr(train, encoder, epochs=c.epochs, seed=self.cfg.run.seed, progress=self.cfg.run.progress)
            blind = train_ctcvr(train, encoder, epochs=c.epochs, seed=self.cfg.run.seed, text_blind=True)
            model.info = {"held_out": model.evaluate(held), "text_blind_held_out": blind.evaluate(held),
                          "impressions": int(table.impressions.sum())}
            model.save(out)
            m, b = model.info["held_out"], model.info["text_blind_held_out"]
            self._log(f"CTCVR model: {model.info['impressions']} simulated impressions, held-out CTCVR AUC "
                      f"{m['ctcvr_auc']:.3f} (text-blind {b['ctcvr_auc']:.3f}), {time.time() - t:.0f} s")
        self._barrier()
        self._mark("ctcvr")
        return CTCVRModel.load(out, encoder=encoder)

    # -- phase 4: GRPO ----------------------------------------------------------------------------
    def run(self) -> dict:
        cfg = self.cfg
        t_start = time.time()
        base = self.base_model_folder()
        cold = self.cold_start(base)
        from relate_fast.rewards.embedding import make_encoder

        encoder = make_encoder(cfg.reward.encoder)
        same = cfg.ctcvr.encoder == cfg.reward.encoder  # one model in memory when both use the same
        ctcvr = self.ctcvr_model(encoder if same else make_encoder(cfg.ctcvr.encoder))
        policy, tok = load_policy(cold, dtype=cfg.model.dtype, attn=cfg.model.attn_implementation, device=_device())
        if cfg.model.gradient_checkpointing:
            policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        self.tok = tok
        self.reward_fn = RewardFunction.from_config(cfg.reward, tokenizer=tok, encoder=encoder, ctcvr=ctcvr,
                                                    vocab_size=policy.config.vocab_size)
        ref = None
        if cfg.grpo.beta != 0:
            ref, _ = load_policy(cold, dtype=cfg.model.dtype, attn=cfg.model.attn_implementation, device=_device())
            ref.eval().requires_grad_(False)
        self._prompt_cache: Dict[str, List[int]] = {}
        from relate_fast.rollout import make_engine

        self.engine = make_engine(cfg.rollout, model_folder=cold, tokenizer=tok, policy=policy, dtype=cfg.model.dtype,
                                  seed=cfg.run.seed, max_model_len=cfg.data.max_prompt_tokens + cfg.rollout.max_new_tokens + 8)
        self._log(f"rollout engine: {self.engine.name}; reward preset {cfg.reward.preset}; world size {self.world}")
        self.policy = PolicyEngine(policy, cfg, self.world)
        if self.rank == 0 and cfg.eval.enabled and not self._phase_done("eval_baseline"):
            baseline = self.evaluate(self.policy.module, "baseline")
            self.state["baseline"] = baseline
        if not self._phase_done("eval_baseline"):
            self._mark("eval_baseline")
        if self.state["step"] > 0:
            client = self.policy.load(self.ckpt_dir)
            _set_rng_state(client["rng"])
            self.reward_fn.ctx.ngrams = pickle.loads(client["ngrams"]) if client.get("ngrams") else self.reward_fn.ctx.ngrams
            self.engine.push_weights(self.policy.module)
            self._log(f"restored GRPO step {self.state['step']} from {self.ckpt_dir}")
        self._truncate_metrics(self.state["step"])
        nan_run = 0
        bar = _progress(range(self.state["step"], cfg.grpo.steps), cfg, self.rank, desc="GRPO", initial=self.state["step"],
                        total=cfg.grpo.steps)
        try:
            for step in bar:
                metrics = self.grpo_step(step, ref)
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
            summary = {"steps": cfg.grpo.steps, "rollout_engine": self.engine.name, "preset": cfg.reward.preset}
            if cfg.eval.enabled:
                summary.update(baseline=self.state.get("baseline"), final=self.evaluate(self.policy.module, "final"))
            summary["seconds"] = round(time.time() - t_start, 1)
            (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
            self.policy.module.save_pretrained(self.run_dir / "final")
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
        self._barrier()
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

    def grpo_step(self, step: int, ref) -> dict:
        cfg, tok = self.cfg, self.tok
        G = cfg.rollout.group_size
        times: Dict[str, float] = {}
        t0 = time.perf_counter()
        rows = self._step_prompts(step)
        with _timer(times, "rollout"):
            pids = [self._prompt(r) for r in rows]
            try:
                comps = self.engine.generate(pids, G, max_new_tokens=cfg.rollout.max_new_tokens,
                                             temperature=cfg.rollout.temperature, top_p=cfg.rollout.top_p,
                                             seed=cfg.run.seed * 1_000_003 + step * self.world + self.rank)
            except Exception as e:  # noqa: BLE001 - any engine failure ends the run the same way
                raise RolloutError(f"rollout engine {self.engine.name!r} failed at GRPO step {step + 1}: "
                                   f"{type(e).__name__}: {e}. The checkpoint in {self.ckpt_dir} holds step "
                                   f"{self.state['step']}; run the same command again to resume.") from e
        flat_rows = [r for r in rows for _ in range(G)]
        flat_prompts = [p for p in pids for _ in range(G)]
        flat_comps = [c for group in comps for c in group]
        with _timer(times, "rewards"):
            texts = tok.batch_decode(flat_comps, skip_special_tokens=True)
            batch = RolloutBatch(flat_rows, texts, flat_comps, group_size=G)
            rew = self.reward_fn(batch, ngram_batch=self._global_batch(batch))
            adv = group_advantages(torch.from_numpy(rew.sentence).float(), G)
            packed = pack(flat_prompts, flat_comps, tok.pad_token_id)
            C = packed.targets.shape[1]
            tok_rewards = torch.from_numpy(rew.token_matrix(C)) if rew.token is not None else None
        budget = cfg.grpo.micro_batch_tokens
        with _timer(times, "old_logprobs"):
            old_lp = sequence_logprobs(self.policy.module, packed, budget, temperature=cfg.rollout.temperature)
        ref_lp = None
        if ref is not None:
            with _timer(times, "ref_logprobs"):
                ref_lp = sequence_logprobs(ref, packed, budget, temperature=cfg.rollout.temperature)
        lr = cfg.grpo.lr * min(1.0, (step + 1) / max(cfg.grpo.warmup_steps, 1))
        self.policy.set_lr(lr)
        with _timer(times, "update"):
            slices = micro_batches(packed, budget)
            total_tokens = float(packed.mask.sum())
            loss_sum, finite, agg, ntok = 0.0, True, {}, 0.0
            self.policy.module.train()
            for k, s in enumerate(slices):
                loss, m, n = grpo_micro_loss(
                    self.policy.module, packed, s, adv, token_rewards=tok_rewards, alpha=cfg.reward.alpha,
                    old_logprobs=old_lp, ref_logprobs=ref_lp, beta=cfg.grpo.beta, eps_low=cfg.grpo.eps_low,
                    eps_high=cfg.grpo.eps_high, temperature=cfg.rollout.temperature, loss_type=cfg.grpo.loss_type,
                    total_rows=packed.targets.shape[0], total_tokens=total_tokens,
                    max_completion_length=cfg.rollout.max_new_tokens)
                if not torch.isfinite(loss):
                    finite = False
                    loss = loss.nan_to_num(0.0) * 0.0  # still run backward so every rank reaches the boundary
                self.policy.backward(loss, boundary=k == len(slices) - 1)
                loss_sum += loss.item()
                for key, v in m.items():
                    agg[key] = agg.get(key, 0.0) + float(v) * n
                ntok += n
            finite = self._all_ranks(finite)
            grad_norm = self.policy.step() if finite else (self.policy.discard_gradients() or float("nan"))
        if cfg.run.check_replicas_every and (step + 1) % cfg.run.check_replicas_every == 0:
            self._check_replicas()
        with _timer(times, "weight_push"):
            self.engine.push_weights(self.policy.module)
        times["total"] = time.perf_counter() - t0
        lengths = [len(c) for c in flat_comps]
        metrics = {"step": step + 1, "loss": loss_sum if finite else float("nan"), "lr": lr, "grad_norm": grad_norm,
                   **{k: v / max(ntok, 1) for k, v in agg.items()}, **rew.metrics(),
                   "adv_abs_mean": float(adv.abs().mean()), "response_tokens_mean": float(np.mean(lengths)),
                   "eos_rate": float(np.mean([bool(c) and c[-1] == tok.eos_token_id for c in flat_comps])),
                   **{f"time/{k}": v for k, v in times.items()},
                   "tokens_per_second": float(packed.mask.sum() + sum(len(p) for p in flat_prompts)) / times["total"]}
        if torch.cuda.is_available():
            metrics["gpu_mem_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
            torch.cuda.reset_peak_memory_stats()
        return metrics

    def _global_batch(self, batch: RolloutBatch) -> Optional[RolloutBatch]:
        """Every rank's responses (rank order), so the n-gram window — and with it G_high — is the same
        on every rank; groups themselves never leave their rank."""
        if self.world == 1:
            return None
        import torch.distributed as dist

        parts = [None] * self.world
        dist.all_gather_object(parts, (list(batch.prompts), list(batch.texts), [list(x) for x in batch.token_ids]))
        rows = [r for p in parts for r in p[0]]
        return RolloutBatch(rows, [t for p in parts for t in p[1]], [x for p in parts for x in p[2]],
                            group_size=batch.group_size)

    def _check_replicas(self) -> bool:
        """True when every rank holds the same parameters (a checksum compared across ranks)."""
        import torch.distributed as dist

        with torch.no_grad():
            s = torch.stack([p.detach().double().sum() for p in self.policy.module.parameters()]).sum().reshape(1)
            s = s.to(_device())
            lo, hi = s.clone(), s.clone()
            if self.world > 1:
                dist.all_reduce(lo, op=dist.ReduceOp.MIN)
                dist.all_reduce(hi, op=dist.ReduceOp.MAX)
        if lo.item() != hi.item():
            raise RuntimeError(f"parameters differ across ranks after the update (checksums {lo.item()} .. {hi.item()})")
        return True

    def _all_ranks(self, ok: bool) -> bool:
        import torch.distributed as dist

        if self.world == 1:
            return ok
        t = torch.tensor([0 if ok else 1], device=_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() == 0)

    # -- checkpoints, metrics ---------------------------------------------------------------------
    def checkpoint(self):
        client = {"rng": _rng_state(), "ngrams": pickle.dumps(self.reward_fn.ctx.ngrams) if self.reward_fn.ctx.ngrams else None,
                  "step": self.state["step"]}
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        self.policy.save(self.ckpt_dir, client)
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
        comps = self.engine.generate(pids, cfg.eval.samples, max_new_tokens=cfg.rollout.max_new_tokens,
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
