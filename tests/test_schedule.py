"""The prompt schedule: each epoch visits every prompt once across ranks and steps, ranks never share a
prompt in a step, and a prompt over the token limit is an error naming it."""
from types import SimpleNamespace

import pytest

from relate_fast.data.schedule import PromptSchedule


class _Tok:  # no chat template: prompt_ids encodes the text + "\n"
    chat_template = None

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


ROWS = [SimpleNamespace(id=f"p{i}", prompt="x" * (i + 1)) for i in range(12)]


def test_an_epoch_visits_every_prompt_once_split_over_ranks():
    world, per_rank = 2, 3  # 6 prompts per step: an epoch is 2 steps
    sched = [PromptSchedule(ROWS, _Tok(), prompts_per_step=per_rank, seed=5, rank=r, world=world, max_prompt_tokens=99)
             for r in range(world)]
    for epoch in range(2):
        seen = [row.id for step in (2 * epoch, 2 * epoch + 1) for s in sched for row in s.step_rows(step)]
        assert sorted(seen) == sorted(r.id for r in ROWS)
    a, b = (set(r.id for r in s.step_rows(0)) for s in sched)
    assert not a & b
    assert [r.id for r in sched[0].step_rows(2)] != [r.id for r in sched[0].step_rows(0)]  # a new permutation


def test_prompt_ids_cached_and_too_long_is_an_error():
    s = PromptSchedule(ROWS, _Tok(), prompts_per_step=1, seed=0, max_prompt_tokens=4)
    assert s.ids(ROWS[1]) == [ord("x")] * 2 + [ord("\n")] and s.ids(ROWS[1]) is s.ids(ROWS[1])
    with pytest.raises(ValueError, match=r"prompt p5: 7 tokens > data.max_prompt_tokens \(4\)"):
        s.ids(ROWS[5])
