"""Accuracy comes from a named verifier, printed at the start, never by default from a reward of the
user's own (which may be shaped): spro.data.loader.accuracy_verifier's rule, in the trainer."""

from __future__ import annotations

import pytest

from helpers import REWARDS, read_jsonl, small_overrides
from spro.config import ConfigError, load_config
from spro.data.loader import accuracy_verifier
from spro.trainer import train


def _data(**over):
    return load_config(overrides=[f"data.{k}={v}" for k, v in over.items()]).data


def test_the_rule():
    # 1. named
    d = _data(rewards="[digits, arithmetic]", accuracy_reward="digits")
    assert accuracy_verifier(d, None, ["digits", "arithmetic"]) == ("digits", "accuracy by digits (data.accuracy_reward)")
    # 2. the task's verifier when it is among the rewards, wherever it is in the list
    d = _data(rewards="[format, arithmetic]")
    assert accuracy_verifier(d, None, ["format", "arithmetic"]) == (
        "arithmetic", "accuracy by arithmetic (the verifier of the task arithmetic)")
    d = _data(task="multiplication")
    assert accuracy_verifier(d, None, ["arithmetic"])[0] == "arithmetic"  # (its verifier)
    # 3. only rewards of one's own: none, and the sentence says how to set it
    d = _data(rewards="[digits]")
    name, note = accuracy_verifier(d, None, ["digits"])
    assert name is None
    assert note == ("accuracy not reported (its verifier arithmetic is not among the rewards; set "
                    "data.accuracy_reward=NAME, one of digits, to count a response correct when that reward is >= "
                    "data.correct_threshold)")


def test_custom_reward_only_reports_no_accuracy(model_dir, tmp_path, capsys):
    over = small_overrides(model_dir, tmp_path / "run", "grpo", **{"data.rewards": "[digits]"})
    out = train(load_config(overrides=over), reward_funcs=REWARDS)
    err = capsys.readouterr()
    assert "reward 1 x digits (data.rewards); accuracy not reported (its verifier arithmetic" in err.err
    assert all(m["accuracy"] is None for m in read_jsonl(out / "metrics.jsonl"))
    (ev,) = read_jsonl(out / "eval.jsonl")
    assert ev["eval/accuracy"] is None and ev["eval/n"] == 4
    assert "step 2: evaluated (n=4, mean length" in err.out and "eval accuracy" not in err.out


def test_the_task_verifier_decides_even_when_not_first(model_dir, tmp_path, capsys):
    over = small_overrides(model_dir, tmp_path / "run", "grpo", total_steps=1,
                           **{"data.rewards": "[digits, {name: arithmetic, weight: 0.0}]"})
    out = train(load_config(overrides=over), reward_funcs=REWARDS)
    assert "accuracy by arithmetic (the verifier of the task arithmetic)" in capsys.readouterr().err
    (m,) = read_jsonl(out / "metrics.jsonl")
    assert m["accuracy"] == 0.0  # the random model never answers right; digits (> 0 here) does not decide it
    assert m["reward/digits/mean"] > 0


def test_prime_needs_a_verifier(model_dir, tmp_path):
    over = small_overrides(model_dir, tmp_path / "run", "prime", **{"data.rewards": "[digits]"})
    with pytest.raises(ConfigError, match=r"algorithm.name=prime learns from correct / incorrect verdicts.*"
                                          r"set data.accuracy_reward=NAME"):
        train(load_config(overrides=over), reward_funcs=REWARDS)
