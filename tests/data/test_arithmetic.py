"""The arithmetic task: generator, splits, knobs, verifier, step checker, registry."""

from __future__ import annotations

import pytest

from spro.data.tasks import get_task, list_tasks
from spro.data.tasks.arithmetic import (
    ArithmeticTask,
    arithmetic_reward,
    extract_answer,
    first_wrong_step,
    parse_prompt,
    split_of,
    verify,
)


def _eval_left_to_right(prompt: str) -> int:
    operands, ops = parse_prompt(prompt)
    v = operands[0]
    for op, b in zip(ops, operands[1:]):
        v = v + b if op == "+" else v - b
    return v


def test_generator_is_deterministic_and_seed_dependent():
    a = ArithmeticTask(seed=1).problems("train", 50)
    b = ArithmeticTask(seed=1).problems("train", 50)
    c = ArithmeticTask(seed=2).problems("train", 50)
    assert a == b
    assert a != c


def test_problems_are_consistent():
    task = ArithmeticTask(num_operands=(2, 6), value_range=(0, 99), seed=3)
    for p in task.problems("train", 300):
        operands, ops = parse_prompt(p["prompt"])
        assert 2 <= len(operands) <= 6
        assert all(0 <= x <= 99 for x in operands)
        assert int(p["answer"]) == _eval_left_to_right(p["prompt"])
        assert p["solution"].endswith(f"A:{p['answer']}")
        assert len(p["solution"].split(";")) == len(operands)  # n-1 steps + answer
        assert first_wrong_step(p["prompt"], p["solution"]) is None
        assert verify(p["solution"], p["answer"]) == 1.0


def test_no_negative_values_by_default_and_negative_allowed():
    task = ArithmeticTask(num_operands=4, operators="-", value_range=(0, 50))
    for p in task.problems("train", 200):
        for seg in p["solution"].split(";")[:-1]:
            assert not seg.split("=")[1].startswith("-")
    neg = ArithmeticTask(num_operands=4, operators="-", value_range=(0, 50), allow_negative=True)
    answers = [int(p["answer"]) for p in neg.problems("train", 200)]
    assert min(answers) < 0
    for p in neg.problems("train", 50):
        assert first_wrong_step(p["prompt"], p["solution"]) is None


def test_splits_are_disjoint_sized_and_datasets():
    task = get_task("arithmetic")
    ds = {s: task.split(s) for s in ("train", "validation", "test")}
    assert len(ds["test"]) >= 2000 and len(ds["validation"]) >= 2000
    assert ds["test"].column_names == ["prompt", "answer", "solution"]
    prompts = {s: set(d["prompt"]) for s, d in ds.items()}
    assert len(prompts["test"]) == len(ds["test"])  # no duplicates inside a split
    assert not prompts["train"] & prompts["test"]
    assert not prompts["train"] & prompts["validation"]
    assert not prompts["validation"] & prompts["test"]
    for s, ps in prompts.items():
        assert all(split_of(p) == s for p in list(ps)[:200])
    # A different seed draws other problems but never crosses splits.
    other = ArithmeticTask(seed=9).split("test", n=300)
    assert not set(other["prompt"]) & prompts["train"]
    assert task.split("test", n=10)["prompt"] == ds["test"]["prompt"][:10]


@pytest.mark.parametrize(
    "knobs, word",
    [
        ({"num_operands": 0}, "num_operands"),
        ({"num_operands": 1}, "num_operands"),
        ({"num_operands": (5, 3)}, "num_operands"),
        ({"num_operands": "three"}, "num_operands"),
        ({"value_range": (10, 2)}, "value_range"),
        ({"value_range": (-5, 2)}, "value_range"),
        ({"value_range": 7.5}, "value_range"),
        ({"operators": ""}, "operators"),
        ({"operators": "+/"}, "operators"),
        ({"seed": "x"}, "seed"),
        ({"test_size": 0}, "test_size"),
        ({"allow_negative": "yes"}, "allow_negative"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_nonsense_knobs_raise_naming_the_knob(knobs, word):
    with pytest.raises(ValueError, match=word):
        get_task("arithmetic", **knobs)


def test_too_small_problem_space_raises():
    task = ArithmeticTask(num_operands=2, value_range=(0, 2), operators="+")
    with pytest.raises(ValueError, match="too small"):
        task.problems("test", 50)


def test_unknown_split_and_task():
    with pytest.raises(ValueError, match="split"):
        get_task("arithmetic").split("dev")
    with pytest.raises(ValueError, match="did you mean 'arithmetic'"):
        get_task("arithmetik")
    assert "arithmetic" in list_tasks()


def test_verifier_and_reward():
    assert extract_answer("1+2=3;A:3") == 3
    assert extract_answer("A:-12;junk") == -12
    assert extract_answer("no answer") is None
    assert extract_answer("A:4;A:5") == 4  # the first answer counts
    assert verify("1+2=3;A:3", "3") == 1.0
    assert verify("1+2=3;A:31", "3") == 0.0
    assert verify("1+2=3", "3") == 0.0
    assert verify([{"role": "assistant", "content": "A:7"}], 7) == 1.0
    assert arithmetic_reward(["Q:1+2=", "Q:1+2="], ["1+2=3;A:3", "1+2=4;A:4"], answer=["3", "3"], extra=[0, 1]) == [1.0, 0.0]
    with pytest.raises(ValueError):
        arithmetic_reward(["Q:1+2="], ["A:3", "A:3"], answer=["3"])
    with pytest.raises(ValueError, match="answer"):
        verify("A:3", "three")


PROMPT = "Q:48+26-2+10="  # 48+26=74; 74-2=72; 72+10=82; A:82


@pytest.mark.parametrize(
    "completion, expected",
    [
        ("48+26=74;74-2=72;72+10=82;A:82", None),
        (" 48+26=74 ; 74-2=72; 72+10=82 ;A:82 ", None),  # whitespace around segments is fine
        ("48+26=74;74-2=72;72+10=82;A:82;garbage", None),  # text after the answer is ignored
        ("48+26=75;75-2=73;73+10=83;A:83", 0),  # wrong sum in step 0
        ("48+26=74;74-2=71;71+10=81;A:81", 1),  # wrong in step 1, later steps consistent
        ("48+26=74;74-2=72;72+10=82;A:81", 3),  # wrong answer segment
        ("48+26=74;74+2=76;76+10=86;A:86", 1),  # wrong operator
        ("48+26=74;74-3=71;71+10=81;A:81", 1),  # wrong operand copied from the prompt
        ("48+26=74;75-2=73;73+10=83;A:83", 1),  # does not use the previous result
        ("48+26=74;74-2=72;A:72", 2),  # skipped a step
        ("48+26-2=72;72+10=82;A:82", 0),  # merged steps: malformed
        ("48+26=74;74-2=72;72+10=82", 3),  # ended before the answer
        ("48+26=74;74-2=72;72+10=82;82", 3),  # answer segment malformed
        ("", 0),
        ("hello", 0),
        ("48+26=74;;74-2=72;72+10=82;A:82", 1),  # empty segment
        ("48+26=074;74-2=72;72+10=82;A:82", None),  # leading zero parses to the same number
    ],
)
def test_first_wrong_step(completion, expected):
    assert first_wrong_step(PROMPT, completion) == expected


def test_first_wrong_step_right_answer_wrong_process():
    # The outcome reward is 1 but the process is broken: exactly the disagreement SPRO targets.
    c = "48+26=82;A:82"
    assert verify(c, "82") == 1.0
    assert first_wrong_step(PROMPT, c) == 0


def test_first_wrong_step_bad_prompt():
    with pytest.raises(ValueError, match="arithmetic prompt"):
        first_wrong_step("What is 2+2?", "A:4")


def test_first_wrong_step_on_random_corruptions():
    """Corrupting one character of a reference solution is detected at or before that segment."""
    import random

    rng = random.Random(0)
    task = ArithmeticTask(seed=5)
    for p in task.problems("train", 200):
        sol = p["solution"]
        i = rng.randrange(len(sol))
        ch = rng.choice([c for c in "0123456789+-;=A:" if c != sol[i]])
        bad = sol[:i] + ch + sol[i + 1 :]
        seg_index = sol[:i].count(";")
        got = first_wrong_step(p["prompt"], bad)
        if got is None:  # only possible if the corruption is a no-op for the parser
            assert bad.split(";")[: seg_index + 1] == sol.split(";")[: seg_index + 1]
        else:
            assert got <= seg_index + (1 if ch == ";" else 0)
