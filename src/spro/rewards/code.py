"""Code reward: run the completion's Python against the row's tests in :mod:`spro.rewards.sandbox`.

The program is the last fenced block marked ``python``/``py``/``python3`` in the completion,
else the last fenced block of any language, else the whole completion text.

Test specifications (the ``tests`` column, else the ``answer`` column; a JSON string is decoded):

* stdin/stdout pairs ``{"inputs": [str, ...], "outputs": [str, ...]}`` (the Eurus-2-RL-Data /
  PRIME / APPS / TACO ``ground_truth`` format): one sandboxed run per pair, the input on stdin,
  in order; the row stops at its first failing or timed-out case (the cases after it count as
  failed) and all its runs share one time budget (``row_seconds``). Outputs are compared line by
  line ignoring trailing white space, then token by token: two integers must be equal exactly,
  and only where a token is a decimal number are numbers equal within 1e-6 (absolute or
  relative);
* call-based ``{"fn_name": "f", "inputs": [[args...], ...], "outputs": [value, ...]}`` (APPS):
  one run calls ``f`` (a function, or a method of ``class Solution``) on each argument list and
  sends back each return value as plain data; here, a value ``v`` (in its JSON form: tuples as
  lists, dict keys as strings) matches ``expected`` if ``v == expected`` or ``[v] == expected``
  (APPS wraps outputs in a list);
* assert-style: a list of test cases ``["assert f(1) == 2", ...]`` (also under the keys
  ``"asserts"``, ``"test_list"`` or ``"tests"`` of a dict), or a single string of test code (one
  case; HumanEval's ``def check(candidate): ...`` followed by ``check(f)`` works). The program
  runs once; each case is **judged here** (:mod:`spro.rewards.asserts`): the sandbox computes
  only the values the assertions read from the program (``f`` called on ``1``) and everything
  else, the comparison with the expected values included, happens in this process (see
  :class:`~spro.rewards.asserts.UnsupportedTest` for what a test may use).

Who decides: the expected outputs and values stay in this process; the sandboxed program only
ever sends back its output or plain-data values, so it cannot forge a pass (an object whose
``__eq__`` is always true arrives as its base data, or as an unrepresentable value that equals
nothing; a program that exits early delivers nothing).

Reward per row: the fraction of test cases passed (``mode="fraction"``, default) or 1.0 only
if all pass (``mode="all"``). A row whose tests are missing or unreadable scores ``None``
(counted as ``code/bad_tests``), as does one whose assert-style tests use something the judge
does not evaluate (``code/unsupported_tests``, with a warning saying what) or whose verdict would
need the program's own code (``code/needs_program_code``); a program that fails to run scores
0.0. Runs that time out are counted (``code/timeouts``), and rows stopped by their time budget
(``code/row_budget``).

A call as a whole stays within the budget of ``spro.rewards.reward_budget`` (the trainer's
``data.reward_timeout``): each row's ``row_seconds`` is cut to what is left of it, no row starts
once it is spent, and a row not run, or whose budget it cut and that did not pass every case,
scores None (``code/batch_budget``): it was not judged. In the trainer, ``data.code.*`` sets
``row_seconds``, ``isolation`` and ``workers``.
"""

from __future__ import annotations

import dataclasses
import json
import re
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from spro.rewards import budget_left, completion_text, count_event, limits_itself, register_reward, sandbox
from spro.rewards.asserts import TRUSTED_BUILTINS, UnsupportedTest, judge_asserts, run_asserts
from spro.rewards.sandbox import SandboxLimits, SandboxResult

__all__ = [
    "extract_code",
    "parse_tests",
    "TestSpec",
    "outputs_match",
    "run_tests",
    "judge_asserts",
    "run_asserts",
    "UnsupportedTest",
    "TRUSTED_BUILTINS",
    "make_code_reward",
    "code_reward",
    "make_eurus_reward",
    "eurus_reward",
    "CODE_SOURCES",
]

_LANG_RE = re.compile(r"[ \t]*([A-Za-z0-9_+-]*)")


def _fenced_blocks(text: str) -> list[tuple[str, str]]:
    """``(language, body)`` of every fenced block, in one pass (a completion is written by the
    policy: a regular expression that backtracks over a long fence line would be quadratic)."""
    blocks = []
    pos = 0
    while True:
        i = text.find("```", pos)
        if i < 0:
            break
        nl = text.find("\n", i + 3)
        if nl < 0:
            break
        j = text.find("```", nl + 1)
        if j < 0:
            break
        lang = _LANG_RE.match(text, i + 3, nl).group(1)  # type: ignore[union-attr]
        blocks.append((lang, text[nl + 1:j]))
        pos = j + 3
    return blocks


def extract_code(text: Any) -> str:
    """The program in a completion (rules in the module docstring)."""
    text = completion_text(text)
    blocks = _fenced_blocks(text)
    py = [b for lang, b in blocks if lang.lower() in ("python", "py", "python3")]
    if py:
        return py[-1]
    if blocks:
        return blocks[-1][1]
    # An opening fence without a closing one (truncated completion): the rest after its line.
    i = text.find("```")
    nl = text.find("\n", i + 3) if i >= 0 else -1
    if nl >= 0:
        return text[nl + 1:]
    return text


@dataclass
class TestSpec:
    """Parsed tests of one row. ``kind`` is "stdio", "call" or "asserts"."""

    __test__ = False  # not a pytest test class

    kind: Literal["stdio", "call", "asserts"]
    inputs: list[Any]
    outputs: list[Any]
    fn_name: str | None = None

    def __len__(self) -> int:
        return len(self.inputs)


def parse_tests(spec: Any) -> TestSpec:
    """Read a row's test specification (formats in the module docstring).

    Raises ValueError saying what is wrong (empty, mismatched lengths, unknown shape).
    """
    if spec is None:
        raise ValueError("no tests given (None)")
    if isinstance(spec, bytes):
        spec = spec.decode("utf-8", errors="replace")
    if isinstance(spec, str):
        s = spec.strip()
        if not s:
            raise ValueError("tests are an empty string")
        if s[0] in "[{":
            try:
                decoded = json.loads(s)
            except json.JSONDecodeError as e:
                raise ValueError(f"tests look like JSON but do not parse: {e}") from None
            return parse_tests(decoded)
        return TestSpec("asserts", [s], [None])
    if isinstance(spec, dict):
        for key in ("asserts", "test_list", "tests"):
            if key in spec and spec[key] is not None:
                return parse_tests(list(spec[key]) if not isinstance(spec[key], str) else spec[key])
        if "inputs" in spec and "outputs" in spec:
            ins, outs = spec["inputs"], spec["outputs"]
            if not isinstance(ins, list) or not isinstance(outs, list):
                raise ValueError("'inputs' and 'outputs' must be lists")
            if len(ins) != len(outs):
                raise ValueError(f"{len(ins)} inputs but {len(outs)} outputs")
            if not ins:
                raise ValueError("no test cases (empty 'inputs')")
            fn = spec.get("fn_name")
            if fn:
                return TestSpec("call", [a if isinstance(a, list) else [a] for a in ins], list(outs), str(fn))
            return TestSpec("stdio", [_as_text(x) for x in ins], [_as_text(x) for x in outs])
        raise ValueError(f"unknown test format: dict with keys {sorted(spec)[:10]}")
    if isinstance(spec, (list, tuple)):
        items = list(spec)
        if not items:
            raise ValueError("empty list of tests")
        if all(isinstance(t, str) for t in items):
            items = [t for t in items if t.strip()]
            if not items:
                raise ValueError("all test statements are empty")
            return TestSpec("asserts", items, [None] * len(items))
        raise ValueError("a list of tests must hold strings (assert statements)")
    raise ValueError(f"unknown test format: {type(spec).__name__}")


def _as_text(x: Any) -> str:
    if isinstance(x, list):
        return "\n".join(str(v) for v in x)
    return str(x)


_INT = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


def _tokens_match(a: str, b: str, tol: float) -> bool:
    """Two output tokens: equal text; or both integers, equal as integers (no tolerance, so
    ``1000000000`` never passes for ``1000000007``); or numbers of which one at least is a
    decimal, equal within ``tol`` (absolute or relative)."""
    if a == b:
        return True
    if len(a) > 4000 or len(b) > 4000:  # int() of longer digit strings is refused anyway
        return False
    if _INT.fullmatch(a) and _INT.fullmatch(b):
        return int(a) == int(b)
    if not (_DECIMAL.fullmatch(a) and _DECIMAL.fullmatch(b)):
        return False
    x, y = float(a), float(b)
    if x - x != 0 or y - y != 0:  # overflowed to inf
        return False
    return abs(x - y) <= tol or abs(x - y) <= tol * max(abs(x), abs(y))


def outputs_match(got: str, expected: str, *, tol: float = 1e-6) -> bool:
    """Compare program output with the expected output (see the module docstring)."""
    g = [ln.rstrip() for ln in got.replace("\r\n", "\n").strip().split("\n")]
    e = [ln.rstrip() for ln in str(expected).replace("\r\n", "\n").strip().split("\n")]
    if g == e:
        return True
    gt, et = got.split(), str(expected).split()
    if len(gt) != len(et):
        return False
    return all(_tokens_match(a, b, tol) for a, b in zip(gt, et))


def _json_norm(v: Any) -> Any:
    try:
        return json.loads(json.dumps(v))
    except (TypeError, ValueError):
        return v


def _call_matches(value: Any, expected: Any) -> bool:
    """APPS call-based comparison, by value on plain data: the return value in its JSON form
    (tuples as lists, dict keys as strings) equals ``expected`` or ``[expected]``."""
    try:
        v = json.loads(json.dumps(value))
    except (TypeError, ValueError, RecursionError):  # sets, bytes, unrepresentable objects ...
        return False
    exp = _json_norm(expected)
    return v == exp or [v] == exp


ROW_SECONDS = 6.0
"""Default time budget of one row (all its sandboxed runs together), in seconds."""


def _within(limits: SandboxLimits, seconds: float) -> SandboxLimits:
    return dataclasses.replace(limits, wall_seconds=min(limits.wall_seconds, seconds),
                               cpu_seconds=min(limits.cpu_seconds, seconds))


def _count_timeout(result: SandboxResult) -> None:
    if result.status == "timeout":
        count_event("code/timeouts")


def run_tests(
    code: str,
    tests: TestSpec,
    *,
    limits: SandboxLimits = SandboxLimits(),
    isolation: str = "auto",
    max_cases: int | None = None,
    row_seconds: float = ROW_SECONDS,
) -> list[bool | None]:
    """Run ``code`` on the cases of ``tests`` in the sandbox; per case pass (True), fail (False)
    or None (assert-style: deciding it would need the program's own code), decided here.

    stdio cases run in order and stop at the first failure or time-out; all runs of the row
    share ``row_seconds`` (each also within ``limits``). Raises :class:`UnsupportedTest` (before
    running anything) for assert-style tests the trusted judge cannot evaluate."""
    n = len(tests) if max_cases is None else min(len(tests), max_cases)
    if row_seconds <= 0:
        raise ValueError(f"row_seconds must be positive, got {row_seconds}")
    if tests.kind == "stdio":
        deadline = time.monotonic() + row_seconds
        passed: list[bool | None] = [False] * n
        for i in range(n):
            left = deadline - time.monotonic()
            if left <= 0:
                count_event("code/row_budget")
                break
            r = sandbox.run_python(code, stdin=tests.inputs[i], limits=_within(limits, left), isolation=isolation)  # type: ignore[arg-type]
            _count_timeout(r)
            passed[i] = r.status == "ok" and outputs_match(r.stdout, tests.outputs[i])
            if not passed[i]:
                break
        return passed
    lim = _within(limits, row_seconds)
    if tests.kind == "asserts":
        verdicts, res = judge_asserts(code, tests.inputs[:n], limits=lim, isolation=isolation)
        _count_timeout(res)
        return verdicts
    calls, res = sandbox.run_calls(code, tests.fn_name or "", tests.inputs[:n], limits=lim, isolation=isolation)  # type: ignore[arg-type]
    _count_timeout(res)
    return [ok and _call_matches(val, exp) for (ok, val), exp in zip(calls, tests.outputs[:n])]


def make_code_reward(
    *,
    mode: Literal["fraction", "all"] = "fraction",
    limits: SandboxLimits = SandboxLimits(),
    workers: int = 2,
    max_cases: int | None = None,
    isolation: str = "auto",
    row_seconds: float = ROW_SECONDS,
):
    """A code reward function ``fn(prompts, completions, tests=None, answer=None, **kw)``.

    Args:
        mode: "fraction" = share of cases passed; "all" = 1.0 only if every case passes.
        limits: sandbox limits per run (:class:`spro.rewards.sandbox.SandboxLimits`).
        workers: rows graded concurrently (each a sandboxed process; threads only wait).
        max_cases: use at most this many test cases per row (None = all).
        isolation: sandbox isolation ("auto", "bwrap", "namespace", "none"); see
            :mod:`spro.rewards.sandbox` and ``spro doctor``.
        row_seconds: time budget of one row, all its sandboxed runs together (stdio rows stop
            at their first failing or timed-out case).
    """
    if mode not in ("fraction", "all"):
        raise ValueError(f"mode must be 'fraction' or 'all', got {mode!r}")

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    def score_row(i: int, completion: Any, spec: Any, deadline: float | None) -> float | None:
        budget = row_seconds if deadline is None else min(row_seconds, deadline - time.monotonic())
        if budget <= 0:
            count_event("code/batch_budget")
            return None
        try:
            tests = parse_tests(spec)
            passed = run_tests(extract_code(completion), tests, limits=limits, isolation=isolation,
                               max_cases=max_cases, row_seconds=budget)
        except UnsupportedTest as e:
            count_event("code/unsupported_tests")
            warnings.warn(f"code reward: row {i}: tests the trusted judge cannot evaluate ({e}); reward None",
                          stacklevel=3)
            return None
        except ValueError as e:
            count_event("code/bad_tests")
            warnings.warn(f"code reward: row {i}: unreadable tests ({e}); reward None", stacklevel=3)
            return None
        if not passed:
            return None
        if budget < row_seconds and not all(passed):  # (its budget cut by the call's: not judged)
            count_event("code/batch_budget")
            return None
        if any(p is None for p in passed):
            count_event("code/needs_program_code")
            warnings.warn(f"code reward: row {i}: a test's verdict would need the program's own code; reward None",
                          stacklevel=3)
            return None
        if mode == "all":
            return 1.0 if all(passed) else 0.0
        return sum(passed) / len(passed)

    @limits_itself
    def code_reward(prompts: Sequence[Any], completions: Sequence[Any], tests: Sequence[Any] | None = None,
                    answer: Sequence[Any] | None = None, **kw: Any) -> list[float | None]:
        left = budget_left()  # (read here: the worker threads do not see the caller's budget)
        deadline = None if left is None else time.monotonic() + left
        specs = tests if tests is not None else answer
        if specs is None:
            raise ValueError("code reward needs a 'tests' column (or test cases in the 'answer' column)")
        if len(specs) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(specs)} test specifications")
        rows = list(enumerate(zip(completions, specs)))
        if workers <= 1 or len(rows) <= 1:
            return [score_row(i, c, s, deadline) for i, (c, s) in rows]
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(lambda r: score_row(r[0], r[1][0], r[1][1], deadline), rows))

    return code_reward


_default_code = make_code_reward()


@register_reward("code")
@limits_itself
def code_reward(prompts: Sequence[Any], completions: Sequence[Any], tests: Sequence[Any] | None = None,
                answer: Sequence[Any] | None = None, **kw: Any) -> list[float | None]:
    """Fraction of the row's test cases the completion's program passes (defaults of
    :func:`make_code_reward`); tests from the ``tests`` column, else ``answer``."""
    return _default_code(prompts, completions, tests=tests, answer=answer, **kw)


# data_source values of Eurus-2-RL-Data's coding rows (and common code datasets).
CODE_SOURCES = ("taco", "codecontests", "code_contests", "apps", "codeforces", "leetcode", "kodcode",
                "mbpp", "humaneval", "livecodebench", "code")


def _is_code_row(source: Any, spec: Any) -> bool:
    if isinstance(source, str) and source:
        s = source.lower()
        return any(s == c or s.startswith(c) or s.endswith(c) for c in CODE_SOURCES)
    if isinstance(spec, dict):
        return "inputs" in spec
    if isinstance(spec, str) and spec.lstrip().startswith("{"):
        try:
            d = json.loads(spec)
        except ValueError:
            return False
        return isinstance(d, dict) and "inputs" in d
    return False


def make_eurus_reward(code: Any = None, math: Any = None):
    """An eurus reward function (see :func:`eurus_reward`) with these code and math rewards (None: the
    defaults, :func:`code_reward` and :func:`spro.rewards.math.math_reward`)."""

    @limits_itself
    def eurus_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any] | None = None,
                     data_source: Sequence[Any] | None = None, tests: Sequence[Any] | None = None,
                     **kw: Any) -> list[float | None]:
        from spro.rewards.math import math_reward

        n = len(completions)
        if answer is None and tests is None:
            raise ValueError("eurus reward needs an 'answer' (ground truth) column")
        answers = list(answer) if answer is not None else [None] * n
        test_col = list(tests) if tests is not None else [None] * n
        sources = list(data_source) if data_source is not None else [None] * n
        is_code = [_is_code_row(sources[i], test_col[i] if test_col[i] is not None else answers[i]) for i in range(n)]
        out: list[float | None] = [None] * n
        ci = [i for i in range(n) if is_code[i]]
        mi = [i for i in range(n) if not is_code[i]]
        if ci:
            vals = (code or code_reward)([prompts[i] for i in ci], [completions[i] for i in ci],
                                         tests=[test_col[i] if test_col[i] is not None else answers[i] for i in ci])
            for i, v in zip(ci, vals):
                out[i] = v
        if mi:
            vals = (math or math_reward)([prompts[i] for i in mi], [completions[i] for i in mi],
                                         answer=[answers[i] for i in mi])
            for i, v in zip(mi, vals):
                out[i] = v
        return out

    return eurus_reward


_default_eurus = make_eurus_reward()


@register_reward("eurus")
@limits_itself
def eurus_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any] | None = None,
                 data_source: Sequence[Any] | None = None, tests: Sequence[Any] | None = None,
                 **kw: Any) -> list[float | None]:
    """Mixed math + code data (Eurus-2-RL-Data style): rows whose ``data_source`` is a coding
    source (see ``CODE_SOURCES``; or, without a source, whose ground truth holds test cases) get
    :func:`code_reward`, the others :func:`spro.rewards.math.math_reward`."""
    return _default_eurus(prompts, completions, answer=answer, data_source=data_source, tests=tests, **kw)
