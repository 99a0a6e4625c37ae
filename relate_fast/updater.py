"""The trainable policy: the HF model, its optimizer, and the DeepSpeed ZeRO-2 engine around them.

Three objects are easily confused in an RL trainer; here each has one name:

- the **rollout engine** (`relate_fast.rollout`): vLLM or HF generate, samples completions;
- the **policy updater** (`PolicyUpdater`, this module): owns the trainable model and its optimizer;
  `updater.model` is the plain HF module (what the loss reads and what is pushed to the rollout engine);
- the **DeepSpeed engine** (`updater.ds_engine`): DeepSpeed's wrapper that shards optimizer states and
  gradients (ZeRO-2); None when deepspeed.enabled is false (then plain torch: gradients averaged
  across ranks by an all-reduce before each optimizer step).

Accumulation boundaries are explicit: micro-batches come from a token budget, so their number
changes from step to step and DeepSpeed's fixed gradient_accumulation_steps cannot describe them.
"""
from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import torch

from relate_fast.distributed import TrainingRanks, all_reduce, training_group

__all__ = ["PolicyUpdater"]


@contextmanager
def _barriers_among_trainers():
    """DeepSpeed's checkpoint save and load end with a barrier over the whole job; with sampling ranks
    (relate_fast.rollout.split) those are elsewhere in their loop, so the barrier is the trainers'."""
    group = training_group()
    if group is None:
        yield
        return
    import deepspeed.comm as dcomm

    whole_job = dcomm.barrier
    dcomm.barrier = lambda group=None, **kw: whole_job(group=group if group is not None else training_group(), **kw)
    try:
        yield
    finally:
        dcomm.barrier = whole_job


class PolicyUpdater:
    def __init__(self, model, cfg, world: int):
        self.cfg, self.world = cfg, world
        self.model = model
        # on a GPU one fused kernel updates every tensor (no per-tensor launches, no host sync)
        on_gpu = next(model.parameters()).device.type == "cuda"
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.grpo.lr, weight_decay=cfg.grpo.weight_decay,
                                betas=(0.9, 0.99), fused=on_gpu or None)
        self.ds_engine = None
        if cfg.deepspeed.enabled:
            import importlib

            import deepspeed

            # The CPU shared-memory comm op JIT-compiles for minutes; gloo is enough. (`import
            # deepspeed.comm.torch as m` would bind the torch package: deepspeed.comm imports torch.)
            importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
            ds = cfg.deepspeed
            ds_cfg = {
                "train_micro_batch_size_per_gpu": 1,
                "gradient_accumulation_steps": 1,  # boundaries are set explicitly (token-budget micro-batches)
                "gradient_clipping": cfg.grpo.max_grad_norm,
                "zero_optimization": {"stage": ds.zero_stage, "overlap_comm": ds.overlap_comm and torch.cuda.is_available(),
                                      "reduce_bucket_size": ds.reduce_bucket_size,
                                      "allgather_bucket_size": ds.allgather_bucket_size, "contiguous_gradients": True},
                "bf16": {"enabled": cfg.model.dtype == "bfloat16"},
                "zero_allow_untested_optimizer": True,
                "steps_per_print": 10**9,
                # the tag is always "policy"; its check is an all-reduce over the whole job, sampling ranks included
                "checkpoint": {"tag_validation": "Ignore"},
                "wall_clock_breakdown": False,
            }
            # with sampling ranks, ZeRO shards over the training ranks only
            mpu = TrainingRanks() if training_group() is not None else None
            self.ds_engine, self.optimizer, _, _ = deepspeed.initialize(model=model, optimizer=opt, config=ds_cfg, mpu=mpu)
            self.model = self.ds_engine.module
        else:
            self.optimizer = opt

    def set_lr(self, lr: float):
        for g in self.optimizer.param_groups:
            g["lr"] = lr

    def backward(self, loss, boundary: bool):
        if self.ds_engine is not None:
            self.ds_engine.set_gradient_accumulation_boundary(boundary)
            self.ds_engine.backward(loss)
        else:
            loss.backward()

    def step(self) -> float:
        """One optimizer step on the accumulated gradients; returns the global gradient norm."""
        if self.ds_engine is not None:
            self.ds_engine.step()
            gn = self.ds_engine.get_global_grad_norm()
            return float(gn) if gn is not None else float("nan")
        if self.world > 1:  # the loss calls the trunk directly, so no DDP hook would see it: reduce here
            for p in self.model.parameters():
                if p.grad is not None:
                    all_reduce(p.grad).div_(self.world)
        gn = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grpo.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(gn)

    def discard_gradients(self):
        if self.ds_engine is not None:
            self.ds_engine.zero_grad()
            self.ds_engine.optimizer.zero_grad(set_to_none=True)
        else:
            self.optimizer.zero_grad(set_to_none=True)

    def save(self, folder: Path, client_state: dict, *, rank: int = 0):
        """Weights and optimizer state into `folder` (collective under DeepSpeed: every rank writes its
        shards of folder/policy/; without it rank 0 writes folder/policy.pt, the replicas being equal)."""
        if self.ds_engine is not None:
            with _barriers_among_trainers():
                self.ds_engine.save_checkpoint(str(folder), tag="policy", client_state=client_state, save_latest=False)
        elif rank == 0:
            torch.save({"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                        "client_state": client_state}, folder / "policy.pt")

    def load(self, folder: Path) -> dict:
        if self.ds_engine is not None:
            with _barriers_among_trainers():
                path, client = self.ds_engine.load_checkpoint(str(folder), tag="policy")
            if path is None:
                raise FileNotFoundError(f"{folder}/policy: DeepSpeed found no checkpoint to load")
            return client
        state = torch.load(folder / "policy.pt", map_location="cpu", weights_only=False)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        return state["client_state"]
