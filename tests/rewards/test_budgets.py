"""Every reward is bounded per call (issue 20, item 3): spro's own rewards limit each row and stop grading when
the call's budget (``spro.rewards.reward_budget``, the trainer's ``data.reward_timeout``) is spent; the rows they
did not grade score None and are counted; the other rewards run in the Scorer's killable worker process. No
wall-clock assertions: the tests count what was cut and timed out."""

from __future__ import annotations

import json
import warnings

import pytest

from spro.rewards import budget_left, get_reward, limits_itself, pop_reward_stats, reward_budget
from spro.rewards.code import make_code_reward, make_eurus_reward
from spro.rewards.math import MathGrader
from spro.rewards.scoring import CODE_REWARDS, Scorer, WeightedReward, code_isolation, code_rewards

SLOW_PAIR = ("9^{9^{9^{9}}}", "1")  # sympy would evaluate this for a very long time
HANG = "```python\nimport time\ntime.sleep(60)\n```"
ECHO = "```python\nprint(input())\n```"
STDIO = json.dumps({"inputs": ["1\n"], "outputs": ["1\n"]})


@pytest.fixture(autouse=True)
def _quiet():
    pop_reward_stats()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def test_budget_is_per_block_and_none_outside():
    assert budget_left() is None
    with reward_budget(30):
        assert 0 < budget_left() <= 30
        with reward_budget(None):
            assert budget_left() is None
    with reward_budget(0):
        assert budget_left() <= 0
    assert budget_left() is None


def test_builtin_rewards_are_marked_and_reasoning_gym_is_not():
    for name in ("math", "code", "eurus", "format", "arithmetic"):
        assert getattr(get_reward(name), "spro_limits_itself", False), name
    from spro.data import reasoning_gym
    from spro.rewards.format import make_format_reward

    assert not getattr(reasoning_gym.reasoning_gym_reward, "spro_limits_itself", False)  # (runs in the worker)
    assert make_format_reward().spro_limits_itself  # the closed-box check is linear
    assert not hasattr(make_format_reward(r"(a+)+b"), "spro_limits_itself")  # a pattern of yours may not be


@pytest.mark.parametrize("workers", [0, 1])
def test_math_grades_no_row_once_the_budget_is_spent(workers):
    with MathGrader(timeout=60, workers=workers) as g:
        g.warm()
        with reward_budget(0):
            out = g.grade(["\\boxed{1}", "\\boxed{2}", "no answer"], ["1", "2", "3"])
    assert out == [None, None, None]
    stats = pop_reward_stats()
    assert stats["math/batch_budget"] == 3 and "math/timeout" not in stats


@pytest.mark.parametrize("workers", [0, 1])
def test_math_cuts_hanging_rows_to_the_budget(workers):
    with MathGrader(timeout=600, workers=workers) as g:
        g.warm()
        with reward_budget(1.0):  # far less than the 600 s per row: the call ends at the budget
            out = g.grade(["\\boxed{%s}" % SLOW_PAIR[0]] * 2, [SLOW_PAIR[1]] * 2)
    assert out == [None, None]  # not judged: each hang cut short by the call's budget, or never started
    stats = pop_reward_stats()
    assert stats["math/batch_budget"] == 2 and "math/timeout" not in stats


def test_math_without_a_budget_is_unchanged():
    with MathGrader(timeout=60) as g:
        assert g.grade(["\\boxed{1}", "\\boxed{3}"], ["1", "2"]) == [True, False]
    assert "math/batch_budget" not in pop_reward_stats()


def test_code_runs_nothing_once_the_budget_is_spent():
    fn = make_code_reward(workers=1)
    with reward_budget(0):
        assert fn(["p"] * 3, [ECHO] * 3, tests=[STDIO] * 3) == [None, None, None]
    stats = pop_reward_stats()
    assert stats["code/batch_budget"] == 3 and "code/timeouts" not in stats


@pytest.mark.parametrize("workers", [1, 2])
def test_code_hanging_rows_end_at_the_budget_and_are_counted(workers):
    fn = make_code_reward(workers=workers, row_seconds=120)
    with reward_budget(1.5):  # each row could take 120 s; the call may not
        out = fn(["p"] * 4, [HANG] * 4, tests=[STDIO] * 4)
    assert out == [None] * 4  # cut short by the call's budget: not judged (not paid, not failed)
    stats = pop_reward_stats()
    assert stats["code/batch_budget"] == 4
    assert stats.get("code/timeouts", 0) >= 1  # the runs that started were stopped by their cut limit


def test_code_row_seconds_bounds_each_row_and_counts_its_timeout():
    fn = make_code_reward(workers=1, row_seconds=0.5)
    assert fn(["p", "p"], [HANG, ECHO], tests=[STDIO, STDIO]) == [0.0, 1.0]
    assert pop_reward_stats()["code/timeouts"] == 1


def test_eurus_passes_its_budget_to_both_halves():
    fn = make_eurus_reward(code=make_code_reward(workers=1))
    with reward_budget(0):
        out = fn(["p", "p"], [ECHO, "\\boxed{1}"], answer=[STDIO, "1"], data_source=["apps", "math"])
    assert out == [None, None]
    stats = pop_reward_stats()
    assert stats["code/batch_budget"] == 1 and stats["math/batch_budget"] == 1


def test_scorer_gives_its_timeout_to_builtin_rewards_as_their_budget():
    seen = []

    @limits_itself
    def spy(prompts, completions, **kw):
        seen.append(budget_left())
        return [1.0] * len(completions)

    Scorer([WeightedReward("spy", spy)], timeout=300)(["p"], ["c"], {})
    Scorer([WeightedReward("spy", spy)], timeout=0)(["p"], ["c"], {})  # 0: no limit
    assert 0 < seen[0] <= 300 and seen[1] is None


def test_scorer_counts_the_rows_a_builtin_reward_left_ungraded():
    scorer = Scorer([WeightedReward("math", get_reward("math"))], timeout=1e-9)  # spent before the first row
    s = scorer(["p"] * 4, ["\\boxed{1}"] * 4, {"answer": ["1"] * 4})
    assert s.stats["reward/math/batch_budget"] == 4 and s.stats["reward/none_frac"] == 1.0
    assert not s.scored.any()


def test_scorer_retry_row_by_row_shares_one_budget():
    calls = []

    @limits_itself
    def fails_on_batch(prompts, completions, **kw):
        calls.append(budget_left())
        if len(completions) > 1:
            raise ValueError("batch")
        return [1.0]

    Scorer([WeightedReward("f", fails_on_batch)], timeout=300)(["p"] * 3, ["a", "b", "c"], {})
    batch, *rows = calls
    assert len(rows) == 3 and rows[0] >= rows[1] >= rows[2] and rows[0] <= 300  # one deadline for the retry


# ------------------------------------------------------------------------------ data.code (issue 20, item 5)
def test_data_code_keys_are_declared_and_checked():
    from spro.config import ConfigError, load_config

    cfg = load_config(overrides=["data.code.row_seconds=2.5", "data.code.isolation=namespace", "data.code.workers=4"])
    assert (cfg.data.code.row_seconds, cfg.data.code.isolation, cfg.data.code.workers) == (2.5, "namespace", 4)
    for bad, match in (("data.code.row_seconds=0", "data.code.row_seconds must be > 0"),
                       ("data.code.workers=0", "data.code.workers must be >= 1"),
                       ("data.code.isolation=none", "data.code.isolation")):
        with pytest.raises(ConfigError, match=match):
            load_config(overrides=[bad])
    from spro.config import describe_options

    text = describe_options()
    assert "data.code.row_seconds = 6.0" in text and "data.code.isolation = 'auto'" in text


def test_scorer_builds_the_code_rewards_from_data_code():
    from spro.config import load_config

    cfg = load_config(overrides=["data.rewards=[code]", "data.code.row_seconds=0.5", "data.code.workers=1"])
    assert set(code_rewards(cfg.data, ["code"])) == set(CODE_REWARDS) and code_rewards(cfg.data, ["math"]) == {}
    scorer = Scorer.from_config(cfg.data)
    s = scorer(["p", "p"], [HANG, ECHO], {"tests": [STDIO, STDIO]})
    assert s.rewards.tolist() == [0.0, 1.0] and s.stats["reward/code/timeouts"] == 1  # the 0.5 s row budget


def test_code_isolation_is_checked_only_with_a_code_reward(monkeypatch):
    from spro.config import load_config
    from spro.rewards import sandbox

    cfg = load_config(overrides=["data.code.isolation=unsafe-none"])
    assert code_isolation(cfg.data, ["math", "format"]) is None
    monkeypatch.setattr(sandbox, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="weaker 'none' isolation"):
        assert code_isolation(cfg.data, ["eurus"]) == "none"


def test_code_isolation_names_the_key_when_unavailable(monkeypatch):
    from spro.config import ConfigError, load_config
    from spro.rewards import sandbox

    monkeypatch.setattr(sandbox, "_PROBE", {"bwrap": False, "namespace": False, "cgroup": None,
                                            "bwrap_disable_userns": True, "reasons": {"bwrap": "absent here"}})
    with pytest.raises(ConfigError, match=r"data.code.isolation=bwrap: bwrap isolation requested but unavailable"):
        code_isolation(load_config(overrides=["data.code.isolation=bwrap"]).data, ["code"])
