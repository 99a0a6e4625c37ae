"""relate_fast as a verl plugin: importing this module registers the policy loss "relate" and the advantage
estimator "relate_grpo" in verl's registries (`relate_fast.integrations.verl.register`).

verl 0.9.1 imports every entry point of the group "verl.plugins" when `verl` itself is imported — in the
driver and in each Ray worker — and relate_fast declares this module there (pyproject.toml), so an installed
relate_fast needs no code in the user's program: `actor_rollout_ref.actor.policy_loss.loss_mode=relate` and
`algorithm.adv_estimator=relate_grpo` just work. Where relate_fast is only on PYTHONPATH (no distribution
metadata, no entry points), name this module in verl's `VERL_USE_EXTERNAL_MODULES` instead.

RELATE_FAST_VERL_LOGPROBS=1 in the environment also gives verl's fused-kernel forward (its Triton backend) our
log-prob kernels (`use_fused_logprobs`), in every process that imports verl; RELATE_FAST_VERL_LOGPROBS_CHUNK sets
their tokens per chunk (default LOGPROBS_CHUNK_TOKENS, 1,024). Ray workers on one node inherit the driver's
environment; elsewhere put both in verl's `ray_kwargs.ray_init.runtime_env.env_vars`.
"""
import os

from relate_fast.integrations.verl import register, use_fused_logprobs

register()
if os.environ.get("RELATE_FAST_VERL_LOGPROBS", "0") not in ("", "0"):
    _chunk = os.environ.get("RELATE_FAST_VERL_LOGPROBS_CHUNK")
    use_fused_logprobs(**({"chunk_size": int(_chunk)} if _chunk else {}))  # unset: use_fused_logprobs' default
