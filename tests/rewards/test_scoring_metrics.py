"""The Scorer's per-function metrics reward/<name>/mean and /std (TRL's names)."""

from __future__ import annotations

import pytest

from spro.rewards.scoring import WeightedReward, Scorer


def test_each_reward_function_gets_mean_and_std_of_its_own_values():
    def half(prompts, completions, **kw):
        return [0.5 if c == "a" else 1.5 for c in completions]

    def picky(prompts, completions, **kw):  # scores only "b": None elsewhere
        return [2.0 if c == "b" else None for c in completions]

    def never(prompts, completions, **kw):
        return [None] * len(completions)

    scorer = Scorer([WeightedReward("half", half, 1.0), WeightedReward("picky", picky, 0.5), WeightedReward("never", never)])
    stats = scorer(["p"] * 3, ["a", "b", "b"], {}).stats
    assert stats["reward/half/mean"] == pytest.approx(7 / 6)
    assert stats["reward/half/std"] == pytest.approx((1 / 3) ** 0.5)  # sample std of 0.5, 1.5, 1.5
    assert (stats["reward/picky/mean"], stats["reward/picky/std"]) == (2.0, 0.0)  # the None row left out
    assert stats["reward/never/mean"] is None and stats["reward/never/std"] is None
