"""One GRPO step as a chain of stages over one typed batch that stays on the device.

    sample ──► score ──► advantages ──► log-probs ──► update ──► push
    rollout    sentence    eq. 8 + α·r_tok  old (only with    mini-batches ×   new weights
    engine     + token     (on the device)  several updates)  epochs of whole  into the
               rewards                      and reference     groups           rollout engine

`GRPOStep` holds what a step needs (the config, the rollout engine, the policy updater, the reward
function, the tokenizer, the reference model when β > 0) and knows nothing of phases, checkpoints or
files: `relate_fast.trainer.Trainer` drives it. Each stage is a method that fills a `StepBatch`, so
a stage can be run and tested on its own; `run` chains them and times them.

Token ids and texts live on the host (the rewards read them there); once scored, the batch's tensors
(packed ids, advantages, token rewards, old and reference log-probs) are on the policy's device and
stay there until the update has consumed them. The only host syncs of the update are one per
optimizer step (the all-ranks finite check and the gradient norm) and the metrics at the end.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch

from relate_fast.distributed import all_gather_objects, all_ranks_true, all_reduce, device, job_size, max_over_ranks
from relate_fast.batching import (PackedBatch, grpo_micro_loss, loss_weights, micro_batches, pack, packed_micro_loss,
                              resolve_layout, sequence_logprobs)
from relate_fast.config import sampler_correction, samples_in_background
from relate_fast.loss import ADVANTAGE_ESTIMATORS, non_finite_on_mask
from relate_fast.rollout.background import BackgroundSampler
from relate_fast.rollout.batch import RolloutBatch

__all__ = ["StepBatch", "GRPOStep", "RolloutError", "lr_at", "sample_completions"]


class RolloutError(RuntimeError):
    """The rollout engine failed during a step."""


@dataclass
class StepBatch:
    """The responses of one step on this rank: `group_size` consecutive rows per prompt."""

    prompts: Sequence  # [B] AdPrompt each response answers
    prompt_ids: List[List[int]]  # [B]
    completion_ids: List[List[int]]  # [B], EOS included where the policy stopped
    group_size: int
    packed: Optional[PackedBatch] = None  # on the device after `score`
    rewards: Optional[object] = None  # RewardOutput (host): r_i, components, compliance
    advantages: Optional[torch.Tensor] = None  # [B] A_sent, device
    token_rewards: Optional[torch.Tensor] = None  # [B, C] r_tok, device (None: no token component)
    old_logprobs: Optional[torch.Tensor] = None  # [B, C] device; None: on-policy (ρ ≡ 1)
    ref_logprobs: Optional[torch.Tensor] = None  # [B, C] device; None: β = 0
    # the engine's log-probs of its samples: host lists after `sample`, [B, C] on the device after `score`
    # (None: grpo.sampler_correction off)
    sampler_logprobs: Optional[object] = None
    judge_unparsed: Optional[float] = None  # share of the judge's replies without a score (None: no judge)
    weights_version: int = 0  # updates applied to the weights that sampled it (rollout.mode one_step_off)

    def __len__(self) -> int:
        return len(self.completion_ids)

    @property
    def num_groups(self) -> int:
        return len(self) // self.group_size

    def select(self, rows: slice) -> "StepBatch":
        """Rows `rows` (whole groups), every [B, C] tensor trimmed to the rows' longest completion."""
        packed = self.packed.rows(rows)
        C = packed.targets.shape[1]

        def cut(x):
            return None if x is None else x[rows, :C]

        return replace(self, prompts=self.prompts[rows], prompt_ids=self.prompt_ids[rows],
                       completion_ids=self.completion_ids[rows], packed=packed,
                       advantages=None if self.advantages is None else self.advantages[rows],
                       token_rewards=cut(self.token_rewards), old_logprobs=cut(self.old_logprobs),
                       ref_logprobs=cut(self.ref_logprobs), sampler_logprobs=cut(self.sampler_logprobs))


def sample_completions(cfg, engine, index: int, prompt_ids: Sequence[List[int]], *, rank: int, world: int):
    """(completions, their log-probs or None): G per prompt, flat, for GRPO step `index` of training rank
    `rank` of `world`, seeded by (run seed, step, rank) so that whoever samples them gets the same."""
    r = cfg.rollout
    # the kwarg only when asked: an engine written before it keeps working with the correction off
    want = {"logprobs": True} if sampler_correction(cfg) != "off" else {}
    try:
        groups = engine.generate(prompt_ids, r.group_size, max_new_tokens=r.max_new_tokens, temperature=r.temperature,
                                 top_p=r.top_p, seed=cfg.run.seed * 1_000_003 + index * world + rank, **want)
    except Exception as e:  # noqa: BLE001 - any engine failure ends the step the same way
        raise RolloutError(f"rollout engine {engine.name!r} failed at GRPO step {index + 1}: "
                           f"{type(e).__name__}: {e}") from e
    lps = [lp for group in engine.last_logprobs for lp in group] if want else None
    return [list(c) for group in groups for c in group], lps


def _sync():
    # this thread's stream only: a device-wide synchronize would also wait for the background sampler's
    if torch.cuda.is_available():
        torch.cuda.current_stream().synchronize()


class GRPOStep:
    def __init__(self, cfg, *, rollout, updater, reward_fn, tokenizer, reference=None, rank: int = 0, world: int = 1,
                 memory_plan=None):
        self.cfg, self.rollout, self.updater, self.reward_fn, self.tok = cfg, rollout, updater, reward_fn, tokenizer
        self.reference, self.rank, self.world = reference, rank, world
        # model.auto_checkpointing: the plan, and the layers each micro-batch of this step checkpointed
        self.memory_plan = memory_plan
        self._checkpointed = memory_plan.checkpointed_layers if memory_plan else None
        self._ckpt_seen: List[tuple] = []  # (tokens, checkpointed layers) per micro-batch
        if cfg.grpo.beta != 0 and reference is None:
            raise ValueError("grpo.beta > 0 needs the reference policy")
        self.packed_layout = resolve_layout(cfg.grpo.layout, device()) == "packed"
        self.correction = sampler_correction(cfg)
        self.weights_version = 0  # finite updates applied so far: the version of the weights that sample next
        # one_step_off: the batch sampled for the next step, with the weights before this step's update
        self.pending: Optional[dict] = None
        # rollout.overlap thread: that batch is sampled in a background thread during the update
        self.ahead = BackgroundSampler() if samples_in_background(cfg.rollout) else None
        # rollout.sampler_ranks: the batches come from ranks that only sample (relate_fast.rollout.split)
        self.link = None

    # what a checkpoint keeps of the step: the weights' version and the batch waiting for the next step
    def state_dict(self) -> dict:
        return {"weights_version": self.weights_version, "pending": self.pending}

    def load_state_dict(self, state: dict) -> None:
        self.weights_version = state.get("weights_version", 0)
        self.pending = state.get("pending")

    @property
    def updates_per_batch(self) -> int:
        return self.cfg.grpo.mini_batches * self.cfg.grpo.epochs

    def start_sampling_ranks(self, link, start: int, steps: int, folder, init: str) -> None:
        """A job with sampling ranks begins GRPO at step `start` of `steps`: the samplers get the policy's
        folder and weights, and sample the first batch unless the checkpoint holds it (with no step left
        to run, they are told to stop)."""
        if start >= steps:
            link.finish()
            return
        self.link = link
        need_first = self.pending is None or self.pending["index"] != start
        link.send_weights(self.updater.model, self.weights_version, start=start, need_first=need_first,
                          folder=str(folder), init=init)
        if need_first:
            self.pending = link.receive_batch(start)

    def stop_sampling_ranks(self) -> None:
        """The samplers leave their loop (after the last step or at a stop request)."""
        if self.link is not None:
            self.link.finish()

    # -- stages -----------------------------------------------------------------------------------
    def sample(self, index: int, prompts: Sequence, prompt_ids: Sequence[List[int]]) -> StepBatch:
        """G completions per prompt from the rollout engine, with a seed per (step, rank)."""
        G = self.cfg.rollout.group_size
        comp, lps = sample_completions(self.cfg, self.rollout, index, prompt_ids, rank=self.rank, world=self.world)
        return StepBatch(prompts=[r for r in prompts for _ in range(G)],
                         prompt_ids=[list(p) for p in prompt_ids for _ in range(G)],
                         completion_ids=comp, group_size=G, sampler_logprobs=lps, weights_version=self.weights_version)

    def _batch_for(self, index: int, prompts: Sequence, prompt_ids: Sequence[List[int]]) -> StepBatch:
        """Step `index`'s batch: sampled now (sync, or the first step), or the one sampled for it during
        the previous step (one_step_off)."""
        p = self.pending
        if p is None or p["index"] != index:
            return self.sample(index, prompts, prompt_ids)
        self.pending = None
        G = self.cfg.rollout.group_size
        return StepBatch(prompts=[r for r in prompts for _ in range(G)],
                         prompt_ids=[list(x) for x in prompt_ids for _ in range(G)],
                         completion_ids=p["completion_ids"], group_size=G, sampler_logprobs=p["sampler_logprobs"],
                         weights_version=p["weights_version"])

    def _sample_ahead(self, index: int, prompts: Sequence, prompt_ids: Sequence[List[int]]) -> tuple:
        """one_step_off: the next step's batch, sampled with the weights this step learns from: (what
        `pending` keeps of it, {part: seconds} of the sample, "total" included)."""
        t = time.perf_counter()
        b = self.sample(index, prompts, prompt_ids)
        times = {**(getattr(self.rollout, "timings", None) or {}), "total": time.perf_counter() - t}
        return {"index": index, "completion_ids": b.completion_ids, "sampler_logprobs": b.sampler_logprobs,
                "weights_version": b.weights_version}, times

    def score(self, b: StepBatch) -> None:
        """Sentence rewards r_i and token rewards r_tok; packs the batch onto the device. Under data
        parallelism the n-gram window counts every rank's responses, so G_high is the same everywhere
        (groups themselves never leave their rank)."""
        texts = self.tok.batch_decode(b.completion_ids, skip_special_tokens=True)
        local = RolloutBatch(b.prompts, texts, b.completion_ids, group_size=b.group_size)
        everyone = None
        if self.world > 1:
            parts = all_gather_objects((list(b.prompts), list(texts), b.completion_ids))
            everyone = RolloutBatch([r for p in parts for r in p[0]], [t for p in parts for t in p[1]],
                                    [x for p in parts for x in p[2]], group_size=b.group_size)
        b.rewards = self.reward_fn(local, ngram_batch=everyone)
        b.packed = pack(b.prompt_ids, b.completion_ids, self.tok.pad_token_id).to(device())
        if b.sampler_logprobs is not None:  # aligned with the packed completions, zero past each one's end
            lps = torch.zeros(b.packed.targets.shape, dtype=torch.float32)
            for i, lp in enumerate(b.sampler_logprobs):
                lps[i, :len(lp)] = torch.tensor(lp, dtype=torch.float32)
            b.sampler_logprobs = lps.to(device())
        if b.rewards.token is not None:
            C = b.packed.targets.shape[1]
            b.token_rewards = torch.from_numpy(b.rewards.token_matrix(C)).to(device())

    def compute_advantages(self, b: StepBatch) -> None:
        """A_sent from the rewards r_i by grpo.advantage (default: the group z-score, eq. 8), on the
        device; the loss adds α·r_tok."""
        r = torch.from_numpy(np.asarray(b.rewards.sentence, dtype=np.float32)).to(device())
        b.advantages = ADVANTAGE_ESTIMATORS[self.cfg.grpo.advantage](r, b.group_size)

    def compute_logprobs_old(self, b: StepBatch) -> None:
        """Old log-probs, needed only when the batch is updated more than once: with one update ρ ≡ 1
        and the loss takes old = logp detached (no extra forward)."""
        b.old_logprobs = sequence_logprobs(self.updater.model, b.packed, self.cfg.grpo.micro_batch_tokens,
                                           temperature=self.cfg.rollout.temperature, packed=self.packed_layout)

    def compute_logprobs_ref(self, b: StepBatch) -> None:
        """Reference log-probs for the k3 KL term (β > 0)."""
        b.ref_logprobs = sequence_logprobs(self.reference, b.packed, self.cfg.grpo.micro_batch_tokens,
                                           temperature=self.cfg.rollout.temperature, packed=self.packed_layout)

    @staticmethod
    def require_finite_inputs(b: StepBatch, index: int) -> None:
        """Advantages, token rewards and log-probs must be finite on the tokens that count: one check of
        the whole batch per step (one host sync), where the loss would check each micro-batch."""
        found = non_finite_on_mask(b.packed.mask, advantages=b.advantages, token_rewards=b.token_rewards,
                                   old_logprobs=b.old_logprobs, ref_logprobs=b.ref_logprobs,
                                   sampler_logprobs=b.sampler_logprobs)
        if found is not None:
            name, row, _ = found
            raise FloatingPointError(f"GRPO step {index + 1}: {name} has a non-finite value (response {row}); "
                                     f"the policy or a reward produced NaN/inf")

    def update(self, b: StepBatch, lr: float) -> List[Dict[str, object]]:
        """mini_batches × epochs optimizer steps, each on a share of whole groups; returns one record
        per optimizer step (device tensors and floats)."""
        g = self.cfg.grpo
        self.updater.set_lr(lr)
        self.updater.model.train()
        rows = (b.num_groups // g.mini_batches) * b.group_size
        records = []
        self._ckpt_seen = []
        for _ in range(g.epochs):
            for k in range(g.mini_batches):
                records.append(self._optimizer_step(b.select(slice(k * rows, (k + 1) * rows))))
        return records

    def _optimizer_step(self, mb: StepBatch) -> Dict[str, object]:
        cfg = self.cfg
        budget, packed = cfg.grpo.micro_batch_tokens, self.packed_layout
        slices = micro_batches(mb.packed, budget, packed=packed)
        if self.world > 1:  # the same number of backward passes on every rank (see micro_batches)
            slices = micro_batches(mb.packed, budget, count=max_over_ranks(len(slices)), packed=packed)
        total_tokens = float(mb.packed.num_tokens)
        dev = mb.advantages.device
        loss_sum = torch.zeros((), device=dev)
        bad = torch.zeros((), dtype=torch.bool, device=dev)
        sums: Dict[str, torch.Tensor] = {}
        ntok = 0
        common = dict(token_rewards=mb.token_rewards, alpha=cfg.reward.alpha, old_logprobs=mb.old_logprobs,
                      ref_logprobs=mb.ref_logprobs, beta=cfg.grpo.beta, eps_low=cfg.grpo.eps_low,
                      eps_high=cfg.grpo.eps_high, temperature=cfg.rollout.temperature,
                      sampler_logprobs=mb.sampler_logprobs,
                      tis_cap=cfg.grpo.tis_cap if self.correction == "tis" else None)
        if packed:  # every token's weight in the batch's loss, once: the micro-batch losses add up to it
            coef = loss_weights(mb.packed.mask, cfg.grpo.loss_type, total_tokens=total_tokens,
                                max_completion_length=cfg.rollout.max_new_tokens)
        for i, s in enumerate(slices):
            self._fit_checkpointing(mb.packed, s)
            if packed:
                loss, m, n = packed_micro_loss(self.updater.model, mb.packed, s, mb.advantages, coef, **common)
            else:
                loss, m, n = grpo_micro_loss(
                    self.updater.model, mb.packed, s, mb.advantages, **common, loss_type=cfg.grpo.loss_type,
                    total_rows=len(mb), total_tokens=total_tokens, max_completion_length=cfg.rollout.max_new_tokens)
            bad |= ~torch.isfinite(loss.detach())
            # backward even when non-finite: every rank must reach the boundary; the step is discarded
            self.updater.backward(loss, boundary=i == len(slices) - 1)
            loss_sum += loss.detach().float()
            for key, v in m.items():
                if key.endswith("_max"):  # a maximum over the micro-batches, not a token-weighted mean
                    sums[key] = torch.maximum(sums[key], v.detach().float()) if key in sums else v.detach().float()
                else:
                    sums[key] = sums.get(key, 0.0) + v.detach().float() * n
            ntok += n
        finite = all_ranks_true(~bad)
        if finite:
            grad_norm = self.updater.step()
        else:
            self.updater.discard_gradients()
            grad_norm = float("nan")
        return {"loss": loss_sum, "finite": finite, "grad_norm": grad_norm,
                **{k: v if k.endswith("_max") else v / max(ntok, 1) for k, v in sums.items()}}


    # -- the chain ----------------------------------------------------------------------------------
    def run(self, index: int, prompts: Sequence, prompt_ids: Sequence[List[int]], lr: float, *,
            next_prompts: Optional[Sequence] = None, next_prompt_ids: Optional[Sequence[List[int]]] = None) -> dict:
        """Runs every stage for GRPO step `index` (0-based) on this rank's prompts; returns its metrics.
        rollout.mode one_step_off: `next_prompts` (the next step's) are sampled before this step's update,
        with the weights this step starts from."""
        times: Dict[str, float] = {}
        mem = _DeviceMemory()

        @contextmanager
        def stage(name):
            t = time.perf_counter()
            yield
            _sync()
            times[name] = times.get(name, 0.0) + time.perf_counter() - t
            mem.sample()

        t0 = time.perf_counter()
        if self.link is not None and not self.link.weights_sent:
            with stage("weight_push"):  # to the sampling ranks: they sample the next batch with them
                self.link.send_weights(self.updater.model, self.weights_version)
        ahead = self.cfg.rollout.mode == "one_step_off" and next_prompts is not None and self.link is None
        self.rollout.timings = {}  # the parts of this stage's generate calls (none: the batch was waiting)
        with stage("rollout"):
            b = self._batch_for(index, prompts, prompt_ids)
            if ahead and self.ahead is None:
                self.pending, _ = self._sample_ahead(index + 1, next_prompts, next_prompt_ids)
        times.update({f"rollout_{k}": v for k, v in self.rollout.timings.items()})
        if ahead and self.ahead is not None:  # sampled while this step scores and learns
            self.ahead.submit(lambda: self._sample_ahead(index + 1, next_prompts, next_prompt_ids))
        try:
            return self._learn(index, b, lr, times, stage, mem, t0)
        finally:
            if self.ahead is not None and self.ahead.busy:  # the step failed: wait for the sample, drop it
                self.ahead.close()
                self.ahead = BackgroundSampler()

    def _learn(self, index: int, b: StepBatch, lr: float, times: dict, stage, mem, t0: float) -> dict:
        """The stages after sampling: rewards, advantages, log-probs, update, the background sample's
        collection (rollout.overlap thread) and the weight push."""
        asked = self.reward_fn.judge_counts()
        with stage("rewards"):
            self.score(b)
            self.compute_advantages(b)
        if asked is not None:
            calls, unparsed = self.reward_fn.judge_counts()
            if calls > asked[0]:  # replies the judge gave no score in (on this rank)
                b.judge_unparsed = (unparsed - asked[1]) / (calls - asked[0])
        if self.updates_per_batch > 1:
            with stage("old_logprobs"):
                self.compute_logprobs_old(b)
        if self.reference is not None:
            with stage("ref_logprobs"):
                self.compute_logprobs_ref(b)
        self.require_finite_inputs(b, index)
        with stage("update"):
            records = self.update(b, lr)
        if self.link is not None:
            with stage("rollout_wait"):  # the sampling ranks' batch for the next step
                self.pending = self.link.receive_batch(index + 1)
            self.link.weights_sent = False
        if self.ahead is not None and self.ahead.busy:
            with stage("rollout_wait"):  # the part of the background sample the update did not hide
                self.pending, ahead_times = self.ahead.result()
            # the whole background sample (time/rollout_ahead), and its parts
            times.update({"rollout_ahead" + ("" if k == "total" else f"_{k}"): v for k, v in ahead_times.items()})
        staleness = self.weights_version - b.weights_version
        if any(r["finite"] for r in records):
            self.rollout.mark_stale()
            self.weights_version += 1
        if self.rollout.needs_weights:
            with stage("weight_push"):
                self.rollout.ensure_weights(self.updater.model)
        times["total"] = time.perf_counter() - t0
        m = self._metrics(b, records, times, lr, mem)
        if self.cfg.rollout.mode != "sync":
            m["offpolicy/staleness"] = staleness
        return m

    def _fit_checkpointing(self, batch, s: slice) -> None:
        """model.auto_checkpointing: the fewest checkpointed layers that fit this micro-batch's own tokens. The plan
        was made for a full micro-batch (grpo.micro_batch_tokens); with short responses they hold fewer, and a
        layer recomputed where its activations would fit only costs time."""
        plan = self.memory_plan
        if plan is None or plan.checkpointed_layers == 0:
            return
        if self.packed_layout:
            tokens = sum(batch.layout().lengths[s])
        else:  # the rows trimmed to their longest prompt and completion, as the micro-batch runs them
            tokens = (s.stop - s.start) * sum(batch.widths(s))
        k = plan.layers_for(tokens)
        if k != self._checkpointed:
            from relate_fast.models import checkpoint_flags

            checkpoint_flags(getattr(self.updater.model, "module", self.updater.model), k)
            self._checkpointed = k
        self._ckpt_seen.append((tokens, k))

    def _checkpointed_share(self) -> float:
        """The checkpointed share of the policy's layers: this step's, token-weighted, where the memory plan chose
        per micro-batch; otherwise read from the model once (it does not change)."""
        if self._ckpt_seen:
            layers = self.memory_plan.layers
            return sum(t * k for t, k in self._ckpt_seen) / max(sum(t for t, _ in self._ckpt_seen), 1) / layers
        if getattr(self, "_ckpt_share", None) is None:
            from relate_fast.models import checkpointed_share

            model = getattr(self.updater.model, "module", self.updater.model)  # DeepSpeed's engine wraps it
            self._ckpt_share = (checkpointed_share(model) if hasattr(model, "base_model_prefix")
                                else float(self.cfg.model.gradient_checkpointing))
        return self._ckpt_share

    def _update_utilisation(self, b: StepBatch, seconds: float) -> dict:
        """The update's model FLOPs per second per GPU (relate_fast.flops: no padding, no recomputation
        counted) and, on a GPU whose peak is known, its MFU and its hardware utilisation (with the
        recomputation of gradient checkpointing)."""
        from relate_fast.flops import peak_tflops, update_flops

        config = getattr(self.updater.model, "config", None)
        if config is None or seconds <= 0:
            return {}
        comp = [len(c) for c in b.completion_ids]
        f = update_flops(config, [len(p) + c for p, c in zip(b.prompt_ids, comp)], comp,
                         checkpointing=self._checkpointed_share(), passes=self.cfg.grpo.epochs)
        out = {"speed/update_model_tflops": f.model / seconds / 1e12}
        if self._ckpt_seen:  # the memory plan's choice per micro-batch: the most layers any of them recomputed
            out["memory/checkpointed_layers"] = max(k for _, k in self._ckpt_seen)
        peak = peak_tflops(_device_name(), self.cfg.run.peak_tflops)
        if peak:
            out["speed/update_mfu"] = out["speed/update_model_tflops"] / peak
            out["speed/update_hfu"] = f.hardware / seconds / 1e12 / peak
        return out

    def _metrics(self, b: StepBatch, records, times, lr, mem) -> dict:
        finite = [r for r in records if r["finite"]]
        scalar = {k for r in records for k in r if k not in ("finite",)}
        per_update = [{k: float(r[k]) for k in sorted(scalar)} for r in records]
        mean = {k: float((np.max if k.endswith("_max") else np.mean)([u[k] for u in per_update])) for k in sorted(scalar)}
        comp = sum(len(c) for c in b.completion_ids)
        tokens = comp + sum(len(p) for p in b.prompt_ids)
        counts = all_reduce(torch.tensor([tokens, len(b)], dtype=torch.float64, device=device()))
        eos = self.tok.eos_token_id
        m = {"loss": mean["loss"] if len(finite) == len(records) else float("nan"), "lr": lr,
             "grad_norm": mean["grad_norm"],
             **{k: v for k, v in mean.items() if k not in ("loss", "grad_norm")},
             **b.rewards.metrics(),
             "adv_abs_mean": float(b.advantages.abs().mean()),
             "response_tokens_mean": comp / max(len(b), 1),
             "eos_rate": float(np.mean([bool(c) and c[-1] == eos for c in b.completion_ids])),
             "updates": len(records), "skipped_updates": len(records) - len(finite),
             **{f"time/{k}": v for k, v in times.items()},
             "tokens_per_second": float(counts[0]) / times["total"],
             # per GPU of the job: the sampling ranks' (rollout.sampler_ranks) count too
             "tokens_per_second_per_gpu": float(counts[0]) / times["total"] / job_size(),
             "responses_global": int(counts[1])}
        if b.judge_unparsed is not None:
            m["judge/unparsed_share"] = b.judge_unparsed
        m.update(self._update_utilisation(b, times["update"]))
        if len(records) > 1:  # with several updates the clip binds: show each one
            m["per_update"] = per_update
        m.update(mem.report(self.world))
        return m


def _device_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


class _DeviceMemory:
    """GPU memory of a step, max over ranks:

    - gpu_mem_peak_gib: PyTorch's allocator peak over the step. In sleep mode vLLM allocates its
      weights and KV cache through a PyTorch memory pool, so this includes them (measured: a tiny
      policy with vLLM at 0.2 of an H200 peaks at 28.2 GiB) along with the policy's training state
      and activations: the whole process's peak, comparable with TRL's colocated vLLM.
    - gpu_mem_device_used_gib: the device's used memory (`mem_get_info`) at each stage's end, where
      vLLM is asleep: what the training side holds between stages.
    - gpu_mem_reserved_gib: the allocator's reserved peak: its peak plus the slack it holds but has not
      handed out (the memory plan's FRAGMENTATION is this slack over the peak)."""

    def __init__(self):
        self.used = 0.0
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def sample(self):
        if torch.cuda.is_available():
            free, total = torch.cuda.mem_get_info()
            self.used = max(self.used, (total - free) / 2**30)

    def report(self, world: int) -> dict:
        if not torch.cuda.is_available():
            return {}
        t = all_reduce(torch.tensor([torch.cuda.max_memory_allocated() / 2**30, self.used,
                                     torch.cuda.max_memory_reserved() / 2**30], device=device()), "max")
        return {"gpu_mem_peak_gib": float(t[0]), "gpu_mem_device_used_gib": float(t[1]), "gpu_mem_reserved_gib": float(t[2])}


def lr_at(cfg, index: int) -> float:
    """Learning rate of GRPO step `index` (0-based): linear warm-up, then constant."""
    return cfg.grpo.lr * min(1.0, (index + 1) / max(cfg.grpo.warmup_steps, 1))
