"""Builds the parts of a GRPO step from the config, in the one order they depend on each other.

    parts = assemble(cfg, cold_start, ctcvr_model=trainer.ctcvr_model, rank=0, world=1, log=print)
    parts.step.run(index, prompts, prompt_ids, lr)     # one GRPO step (relate_fast.step)

The order: the embedding encoders (one model when the reward and the CTCVR model use the same), the
CTCVR model (a phase of the run: `ctcvr_model(encoder)` trains or loads it), the policy and its
tokenizer, the LLM judge, the reward function, the frozen reference (β ≠ 0), the rollout engine, the
fused decoder body (after the engine: HF generate sampling from the policy rules compiled layers out),
the updater (DeepSpeed or the plain optimizer) and the step. The trainer runs phases, the loop and
checkpoints; what it holds of the step is what this returns.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, List, Optional, Tuple

from relate_fast.config import Config
from relate_fast.distributed import device
from relate_fast.batching import resolve_layout
from relate_fast.memory_plan import MemoryPlan, device_memory, plan_for_run
from relate_fast.models import checkpoint_layers, fuse_layers, load_policy
from relate_fast.updater import PolicyUpdater
from relate_fast.rewards import RewardFunction
from relate_fast.rollout import RolloutEngine, make_engine
from relate_fast.step import GRPOStep

__all__ = ["StepParts", "assemble", "load_model"]


@dataclass
class StepParts:
    tokenizer: object
    encoders: List[object]  # the embedding models whose caches a checkpoint keeps
    reward_fn: RewardFunction
    rollout: RolloutEngine
    rollout_init_s: float
    updater: PolicyUpdater
    step: GRPOStep
    memory_plan: Optional[MemoryPlan] = None  # model.auto_checkpointing's choice

    # what a checkpoint keeps of the parts besides the policy and optimizer (the updater saves those)
    def state_dict(self) -> dict:
        return {**self.reward_fn.state_dict(), "encoder_caches": [enc.cache_state() for enc in self.encoders],
                "step": self.step.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.reward_fn.load_state_dict(state)
        self.step.load_state_dict(state.get("step", {}))
        for enc, cache in zip(self.encoders, state.get("encoder_caches", [])):
            enc.load_cache_state(cache)

    def clear_caches(self) -> None:
        """Empty embedding caches: GRPO starts alike whatever ran before it in this process."""
        for enc in self.encoders:
            enc.clear_cache()


def load_model(cfg: Config, source: Tuple[Path, str]):
    """(model, tokenizer) of a (folder, init) source with the run's dtype, attention and layout."""
    folder, init = source
    packed = resolve_layout(cfg.grpo.layout, device()) == "packed"
    return load_policy(folder, dtype=cfg.model.dtype, attn=cfg.model.attn_implementation, device=device(),
                       init=init, seed=cfg.run.seed, packed=packed)


def assemble(cfg: Config, cold: Tuple[Path, str], *, ctcvr_model: Callable, rank: int, world: int,
             log: Callable[[str], None]) -> StepParts:
    from relate_fast.rewards.embedding import make_encoder
    from relate_fast.rewards.judge import judge_from_config

    encoder = make_encoder(cfg.reward.encoder)
    same = cfg.ctcvr.encoder == cfg.reward.encoder  # one model in memory when both use the same
    ctcvr_encoder = encoder if same else make_encoder(cfg.ctcvr.encoder)
    ctcvr = ctcvr_model(ctcvr_encoder)
    policy, tok = load_model(cfg, cold)
    if cfg.model.gradient_checkpointing:
        checkpoint_layers(policy, cfg.model.checkpoint_layers)
    t = time.time()
    judge = judge_from_config(cfg.reward, device=device(), dtype=cfg.model.dtype)
    if judge is not None:
        where = f", {judge.where}" if judge.where else ""
        log(f"judge: {cfg.reward.judge_model} on {cfg.reward.judge_engine} ({time.time() - t:.1f} s{where}); "
            f"judged: correctness{', relevance' if cfg.reward.judge_relevance else ''}")
    reward_fn = RewardFunction.from_config(cfg.reward, tokenizer=tok, encoder=encoder, ctcvr=ctcvr, judge=judge,
                                           vocab_size=policy.config.vocab_size)
    reference: Optional[object] = None
    if cfg.grpo.beta != 0:
        reference, _ = load_model(cfg, cold)
        reference.eval().requires_grad_(False)
    # for the memory plan: the device before the engine starts, less the policy's weights (the plan's
    # states count them): the CUDA context, the reference and judge models, other processes
    used_before = device_memory()[0] if cfg.model.auto_checkpointing else 0
    others = max(used_before - sum(p.numel() * p.element_size() for p in policy.parameters()), 0) if used_before else 0
    t = time.time()
    rollout = make_engine(cfg.rollout, model_folder=cold[0], tokenizer=tok, policy=policy, dtype=cfg.model.dtype,
                          seed=cfg.run.seed, max_prompt_tokens=cfg.data.max_prompt_tokens,
                          dummy_weights=cold[1] == "random", evaluation_only=cfg.rollout.sampler_ranks > 0)
    rollout_init_s = time.time() - t
    engine_bytes = device_memory()[0] - used_before if used_before else 0
    fuse_layers(policy, cfg.model.fused_layers, generates=rollout.name == "hf")
    plan = None
    if cfg.model.auto_checkpointing:  # after the fusion: the probe measures the layers that will train
        plan = plan_for_run(cfg, policy, world=world, engine_bytes=engine_bytes, others=others,
                            engine_sleeps=bool(getattr(rollout, "sleep_mode", False)))
        checkpoint_layers(policy, plan.checkpointed_layers)
        log(plan.describe())
    log(f"rollout engine: {rollout.name} (started in {rollout_init_s:.1f} s); reward preset {cfg.reward.preset}; "
        f"world size {world}; update: {resolve_layout(cfg.grpo.layout, device())} layout, attention "
        f"{policy.config._attn_implementation}")
    updater = PolicyUpdater(policy, cfg, world)
    rollout.ensure_weights(updater.model)  # dummy weights: the policy's go in first
    step = GRPOStep(cfg, rollout=rollout, updater=updater, reward_fn=reward_fn, tokenizer=tok, reference=reference,
                    rank=rank, world=world, memory_plan=plan)
    return StepParts(tokenizer=tok, encoders=[encoder] if same else [encoder, ctcvr_encoder], reward_fn=reward_fn,
                     rollout=rollout, rollout_init_s=rollout_init_s, updater=updater, step=step, memory_plan=plan)
