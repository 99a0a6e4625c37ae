"""Imported for its effect: verl's vLLM servers start with the PYTHONPATH in RELATE_FAST_ROLLOUT_PYTHONPATH.

Why: bench_vs_verl runs verl on flash-attn 4 by putting FA4's site first on PYTHONPATH for verl's processes, and FA4
needs nvidia-cutlass-dsl >= 4.6.2 (the site holds 4.8.1) while vLLM 0.26 pins 4.6.0 — and vLLM on a Hopper GPU
imports cutlass and JIT-compiles CuTe-DSL kernels of its own at every engine start (its ll_bf16 router GEMM
warm-up, vllm/model_executor/warmup/kernel_warmup.py). So vLLM's server should see the path without FA4's site.

How: verl 0.9.1 starts each vLLM server actor with `runtime_env={"env_vars": platform.rollout_env_vars()}`
(verl/workers/rollout/vllm_rollout/vllm_async_server.py), and Ray starts an actor's process with those variables,
PYTHONPATH included; vLLM's engine core and GPU workers are that process's children and inherit it. This module
re-registers verl's CUDA platform ("nvidia") with a `rollout_env_vars` that adds the PYTHONPATH bench_vs_verl put
in RELATE_FAST_ROLLOUT_PYTHONPATH (its own, before FA4's site went first). Unset, nothing changes. verl names this
module in VERL_USE_EXTERNAL_MODULES, which `import verl` loads in every process before any platform is resolved.
"""
from __future__ import annotations

import os

from verl.plugin.platform.platform_cuda import PlatformCUDA
from verl.plugin.platform.platform_manager import PlatformRegistry

ENV = "RELATE_FAST_ROLLOUT_PYTHONPATH"


@PlatformRegistry.register(platform="nvidia")
class PlatformCUDARolloutPath(PlatformCUDA):
    """verl's CUDA platform, whose vLLM servers get the PYTHONPATH in RELATE_FAST_ROLLOUT_PYTHONPATH."""

    def rollout_env_vars(self) -> dict[str, str]:
        env = super().rollout_env_vars()
        if os.environ.get(ENV) is not None:
            env["PYTHONPATH"] = os.environ[ENV]
        return env
