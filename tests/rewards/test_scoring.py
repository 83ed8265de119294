"""spro.rewards.scoring.Scorer: weighted rewards, and failures that are counted, warned about and time-limited."""

from __future__ import annotations

import os
import threading
import warnings

import pytest

from spro.rewards.scoring import RewardFunctionError, RewardWarning, Scorer, WeightedReward

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
    assert s.rewards.tolist() == [0.5] * 8 and s.scored.all()


def test_only_functions_that_limit_themselves_run_here_the_others_in_a_worker_process():
    import os

    from spro.rewards import limits_itself

    def own(prompts, completions, **kw):
        return [float(os.getpid())] * len(completions)

    @limits_itself
    def builtin(prompts, completions, **kw):
        return [float(os.getpid())] * len(completions)

    def unmarked(prompts, completions, **kw):
        return [float(os.getpid())] * len(completions)

    unmarked.__module__ = "spro.data.example"  # defined in spro is not enough (reasoning_gym's graders have no limit)
    scorer = Scorer([WeightedReward("own", own), WeightedReward("builtin", builtin),
                     WeightedReward("unmarked", unmarked)], timeout=5)
    s = scorer(["p"], ["c"], {})
    assert s.stats["reward/own/mean"] != os.getpid() and s.stats["reward/builtin/mean"] == os.getpid()
    assert s.stats["reward/unmarked/mean"] == s.stats["reward/own/mean"]
    worker = scorer._worker.proc.pid
    scorer(["p"], ["c"], {})
    assert scorer._worker.proc.pid == worker  # one worker, reused call after call (not one per call or row)
    scorer.close()
    s = Scorer([WeightedReward("own", own)], timeout=0)(["p"], ["c"], {})  # 0: no limit, in this process
    assert s.stats["reward/own/mean"] == os.getpid()


def test_a_busy_looping_reward_is_killed_each_call_and_an_error_after_the_grace():
    def spin(prompts, completions, **kw):
        while True:  # holds the GIL: a thread could never be stopped
            pass

    def fine(prompts, completions, **kw):
        return [0.5] * len(completions)

    scorer = Scorer([WeightedReward("fine", fine), WeightedReward("spin", spin)], timeout=0.2)
    for _ in range(Scorer.grace - 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RewardWarning)  # (warned at the first call only: the same share)
            s = scorer(PROMPTS, [str(i) for i in range(8)], {})
        assert s.stats["reward/timeouts"] == 8 and s.rewards.tolist() == [0.5] * 8
        assert scorer._worker.proc is None  # the worker was killed, nothing keeps spinning
    with pytest.raises(RewardFunctionError, match=r"'spin' timed out on every response in 3 calls in a row.*did not "
                                                  r"return within 0.2 s.*raise data.reward_timeout"):
        scorer(PROMPTS, [str(i) for i in range(8)], {})


def test_a_reward_that_returns_none_everywhere_is_an_error_after_the_grace():
    def nothing(prompts, completions, **kw):
        return [None] * len(completions)

    for timeout in (0, 5):
        scorer = Scorer([WeightedReward("nothing", nothing)], timeout=timeout)
        for _ in range(Scorer.grace - 1):
            assert scorer(PROMPTS, ["c"] * 8, {}).stats["reward/none_frac"] == 1.0
        with pytest.raises(RewardFunctionError, match=r"no response got a value from any reward function \(nothing\) "
                                                      r"in 3 calls in a row.*reward 0"):
            scorer(PROMPTS, ["c"] * 8, {})
        scorer.close()
    # a call with some value resets the count; None from one function is fine while another scores
    calls = {"n": 0}

    def sometimes(prompts, completions, **kw):
        calls["n"] += 1
        return [None] * len(completions) if calls["n"] % 2 else [1.0] * len(completions)

    scorer = Scorer([WeightedReward("sometimes", sometimes), WeightedReward("nothing", nothing)], timeout=0)
    for _ in range(2 * Scorer.grace):
        scorer(PROMPTS, ["c"] * 8, {})
    scorer = Scorer([WeightedReward("one", lambda p, c, **kw: [1.0] * len(c)), WeightedReward("nothing", nothing)], timeout=0)
    for _ in range(2 * Scorer.grace):
        assert scorer(PROMPTS, ["c"] * 8, {}).rewards.tolist() == [1.0] * 8


@pytest.mark.parametrize("timeout", [0, 5])
@pytest.mark.parametrize("exc", [SystemExit(3), KeyboardInterrupt(), GeneratorExit()])
def test_base_exceptions_from_a_reward_are_caught_and_named(timeout, exc):
    if isinstance(exc, KeyboardInterrupt) and not timeout:
        pytest.skip("in this process a KeyboardInterrupt is Ctrl-C: passed on")

    def always(prompts, completions, **kw):
        raise exc

    def some(prompts, completions, **kw):
        if len(completions) > 1 or completions[0] == "3":
            raise exc
        return [1.0]

    name = type(exc).__name__
    with pytest.raises(RewardFunctionError, match=rf"'always' raised on every response: .*raised {name}"):
        Scorer([WeightedReward("always", always)], timeout=timeout)(PROMPTS, [str(i) for i in range(8)], {})
    with pytest.warns(RewardWarning, match=rf"1 raised.*raised {name}"):
        s = Scorer([WeightedReward("some", some)], timeout=timeout)(PROMPTS, [str(i) for i in range(8)], {})
    assert s.stats["reward/errors"] == 1 and s.scored.sum() == 7


def test_a_reward_that_ends_its_worker_is_named_and_the_next_call_gets_a_new_one():
    def exits(prompts, completions, **kw):
        if completions[0] == "0":
            os._exit(7)
        return [1.0] * len(completions)

    scorer = Scorer([WeightedReward("exits", exits)], timeout=5)
    with pytest.warns(RewardWarning, match=r"1 raised.*ended its worker process \(exit code 7\)"):
        s = scorer(PROMPTS, [str(i) for i in range(8)], {})
    assert s.stats["reward/errors"] == 1 and s.rewards.tolist() == [0.0] + [1.0] * 7
    assert scorer(PROMPTS, ["5"] * 8, {}).rewards.tolist() == [1.0] * 8


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


def test_a_reward_of_your_own_may_run_torch_in_the_worker():
    """The worker is forked from a process whose torch thread pool is running; torch ops in it must not crash
    or hang (the worker runs torch with one thread)."""
    import torch

    x = torch.randn(256, 256)
    (x @ x).sum()  # the parent's thread pool is started

    def uses_torch(prompts, completions, **kw):
        a = torch.ones(128, 128)
        return [float((a @ a)[0, 0] == 128) * torch.get_num_threads()] * len(completions)

    scorer = Scorer([WeightedReward("torch_fn", uses_torch)], timeout=60)
    try:
        assert scorer(["p"] * 3, ["c"] * 3, {}).rewards.tolist() == [1.0] * 3
    finally:
        scorer.close()
