"""Two suites through the real code reward: realistic correct solutions (MBPP, HumanEval and APPS
styles) that must all score 1.0, and hostile programs, one group per class of attack on the
judge, that must all score 0.0 (or None where the rule is that a test whose verdict would need the
program's own code scores None). Counters, not clocks, show that hanging rows stop early."""

from __future__ import annotations

import json
import warnings

import pytest

from spro.rewards import pop_reward_stats
from spro.rewards.code import make_code_reward, outputs_match
from spro.rewards.format import format_reward
from spro.rewards.math import grade_answer
from spro.rewards.sandbox import SandboxLimits

LIMITS = SandboxLimits(cpu_seconds=5, wall_seconds=30, memory_mb=1024, output_bytes=256 * 1024)


def _score(rows: list[tuple[str, object]], **kw) -> list[float | None]:
    fn = make_code_reward(limits=kw.pop("limits", LIMITS), workers=2, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return fn(["p"] * len(rows), [f"```python\n{c}\n```" for c, _ in rows], tests=[t for _, t in rows])


# ------------------------------------------------------------------------------------------
# Realistic correct solutions: every one scores 1.0
# ------------------------------------------------------------------------------------------
CORRECT = {
    "mbpp88_counter": (
        "import collections\ndef freq_count(list1):\n    return collections.Counter(list1)",
        ["assert freq_count([10,10,10,10,20,20,20,20,40,40,50,50,30])==({10: 4, 20: 4, 40: 2, 50: 2, 30: 1})",
         "assert freq_count([1,2,3,4,3,2,4,1,3,1,4])==({1:3, 2:2,3:3,4:3})"]),
    "defaultdict_grouping": (
        "from collections import defaultdict\ndef group(pairs):\n    d = defaultdict(list)\n"
        "    for k, v in pairs:\n        d[k].append(v)\n    return d",
        ["assert group([('a', 1), ('b', 2), ('a', 3)]) == {'a': [1, 3], 'b': [2]}"]),
    "ordereddict": (
        "from collections import OrderedDict\ndef first_seen(s):\n    return OrderedDict((c, s.count(c)) for c in s)",
        ["assert first_seen('abca') == {'a': 2, 'b': 1, 'c': 1}", "assert list(first_seen('ba')) == ['b', 'a']"]),
    "namedtuple": (
        "from collections import namedtuple\nPoint = namedtuple('Point', 'x y')\n"
        "def midpoint(a, b):\n    return Point((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)",
        ["assert midpoint((0, 0), (2, 4)) == (1.0, 2.0)", "assert midpoint((0, 0), (2, 4))[1] == 2"]),
    "deque_rotate": (
        "from collections import deque\ndef rotate(xs, k):\n    d = deque(xs)\n    d.rotate(k)\n    return d",
        ["assert rotate([1, 2, 3], 1) == [3, 1, 2]", "assert list(rotate([1, 2], 2)) == [1, 2]"]),
    "numpy_scalars_and_arrays": (
        "import numpy as np\ndef mean(xs):\n    return np.mean(xs)\ndef total(xs):\n    return np.sum(xs)\n"
        "def doubled(xs):\n    return np.array(xs) * 2",
        ["import math\nassert math.isclose(mean([1, 2, 3]), 2.0)", "assert total([1, 2, 3]) == 6",
         "assert doubled([1, 2]) == [2, 4]", "assert list(doubled([3])) == [6]"]),
    "fraction_and_decimal": (
        "from fractions import Fraction\nfrom decimal import Decimal\n"
        "def harmonic(n):\n    return sum(Fraction(1, k) for k in range(1, n + 1))\n"
        "def total(prices):\n    return sum(Decimal(p) for p in prices)",
        ["assert harmonic(2) == 1.5", "assert harmonic(3) * 6 == 11", "assert str(total(['1.10', '2.20'])) == '3.30'"]),
    "generators_maps_views": (
        "def squares(n):\n    for i in range(n):\n        yield i * i\n"
        "def doubled(xs):\n    return map(lambda x: 2 * x, xs)\n"
        "def keys(d):\n    return d.keys()\ndef evens(xs):\n    return filter(lambda x: x % 2 == 0, xs)",
        ["assert list(squares(4)) == [0, 1, 4, 9]", "assert list(doubled([1, 2])) == [2, 4]",
         "assert sorted(keys({'b': 1, 'a': 2})) == ['a', 'b']", "assert set(evens([1, 2, 3, 4])) == {2, 4}",
         "assert sum(squares(3)) == 5"]),
    "all_any_generators": (
        "def is_prime(n):\n    return n > 1 and all(n % d for d in range(2, int(n ** 0.5) + 1))",
        ["assert all(is_prime(p) for p in [2, 3, 5, 7, 11])", "assert not any(is_prime(c) for c in [1, 4, 6, 9])",
         "assert [n for n in range(10) if is_prime(n)] == [2, 3, 5, 7]"]),
    "tolerance_checks": (
        "import math\ndef area(r):\n    return math.pi * r * r",
        ["import math\nassert math.isclose(area(2), 12.566, rel_tol=1e-3)", "assert abs(area(1) - 3.14159) < 1e-4",
         "assert round(area(1), 2) == 3.14"]),
    "builtin_methods_on_values": (
        "def greet(name):\n    return 'Hello, ' + name + '!'\ndef common(a, b):\n    return set(a) & set(b)",
        ["assert greet('Bob').startswith('Hello')", "assert greet('Bob').lower().endswith('bob!')",
         "assert common([1, 2], [2, 3]).issubset({2, 3})", "assert greet('x').count('l') == 2"]),
    "humaneval_check_with_cases": (
        "def add(x: int, y: int):\n    return x + y",
        "METADATA = {}\n\ndef check(candidate):\n    assert candidate(0, 1) == 1\n"
        "    for x, y in [(2, 3), (5, 7)]:\n        assert candidate(x, y) == x + y\n"
        "    cases = [{'in': (1, 1), 'out': 2}, {'in': (3, 4), 'out': 7}]\n"
        "    for c in cases:\n        assert candidate(c['in'][0], c['in'][1]) == c['out']\n\ncheck(add)"),
    "class_with_state": (
        "class Stack:\n    def __init__(self):\n        self.items = []\n    def push(self, x):\n"
        "        self.items.append(x)\n    def pop(self):\n        return self.items.pop()\n",
        ["s = Stack()\ns.push(1)\ns.push(2)\nassert s.pop() == 2\nassert s.items == [1]"]),
    "lambda_argument": (
        "def apply_all(f, xs):\n    return [f(x) for x in xs]",
        ["assert apply_all(lambda x: x * x, [1, 2, 3]) == [1, 4, 9]"]),
    "apps_stdio": (
        "import sys\ndata = sys.stdin.read().split()\nn = int(data[0])\nxs = list(map(int, data[1:1 + n]))\n"
        "print(sum(xs))\nprint('%.6f' % (sum(xs) / n))",
        {"inputs": ["3\n1 2 4\n", "2\n1000000000 1000000007\n"], "outputs": ["7\n2.333333\n", "2000000007\n1000000003.5\n"]}),
    "apps_call_based": (
        "class Solution:\n    def twoSum(self, nums, target):\n        seen = {}\n        for i, x in enumerate(nums):\n"
        "            if target - x in seen:\n                return [seen[target - x], i]\n            seen[x] = i",
        json.dumps({"fn_name": "twoSum", "inputs": [[[2, 7, 11, 15], 9], [[3, 2, 4], 6]], "outputs": [[0, 1], [1, 2]]})),
    "tuple_returns": (
        "def min_max(xs):\n    return min(xs), max(xs)",
        ["assert min_max([3, 1, 2]) == (1, 3)", "lo, hi = min_max([5, 9])\nassert lo == 5 and hi == 9"]),
}


def test_realistic_correct_solutions_all_score_one():
    names = list(CORRECT)
    pop_reward_stats()
    out = _score([CORRECT[n] for n in names])
    assert dict(zip(names, out)) == {n: 1.0 for n in names}


# ------------------------------------------------------------------------------------------
# Hostile programs, by class: every one scores 0.0 (or None where the verdict needs the program)
# ------------------------------------------------------------------------------------------
FRAME_THIEF = (  # looks for its caller's test case: a dict with an 'out', or an (input, output) pair
    "import gc, sys\n"
    "def _answer(x, v):\n"
    "    if isinstance(v, dict) and 'out' in v:\n"
    "        return v['out']\n"
    "    if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == x and v[1] != x:\n"
    "        return v[1]\n"
    "def _find(x):\n"
    "    f = sys._getframe(1)\n"
    "    while f is not None:\n"
    "        for v in list(f.f_locals.values()) + list(f.f_globals.values()):\n"
    "            for w in ([v] + list(v) if isinstance(v, (list, tuple)) else [v]):\n"
    "                if _answer(x, w) is not None:\n"
    "                    return _answer(x, w)\n"
    "        f = f.f_back\n"
    "    for o in gc.get_objects():\n"
    "        if _answer(x, o) is not None:\n"
    "            return _answer(x, o)\n"
    "    return 0\n"
    "def f(x):\n"
    "    return _find(x)\n")

HOSTILE_EXPECTED_SIDE = {
    "frame_thief_loop_over_dicts": (
        FRAME_THIEF, ["cases = [{'in': 1, 'out': 777123}]\nfor c in cases:\n    assert f(c['in']) == c['out']"], 0.0),
    "frame_thief_humaneval_check": (
        FRAME_THIEF, "def check(candidate):\n    for x, y in [(1, 777123)]:\n        assert candidate(x) == y\ncheck(f)", 0.0),
    "method_answered_by_program": (
        "class S(str):\n    def startswith(self, *a): return True\n    def endswith(self, *a): return True\n"
        "class T(set):\n    def issubset(self, o): return True\n"
        "def f(x): return S('zzz')\ndef g(x): return T({9})",
        ["assert f(1).startswith('abc')", "assert f(1).endswith('q')", "assert g(1).issubset({1, 2})"], 0.0),
    "method_of_a_program_object": (
        "class Box:\n    def count(self, x): return 3\ndef f(): return Box()", ["assert f().count(1) == 3"], None),
    "helper_judges_its_own_output": (
        "def is_palindrome(s): return True\ndef make_palindrome(s): return s",
        ["assert is_palindrome(make_palindrome('ab'))"], None),
    "undefined_name_in_check": (
        "def encode(s): return s\ndef decode(s): return s",
        "def check(candidate):\n    assert candidate(encode('abc')) == 'abc'\ncheck(decode)", None),
    "program_chooses_the_expected_value": (
        "EXPECTED = 5\ndef f(x): return 5", ["assert f(1) == EXPECTED"], None),
}

HOSTILE_VALUES = {
    "colliding_counter": (
        "from collections import Counter\nP = 2 ** 61 - 1\ndef f():\n    return Counter({k * P: 1 for k in range(1, 5000)})",
        ["assert f() == {}"], 0.0),
    "colliding_set_from_list": (
        "P = 2 ** 61 - 1\ndef f():\n    return [k * P for k in range(1, 20000)]",
        ["assert len(set(f())) == 1", "assert dict((x, 1) for x in f()) == {}"], 0.0),
    "huge_product": (
        "def f():\n    return [3 ** 5000] * 20000", ["import math\nassert math.prod(f()) == 1"], 0.0),
    "deep_nesting": (
        "def f():\n    x = []\n    for _ in range(10000):\n        x = [x]\n    return x", ["assert f() == []"], 0.0),
    "infinite_generator": (
        "import itertools\ndef f():\n    return itertools.count()", ["assert list(f()) == [0]"], 0.0),
    "always_equal_subclasses": (
        "class I(int):\n    def __eq__(self, o): return True\n    __hash__ = int.__hash__\n"
        "class L(list):\n    def __eq__(self, o): return True\n"
        "def f(x): return I(x)\ndef g(x): return L([x])",
        ["assert f(1) == 2", "assert g(1) == [2]"], 0.0),
}


@pytest.mark.parametrize("suite", [HOSTILE_EXPECTED_SIDE, HOSTILE_VALUES], ids=["expected_side", "values"])
def test_hostile_programs_score_nothing(suite):
    names = list(suite)
    pop_reward_stats()
    out = _score([(suite[n][0], suite[n][1]) for n in names])
    assert dict(zip(names, out)) == {n: suite[n][2] for n in names}
    stats = pop_reward_stats()
    nones = sum(1 for n in names if suite[n][2] is None)
    assert stats.get("code/unsupported_tests", 0) + stats.get("code/needs_program_code", 0) == nones


def test_stdio_integers_exact_and_decimals_with_tolerance():
    assert not outputs_match("1000000000", "1000000007")  # no tolerance between integers
    assert outputs_match("1", "1.0000001")  # a decimal on one side: tolerance
    assert outputs_match("2.3333333", "2.333333")
    assert outputs_match("-0", "0") and outputs_match("+5", "5")
    assert not outputs_match("1_000", "1000")
    assert not outputs_match("inf", "1e999")
    out = _score([("print(1000000000)", {"inputs": [""], "outputs": ["1000000007"]})])
    assert out == [0.0]


def test_hanging_stdio_row_stops_at_its_first_time_out():
    pop_reward_stats()
    hang = "while True:\n    pass"
    spec = {"inputs": [str(i) for i in range(20)], "outputs": ["0"] * 20}
    out = _score([(hang, spec), ("print(0)", spec)], limits=SandboxLimits(cpu_seconds=1, wall_seconds=1.5),
                 row_seconds=30)
    assert out == [0.0, 1.0]
    assert pop_reward_stats().get("code/timeouts") == 1  # one run of the hanging row, not 20


def test_row_budget_stops_a_slow_row():
    pop_reward_stats()
    slow = "import time\ntime.sleep(0.4)\nprint(0)"
    spec = {"inputs": [""] * 30, "outputs": ["0"] * 30}
    out = _score([(slow, spec)], row_seconds=1.0)
    assert out[0] is not None and out[0] < 0.5  # the budget ends the row long before its 30 cases
    stats = pop_reward_stats()
    assert stats.get("code/row_budget", 0) + stats.get("code/timeouts", 0) == 1


@pytest.mark.parametrize("pred,gold", [(".5", "5"), (".72", "72"), ("72 \\lor 73", "72"), ("72|73", "72"),
                                       ("72 \\text{ (or 73)}", "72"), ("72 or 73", "72"),
                                       ("5 + \\undefinedmacro{3}", "5"), ("x = 5 + \\frac{1}{2} \\cdot \\sqrt{}{{", "5")])
def test_math_hedges_fragments_and_loose_strings_score_zero(pred, gold):
    assert grade_answer(pred, gold, timeout=30) is False


@pytest.mark.parametrize("pred,gold", [(".72", "0.72"), ("(B)", "B"), ("\\text{Paris}", "Paris"), ("1,000", "1000"),
                                       ("3 \\text{ apples}", "3"), ("\\frac{1}{2}", "0.5")])
def test_math_equivalent_answers_still_score(pred, gold):
    assert grade_answer(pred, gold, timeout=30) is True


def test_format_reward_needs_a_closed_non_empty_box():
    texts = ["\\boxed{5", "\\boxed{ }", "\\boxed{}", "\\boxed{5}", "so \\boxed{a{b}c}.", "\\boxed{" * 500 + "1"]
    assert format_reward(["p"] * len(texts), texts) == [0.0, 0.0, 0.0, 1.0, 1.0, 0.0]
