"""Code reward: program extraction, test formats, output comparison, scoring modes."""

from __future__ import annotations

import json
import warnings

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spro.rewards import get_reward, pop_reward_stats
from spro.rewards.code import (TestSpec, UnsupportedTest, extract_code, judge_asserts, make_code_reward, outputs_match,
                               parse_tests, run_tests)
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
    # passes the first case, fails the second; a stdio row stops there (the third is not run)
    partial = "```python\na, b = map(int, input().split())\nprint(a + b if a < 5 else 0)\n```"
    crash = "```python\nraise SystemExit(input())\n```"
    asserts = ["assert add(1, 2) == 3", "assert add(-1, 1) == 0", "assert add(2, 2) == 5"]
    call = json.dumps({"fn_name": "square", "inputs": [[2], [5], [-3]], "outputs": [[4], [25], [9]]})
    completions = [good, partial, crash,
                   "```python\ndef add(a, b):\n    return a + b\n```",
                   "```python\nclass Solution:\n    def square(self, n):\n        return n * n\n```",
                   "```python\ndef square(n):\n    return n * n if n > 0 else 0\n```"]
    tests = [ADD_STDIO, ADD_STDIO, ADD_STDIO, asserts, call, call]
    out = fn(["p"] * 6, completions, tests=tests)
    assert out == pytest.approx([1.0, 1 / 3, 0.0, 2 / 3, 1.0, 2 / 3])
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


# ---------------------------------------------------------------------------- extraction is linear
def _old_extract_code(text):  # the regex implementation this replaced, as the reference
    import re

    blocks = re.compile(r"```[ \t]*([A-Za-z0-9_+-]*)[^\n]*\n(.*?)```", re.DOTALL).findall(text)
    py = [b for lang, b in blocks if lang.lower() in ("python", "py", "python3")]
    if py:
        return py[-1]
    if blocks:
        return blocks[-1][1]
    m = re.search(r"```[ \t]*(?:python3?|py)?[^\n]*\n(.*)\Z", text, re.DOTALL)
    return m.group(1) if m else text


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["```", "`", "python", "py", " ", "\t", "\n", "x", "C++"]), max_size=20).map("".join))
def test_extract_code_matches_the_old_regex(text):
    assert extract_code(text) == _old_extract_code(text)


def test_extract_code_is_linear_on_a_long_fence_line():
    import time

    t0 = time.perf_counter()
    extract_code("`" * 200_000)  # the old regex backtracked over the line from every position
    assert time.perf_counter() - t0 < 5


# ---------------------------------------------------------------------------- trusted judging of asserts
PROGRAM = """
import math
def f(x): return x * 2
def g(xs): return sorted(xs)
def tup(): return (1, [2, 3])
def words(s): return s.split()
class Stack:
    def __init__(self): self.s = []
    def push(self, x): self.s.append(x)
    def pop(self): return self.s.pop()
"""


@pytest.mark.parametrize("test,ok", [
    ("assert f(2) == 4", True),
    ("assert f(3) == 7", False),
    ("assert math.isclose(f(0.1), 0.2)", True),
    ("import math\nassert math.isclose(f(0.1), 0.2, rel_tol=1e-9)", True),
    ("assert math.isclose(f(0.1), 0.3)", False),  # math without an import is still the real one
    ("from math import isclose\nassert isclose(f(0.1), 0.3)", False),
    ("assert set(g([3, 1, 2])) == {1, 2, 3}", True),
    ("assert sorted(g([1] * 3), reverse=True) == [1, 1, 1] and len(g([])) == 0", True),
    ("assert abs(f(0.5) - 1) < 1e-9", True),
    ("assert f(2) in (3, 4) and f(2) is not None", True),
    ("assert isinstance(g([1]), list) and type(tup()) == tuple", True),
    ("assert type(tup()) == list", False),
    ("assert tup() == (1, [2, 3])", True),
    ("assert tup() == [1, [2, 3]]", False),  # a tuple is not a list, as in Python
    ("a, b = tup()\nassert a == 1 and b == [2, 3]", True),
    ("assert tup()[1][0] == 2", True),
    ("assert words('a b').count('a') == 1 and str(f(2)).strip() == '4'", True),
    ("x = [5, 6]\nassert g(x) == [5, 6]", True),
    ("s = Stack()\ns.push(1)\ns.push(2)\nassert s.pop() == 2\nassert s.pop() == 1", True),
    ("def check(candidate):\n    assert candidate(1) == 2\n    for i in range(3):\n        assert candidate(i) == 2 * i\n"
     "check(f)", True),
    ("def check(candidate):\n    assert candidate(1) == 3\ncheck(f)", False),
    ("assert f(1) == 2\nassert f(2) == 5", False),
    ("assert not f(0)", True),
    ("assert f(10 ** 6) == 2 * 10 ** 6", True),
    ("assert nonexistent(1) == 2", False),
])
def test_assert_tests_are_judged_here(test, ok):
    passed, res = judge_asserts(PROGRAM, [test], limits=LIMITS)
    assert passed == [ok], res.stderr[-500:]


@pytest.mark.parametrize("test,what", [
    ("assert eval('f(1) == 2')", "builtin eval"),
    ("assert f(1).__eq__(2)", "dunder"),
    ("import os\nassert f(1)", "import os"),
    ("assert (lambda v: v == 2)(f(1))", "Lambda"),
    ("def check(c):\n    assert c(1) == 2\n", "runs no assert"),
    ("assert sorted(g([1]), key=lambda t: t) == [1]", "Lambda"),
    ("for v in g([1, 2]):\n    assert v > 0", "loop over the program's output"),
    ("y = sorted(g([2]))\nassert f(y) == 4", "passed back to the program"),
    ("while True:\n    assert f(1)", "While"),
    ("assert f(", "does not parse"),
    ("assert sum([1, 2]) == 3", "reads nothing from the program"),  # would pass for any program
    ("assert re.match('a', words('a')[0])", "module re"),  # the program could bind re to a fake
])
def test_tests_the_judge_cannot_evaluate_are_refused(test, what):
    with pytest.raises(UnsupportedTest, match=what):
        judge_asserts(PROGRAM, [test], limits=LIMITS)


def test_unsupported_tests_score_none_with_a_warning():
    pop_reward_stats()
    fn = make_code_reward(limits=LIMITS, workers=1)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        out = fn(["p"] * 2, ["```python\ndef f(x): return 2 * x\n```"] * 2,
                 tests=[["assert eval('f(1) == 2')"], ["assert f(1) == 2"]])
    assert out == [None, 1.0]
    assert pop_reward_stats()["code/unsupported_tests"] == 1
    assert any("row 0" in str(x.message) and "trusted judge" in str(x.message) for x in w)


def test_hostile_test_values_cannot_stall_the_judge():
    code = "def big(): return 10 ** 4000\ndef many(): return [0] * 100000\ndef s(): return 'ab'\n"
    tests = ["assert 2 ** big() == 1", "assert many() * 10 ** 6 == []", "assert s().replace('', 'x' * 10 ** 7)",
             "assert len(list(range(big()))) == 1"]
    passed, _ = judge_asserts(code, tests, limits=LIMITS)
    assert passed == [False] * 4


def test_call_based_compares_plain_values():
    code = ("def t(x): return (x, [x])\n"
            "def d(x): return {x: 1}\n"
            "def s(x): return {x}\n"
            "class E:\n    def __eq__(self, o): return True\n"
            "def e(x): return E()\n")
    assert run_tests(code, parse_tests({"fn_name": "t", "inputs": [[1]], "outputs": [[1, [1]]]}), limits=LIMITS) == [True]
    assert run_tests(code, parse_tests({"fn_name": "d", "inputs": [[1]], "outputs": [{"1": 1}]}), limits=LIMITS) == [True]
    assert run_tests(code, parse_tests({"fn_name": "s", "inputs": [[1]], "outputs": [[1]]}), limits=LIMITS) == [False]
    assert run_tests(code, parse_tests({"fn_name": "e", "inputs": [[1]], "outputs": [2]}), limits=LIMITS) == [False]


def test_comprehensions_and_generators_are_judged_here_per_element():
    code = "def f(x, y):\n    return x * 10 + y\ndef g(xs):\n    return [x + 1 for x in xs]\n"
    tests = ["assert [f(x, y) for x in range(3) for y in range(2)] == [0, 1, 10, 11, 20, 21]",
             "assert all(f(x, y) == 10 * x + y for x in [1, 2] for y in [3, 4])",
             "for a in range(2):\n    assert [f(a, b) for b in range(2)] == [10 * a, 10 * a + 1]",
             "assert all(v > 0 for v in g([1, 2]))",  # over the program's output: no program call inside
             "assert {k: f(k, 0) for k in range(2)} == {0: 0, 1: 10}",
             "assert [f(x, y) for x in range(3) for y in range(2)] == [0, 1, 10, 11, 20, 22]"]
    passed, _ = judge_asserts(code, tests, limits=LIMITS)
    assert passed == [True, True, True, True, True, False]
    with pytest.raises(UnsupportedTest, match="passed back to the program"):
        judge_asserts(code, ["assert all(f(v, 0) > 0 for v in g([1]))"], limits=LIMITS)
