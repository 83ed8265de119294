"""Code reward: program extraction, test formats, output comparison, scoring modes."""

from __future__ import annotations

import json
import warnings

import pytest

from spro.rewards import get_reward, pop_reward_stats
from spro.rewards.code import TestSpec, extract_code, make_code_reward, outputs_match, parse_tests
from spro.rewards.sandbox import SandboxLimits

LIMITS = SandboxLimits(cpu_seconds=3, wall_seconds=30, memory_mb=512)

ADD_STDIO = json.dumps({"inputs": ["1 2\n", "10 -4\n", "0 0\n"], "outputs": ["3\n", "6\n", "0\n"]})


def test_extract_code_prefers_last_python_fence():
    text = "Idea:\n```text\nnot code\n```\nFirst try:\n```python\nprint(1)\n```\nBetter:\n```py\nprint(2)\n```\nDone."
    assert extract_code(text) == "print(2)\n"
    assert extract_code("```\nprint(3)\n```") == "print(3)\n"
    assert extract_code("print(4)") == "print(4)"
    assert extract_code("Solution:\n```python\nprint(5)\n") == "print(5)\n"  # truncated, no closing fence
    assert extract_code([{"role": "assistant", "content": "```python\nprint(6)\n```"}]) == "print(6)\n"


def test_parse_tests_formats_and_errors():
    t = parse_tests(ADD_STDIO)
    assert t.kind == "stdio" and len(t) == 3 and t.outputs[1] == "6\n"
    t = parse_tests({"fn_name": "f", "inputs": [[1, 2], 3], "outputs": [[3], [3]]})
    assert t.kind == "call" and t.inputs == [[1, 2], [3]] and t.fn_name == "f"
    assert parse_tests(["assert f(1) == 1", " "]) == TestSpec("asserts", ["assert f(1) == 1"], [None])
    assert parse_tests({"test_list": ["assert g()"]}).inputs == ["assert g()"]
    assert parse_tests("assert f(2) == 4\nassert f(3) == 6").kind == "asserts"
    for bad, msg in [(None, "None"), ("", "empty"), ("{oops", "do not parse"),
                     ({"inputs": ["1"], "outputs": []}, "1 inputs but 0 outputs"),
                     ({"inputs": [], "outputs": []}, "no test cases"), ({"x": 1}, "unknown test format"),
                     ([1, 2], "strings")]:
        with pytest.raises(ValueError, match=msg):
            parse_tests(bad)


@pytest.mark.parametrize("got,expected,same", [
    ("3\n", "3", True),
    ("1 2 \r\n3\n\n", "1 2\n3", True),
    ("0.3333333", "0.33333333", True),
    ("1e-9", "0", True),
    ("YES", "yes", False),
    ("1 2", "1 2 3", False),
    ("2.5", "2.6", False),
])
def test_outputs_match(got, expected, same):
    assert outputs_match(got, expected) is same


def test_code_reward_on_real_looking_rows():
    fn = make_code_reward(limits=LIMITS, workers=2)
    good = "Read both numbers and add.\n```python\na, b = map(int, input().split())\nprint(a + b)\n```"
    partial = "```python\na, b = map(int, input().split())\nprint(a + b if a < 5 else 0)\n```"  # passes 2/3
    crash = "```python\nraise SystemExit(input())\n```"
    asserts = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 5"]
    call = json.dumps({"fn_name": "square", "inputs": [[2], [5], [-3]], "outputs": [[4], [25], [9]]})
    completions = [good, partial, crash,
                   "```python\ndef add(a, b):\n    return a + b\n```",
                   "```python\nclass Solution:\n    def square(self, n):\n        return n * n\n```",
                   "```python\ndef square(n):\n    return n * n if n > 0 else 0\n```"]
    tests = [ADD_STDIO, ADD_STDIO, ADD_STDIO, asserts, call, call]
    out = fn(["p"] * 6, completions, tests=tests)
    assert out == pytest.approx([1.0, 2 / 3, 0.0, 2 / 3, 1.0, 2 / 3])
    strict = make_code_reward(limits=LIMITS, mode="all", workers=2)
    assert strict(["p"] * 6, completions, tests=tests) == [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]


def test_tests_from_answer_column_and_bad_specs_score_none():
    pop_reward_stats()
    fn = get_reward("code")
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn(["p"] * 2, ["print(1)", "print(1)"], answer=[json.dumps({"inputs": [""], "outputs": ["1"]}), "{bad"])
    assert out == [1.0, None]
    assert pop_reward_stats()["code/bad_tests"] == 1
    assert any("row 1" in str(x.message) for x in w)
    with pytest.raises(ValueError, match="'tests' column"):
        fn(["p"], ["print(1)"])


def test_max_cases_limits_work():
    fn = make_code_reward(limits=LIMITS, max_cases=1, workers=1)
    assert fn(["p"], ["print(3)"], tests=[ADD_STDIO]) == [1.0]  # only the first case is run


def test_eurus_reward_routes_by_data_source():
    fn = get_reward("eurus")
    out = fn(["p"] * 4,
             ["\\boxed{3/4}", "```python\nprint(sum(map(int, input().split())))\n```", "\\boxed{2}", "print(1)"],
             answer=["0.75", ADD_STDIO, "3", json.dumps({"inputs": [""], "outputs": ["1"]})],
             data_source=["numina_olympiads", "taco", "numina_cn_k12", None])
    assert out == [1.0, 1.0, 0.0, 1.0]
