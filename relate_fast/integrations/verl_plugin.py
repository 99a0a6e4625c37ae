"""relate_fast as a verl plugin: importing this module registers the policy loss "relate" and the advantage
estimator "relate_grpo" in verl's registries (`relate_fast.integrations.verl.register`).

verl 0.9.1 imports every entry point of the group "verl.plugins" when `verl` itself is imported — in the
driver and in each Ray worker — and relate_fast declares this module there (pyproject.toml), so an installed
relate_fast needs no code in the user's program: `actor_rollout_ref.actor.policy_loss.loss_mode=relate` and
`algorithm.adv_estimator=relate_grpo` just work. Where relate_fast is only on PYTHONPATH (no distribution
metadata, no entry points), name this module in verl's `VERL_USE_EXTERNAL_MODULES` instead.
"""
from relate_fast.integrations.verl import register

register()
