"""RELATE's reward system: a registry of small components, their combination into r_i and r_tok,
the paper's five configurations as presets, and the CTCVR model (rewards/ctcvr.py).

    from relate_fast.rewards import RewardConfig, RewardFunction, RolloutBatch
"""
from relate_fast.rewards.base import COMPONENTS, Component, RolloutBatch, get_component, register_component
from relate_fast.rewards.combine import (PRESETS, ComponentSpec, NgramWindow, RewardConfig, RewardContext,
                                         RewardFunction, RewardOutput, preset_components)

__all__ = ["COMPONENTS", "Component", "RolloutBatch", "get_component", "register_component", "PRESETS",
           "ComponentSpec", "NgramWindow", "RewardConfig", "RewardContext", "RewardFunction", "RewardOutput",
           "preset_components"]
