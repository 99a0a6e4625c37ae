"""The rollout-engine protocol every engine shares (relate_fast.rollout.base): the weights are pushed in
one place, `ensure_weights`, and only when the engine's are not the policy's."""
from relate_fast.rollout.base import RolloutEngine
from relate_fast.rollout.hf import HFEngine


class Counting(RolloutEngine):
    def __init__(self, needs_weights=False):
        self.needs_weights, self.pushed = needs_weights, []

    def push_weights(self, model):
        self.pushed.append(model)


def test_ensure_weights_pushes_only_stale_weights_once():
    e = Counting()
    assert not e.ensure_weights("m0") and e.pushed == []  # current: nothing to copy
    e.mark_stale()
    assert e.ensure_weights("m1") and e.pushed == ["m1"] and not e.needs_weights
    assert not e.ensure_weights("m1") and e.pushed == ["m1"]
    fresh = Counting(needs_weights=True)  # dummy weights, or discarded by sleep
    assert fresh.ensure_weights("m2") and fresh.pushed == ["m2"]


def test_hf_engine_samples_from_the_module_it_was_given_last():
    e = HFEngine("policy", tokenizer=None)
    assert not e.ensure_weights("other") and e.model == "policy"
    e.mark_stale()
    assert e.ensure_weights("other") and e.model == "other"
