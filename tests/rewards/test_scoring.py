"""spro.rewards.scoring.Scorer: weighted rewards, and failures that are counted, warned about and time-limited."""

from __future__ import annotations

import threading
import warnings

import pytest

from spro.rewards.scoring import WeightedReward, RewardWarning, Scorer

PROMPTS = ["p"] * 8


def test_errors_are_warned_about_once_then_when_the_rate_doubles():
    calls = {"rate": 4}
    seen = []

    def fn(prompts, completions, **kw):
        if len(completions) > 1:
            raise RuntimeError("batch failed")
        seen.append(1)
        if len(seen) % calls["rate"] == 0:
            raise ValueError(f"cannot parse response {len(seen)}")
        return [1.0]

    scorer = Scorer([WeightedReward("parse", fn)])
    comps = [str(i) for i in range(8)]
    with pytest.warns(RewardWarning, match=r"reward 'parse': 2 of 8 responses \(25%\) got no value in this call \(2 "
                                           r"raised, 0 timed out\).*First error: .*RuntimeError: batch failed"):
        s = scorer(PROMPTS, comps, {})
    assert s.stats["reward/errors"] == 2 and s.stats["reward/timeouts"] == 0
    with warnings.catch_warnings(record=True) as w:  # the same rate again: no new warning
        warnings.simplefilter("always")
        scorer(PROMPTS, comps, {})
    assert not w
    calls["rate"] = 2  # the rate doubles: warned again, with the totals
    with pytest.warns(RewardWarning, match=r"4 of 8 responses \(50%\).*doubled since the last warning; 8 raised and 0 "
                                           r"timed out of 24 responses so far"):
        scorer(PROMPTS, comps, {})


def test_a_reward_that_never_returns_hits_the_time_limit():
    release = threading.Event()

    def stuck(prompts, completions, **kw):
        release.wait()
        return [1.0] * len(completions)

    def fine(prompts, completions, **kw):
        return [0.5] * len(completions)

    scorer = Scorer([WeightedReward("fine", fine), WeightedReward("stuck", stuck)], timeout=0.2)
    try:
        with pytest.warns(RewardWarning, match=r"reward 'stuck': 8 of 8 responses \(100%\).*8 timed out.*did not "
                                               r"return within 0.2 s \(data.reward_timeout\)"):
            s = scorer(PROMPTS, [str(i) for i in range(8)], {})
    finally:
        release.set()  # let the abandoned worker thread end
    assert s.stats["reward/timeouts"] == 8 and s.stats["reward/none_frac"] == 0.5
    # one rule for combining (spro.rewards.combine_values, TRL's): a None component is left out of the sum
    assert s.rewards.tolist() == [0.5] * 8 and s.scored.all()


def test_the_scorer_and_combine_rewards_share_one_none_rule():
    from spro.rewards import combine_rewards

    def half(prompts, completions, **kw):
        return [0.5] * len(completions)

    def picky(prompts, completions, **kw):
        return [1.0 if c == "b" else None for c in completions]

    def never(prompts, completions, **kw):
        return [None] * len(completions)

    s = Scorer([WeightedReward("half", half, 2.0), WeightedReward("picky", picky, 1.0)])(PROMPTS[:2], ["a", "b"], {})
    combined = combine_rewards([(half, 2.0), (picky, 1.0)])(PROMPTS[:2], ["a", "b"])
    assert combined == [1.0, 2.0]  # None = not applicable: left out of the sum, as TRL's nansum does
    assert s.rewards.tolist() == [1.0, 2.0] and s.scored.all()
    assert combine_rewards([(never, 1.0), (picky, 1.0)])(PROMPTS[:2], ["a", "b"]) == [None, 1.0]
    with pytest.warns(RewardWarning, match=r"1 of 2 responses could not be scored"):
        s = Scorer([WeightedReward("never", never), WeightedReward("picky", picky)])(PROMPTS[:2], ["a", "b"], {})
    assert s.rewards.tolist() == [0.0, 1.0] and s.scored.tolist() == [False, True]


def test_only_functions_of_your_own_run_in_a_worker_thread():
    threads = {}

    def own(prompts, completions, **kw):
        threads["own"] = threading.current_thread()
        return [1.0] * len(completions)

    def builtin(prompts, completions, **kw):
        threads["builtin"] = threading.current_thread()
        return [1.0] * len(completions)

    builtin.__module__ = "spro.rewards.example"  # spro's rewards carry their own limits
    Scorer([WeightedReward("own", own), WeightedReward("builtin", builtin)], timeout=5)(["p"], ["c"], {})
    assert threads["own"] is not threading.main_thread() and threads["builtin"] is threading.main_thread()
    Scorer([WeightedReward("own", own)], timeout=0)(["p"], ["c"], {})  # 0: no limit, no thread
    assert threads["own"] is threading.main_thread()
