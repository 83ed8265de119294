"""Code reward: run the completion's Python against the row's tests in :mod:`spro.rewards.sandbox`.

The program is the last fenced block marked ``python``/``py``/``python3`` in the completion,
else the last fenced block of any language, else the whole completion text.

Test specifications (the ``tests`` column, else the ``answer`` column; a JSON string is decoded):

* stdin/stdout pairs ``{"inputs": [str, ...], "outputs": [str, ...]}`` (the Eurus-2-RL-Data /
  PRIME / APPS / TACO ``ground_truth`` format): one sandboxed run per pair, the input on stdin;
  outputs compared line by line ignoring trailing white space, then token by token with numbers
  equal within 1e-6 (absolute or relative);
* call-based ``{"fn_name": "f", "inputs": [[args...], ...], "outputs": [value, ...]}`` (APPS):
  one run calls ``f`` (a function, or a method of ``class Solution``) on each argument list and
  sends back each return value as plain data; here, a value ``v`` (in its JSON form: tuples as
  lists, dict keys as strings) matches ``expected`` if ``v == expected`` or ``[v] == expected``
  (APPS wraps outputs in a list);
* assert-style: a list of test cases ``["assert f(1) == 2", ...]`` (also under the keys
  ``"asserts"``, ``"test_list"`` or ``"tests"`` of a dict), or a single string of test code (one
  case; HumanEval's ``def check(candidate): ...`` followed by ``check(f)`` works). The program
  runs once; each case is **judged here**: the sandbox computes only the values the assertions
  read from the program (``f(1)``) and the comparison with the expected values, which never
  enter the sandbox, happens in this process (see :class:`UnsupportedTest` for what a test may
  use).

Who decides: the expected outputs and values stay in this process; the sandboxed program only
ever sends back its output or plain-data values, so it cannot forge a pass (an object whose
``__eq__`` is always true arrives as an unrepresentable value that equals nothing; a program
that exits early delivers nothing).

Reward per row: the fraction of test cases passed (``mode="fraction"``, default) or 1.0 only
if all pass (``mode="all"``). A row whose tests are missing or unreadable scores ``None``
(counted as ``code/bad_tests``), as does one whose assert-style tests use something the judge
does not evaluate (``code/unsupported_tests``, with a warning saying what); a program that fails
to run scores 0.0.
"""

from __future__ import annotations

import ast
import builtins
import json
import math as _math
import operator
import re
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, Sequence

from spro.rewards import completion_text, count_event, register_reward, sandbox
from spro.rewards.sandbox import Isolation, SandboxLimits, SandboxResult

__all__ = [
    "extract_code",
    "parse_tests",
    "TestSpec",
    "outputs_match",
    "run_tests",
    "judge_asserts",
    "UnsupportedTest",
    "TRUSTED_BUILTINS",
    "make_code_reward",
    "code_reward",
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


def _num(tok: str) -> float | None:
    try:
        v = float(tok)
    except ValueError:
        return None
    return v if _math.isfinite(v) else None


def outputs_match(got: str, expected: str, *, tol: float = 1e-6) -> bool:
    """Compare program output with the expected output (see the module docstring)."""
    g = [ln.rstrip() for ln in got.replace("\r\n", "\n").strip().split("\n")]
    e = [ln.rstrip() for ln in str(expected).replace("\r\n", "\n").strip().split("\n")]
    if g == e:
        return True
    gt, et = got.split(), str(expected).split()
    if len(gt) != len(et):
        return False
    for a, b in zip(gt, et):
        if a == b:
            continue
        x, y = _num(a), _num(b)
        if x is None or y is None or not (abs(x - y) <= tol or abs(x - y) <= tol * max(abs(x), abs(y))):
            return False
    return True


def _json_norm(v: Any) -> Any:
    try:
        return json.loads(json.dumps(v))
    except (TypeError, ValueError):
        return v


# ------------------------------------------------------------------------------------------
# Assert-style tests, judged on the trusted side
# ------------------------------------------------------------------------------------------
# A test such as ``assert sorted(f([3, 1])) == [1, 3]`` is run here, not in the sandbox: every
# operator, comparison and builtin of the assertion is evaluated by the small interpreter below,
# and only the sub-expressions that *read the program* (``f([3, 1])``: its names, calls of its
# functions, attributes and items of its objects) are evaluated in the sandbox, which sends back
# their values as plain data. The expected values never enter the sandbox, no ``__eq__`` of the
# program runs here, and a program that exits early delivers no values. The test is run twice:
# once to collect what the program must compute (values still unknown), once to judge.


class UnsupportedTest(ValueError):
    """An assert-style test uses something the trusted judge does not evaluate (the message says
    what and where). Supported: ``assert`` statements; ``x = ...`` and ``a, b = ...``;
    ``for x in <literal data or range>:``; ``import math`` / ``from math import ...``;
    ``def check(candidate): ...`` followed by ``check(f)`` (HumanEval); in expressions: literals,
    operators, comparisons, ``and``/``or``/``not``, ``x if c else y``, indexing and slicing, the
    builtins in ``TRUSTED_BUILTINS``, ``math`` functions and common ``str``/``list``/``dict``/``set``
    methods. Lambdas, comprehensions and f-strings may only appear inside arguments of the
    program's own functions. A test must read something from the program (a name the trusted
    builtins do not define): one that does not would pass whatever the program is."""


_MAX_ITEMS = 10**7  # length of a sequence a test operation may build
_MAX_BITS = 100_000  # size of an integer operand of *, /, %, **, <<
_MAX_STEPS = 200_000  # expressions and statements evaluated per test case
_MAX_LOOP = 10_000  # iterations of one for loop


class _Fail(Exception):
    """The test case fails (a false assertion, or an error while evaluating it)."""


def _size(n: int) -> None:
    if n > _MAX_ITEMS:
        raise _Fail(f"a test operation would build {n} items")


def _bits(*vals: Any) -> None:
    for v in vals:
        if type(v) is int and v.bit_length() > _MAX_BITS:
            raise _Fail("integer too large for a test operation")


def _hashable_items(it: Any) -> list:
    return sandbox._codec["_hashes_ok"](list(it))


def _t_range(*a: Any) -> range:
    r = range(*a)
    _size(len(r))
    return r


def _t_set(it: Any = ()) -> set:
    return set(_hashable_items(it))


def _t_frozenset(it: Any = ()) -> frozenset:
    return frozenset(_hashable_items(it))


def _t_dict(*a: Any, **kw: Any) -> dict:
    d = dict(*a, **kw)
    _hashable_items(d)
    return dict(d)


def _t_sum(it: Any, start: Any = 0) -> Any:
    if type(start) not in (int, float, complex):
        raise _Fail("sum() with a non-numeric start")
    return sum(it, start)


def _t_pow(a: Any, b: Any, mod: Any = None) -> Any:
    if mod is None and type(a) is int and type(b) is int and b > 0 and a.bit_length() * b > _MAX_BITS:
        raise _Fail("power too large for a test operation")
    _bits(a, b, mod)
    return pow(a, b, mod)


_KEY_FUNCS = (len, abs, str, int, float, repr, ord, tuple, list, bool)


def _t_key(f: Any) -> Any:
    if f is not None and not any(f is k for k in _KEY_FUNCS):
        raise _Fail("key= must be one of len, abs, str, int, float, repr, ord, tuple, list, bool")
    return f


def _t_sorted(it: Any, *, key: Any = None, reverse: bool = False) -> list:
    return sorted(it, key=_t_key(key), reverse=bool(reverse))


def _t_minmax(fn: Any) -> Any:
    def f(*a: Any, key: Any = None, **kw: Any) -> Any:
        return fn(*a, key=_t_key(key), **kw)
    return f


def _t_small(fn: Any, limit: int = 10_000) -> Any:
    def f(*a: Any) -> Any:
        if any(type(x) is int and abs(x) > limit for x in a):
            raise _Fail(f"{fn.__name__}() argument too large for a test operation")
        return fn(*a)
    return f


# The builtins a test may use, evaluated here (types stay the real types, so that ``isinstance``
# and ``type(x) == set`` work); those that a hostile value could make slow are called through
# the guarded versions in _GUARDED.
TRUSTED_BUILTINS: dict[str, Any] = {f.__name__: f for f in (
    abs, all, any, bool, chr, complex, dict, divmod, enumerate, float, frozenset, hex, int, isinstance,
    len, list, max, min, oct, bin, ord, pow, range, repr, reversed, round, set, sorted, str, sum, tuple,
    type, zip, bytes)}
_GUARDED: dict[Any, Any] = {set: _t_set, frozenset: _t_frozenset, dict: _t_dict, range: _t_range,
                            sorted: _t_sorted, sum: _t_sum, pow: _t_pow, max: _t_minmax(max),
                            min: _t_minmax(min)}
_BIG_INT_OK = (int, abs, hex, bin, oct, bool, isinstance, type, len, str, repr)  # linear in the size
_MATH_NAMES = ("isclose", "sqrt", "isqrt", "floor", "ceil", "fabs", "log", "log2", "log10", "exp",
               "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "hypot", "gcd", "lcm", "trunc",
               "isnan", "isinf", "isfinite", "copysign", "degrees", "radians", "fsum", "prod", "dist",
               "pi", "e", "tau", "inf", "nan", "factorial", "comb", "perm")
TRUSTED_MATH: dict[str, Any] = {n: getattr(_math, n) for n in _MATH_NAMES}
_GUARDED.update({_math.factorial: _t_small(_math.factorial), _math.comb: _t_small(_math.comb, 100_000),
                 _math.perm: _t_small(_math.perm, 100_000)})
_TRUSTED_FUNCS = [v for v in list(TRUSTED_BUILTINS.values()) + list(TRUSTED_MATH.values()) if callable(v)]


def _call_trusted(fn: Any, args: list, kwargs: dict) -> Any:
    if fn is type and (len(args) != 1 or kwargs):
        raise _Fail("type() takes one argument in tests")
    if not any(fn is f for f in _BIG_INT_OK):
        _bits(*args, *kwargs.values())
    return _GUARDED.get(fn, fn)(*args, **kwargs)


# Builtins of Python that the judge does not evaluate: a test that calls one is unsupported (the
# program must not evaluate, e.g., ``eval("f(1) == 2")`` and so decide the verdict itself).
_PY_BUILTINS = frozenset(dir(builtins))

_METHODS: dict[type, frozenset[str]] = {
    str: frozenset("lower upper strip lstrip rstrip split rsplit splitlines startswith endswith count "
                   "find rfind index rindex isdigit isalpha isalnum isspace islower isupper isnumeric "
                   "isdecimal title capitalize swapcase casefold join replace".split()),
    bytes: frozenset("decode count startswith endswith find".split()),
    list: frozenset(("count", "index")), tuple: frozenset(("count", "index")),
    dict: frozenset(("keys", "values", "items", "get")),
    set: frozenset("issubset issuperset isdisjoint union intersection difference symmetric_difference".split()),
    frozenset: frozenset("issubset issuperset isdisjoint union intersection difference symmetric_difference".split()),
}
_ALL_METHODS = frozenset().union(*_METHODS.values())

_BINOPS: dict[type, Any] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: _t_pow, ast.LShift: operator.lshift,
    ast.RShift: operator.rshift, ast.BitAnd: operator.and_, ast.BitOr: operator.or_, ast.BitXor: operator.xor,
}
_UNOPS: dict[type, Any] = {ast.Not: operator.not_, ast.USub: operator.neg, ast.UAdd: operator.pos,
                           ast.Invert: operator.invert}
_CMPOPS: dict[type, Any] = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge, ast.In: lambda a, b: a in b,
    ast.NotIn: lambda a, b: a not in b, ast.Is: operator.is_, ast.IsNot: operator.is_not,
}


def _binop(op: ast.operator, a: Any, b: Any) -> Any:
    if type(op) not in _BINOPS:
        raise _Fail(f"operator {type(op).__name__} is not evaluated in tests")
    if isinstance(op, ast.Mult):
        for seq, n in ((a, b), (b, a)):
            if isinstance(seq, (str, bytes, list, tuple)) and type(n) is int:
                _size(len(seq) * max(n, 0))
    if isinstance(op, ast.Mod) and isinstance(a, (str, bytes)):
        raise _Fail("%-formatting is not evaluated in tests")
    if isinstance(op, ast.LShift) and type(b) is int and b > _MAX_BITS:
        raise _Fail("shift too large for a test operation")
    if not isinstance(op, (ast.Add, ast.Sub, ast.BitAnd, ast.BitOr, ast.BitXor)):
        _bits(a, b)
    return _BINOPS[type(op)](a, b)


def _call_method(obj: Any, name: str, args: list, kwargs: dict) -> Any:
    if name not in _METHODS.get(type(obj), ()):
        raise _Fail(f"{type(obj).__name__}.{name}() is not evaluated in tests")
    if name == "replace" and len(args) >= 2 and isinstance(args[0], str) and isinstance(args[1], str):
        hits = obj.count(args[0]) if args[0] else len(obj) + 1
        _size(len(obj) + hits * max(0, len(args[1]) - len(args[0])))
    if any(type(x) is int and x > _MAX_ITEMS for x in args):
        raise _Fail("argument too large for a test operation")
    return getattr(obj, name)(*args, **kwargs)


class _Module:
    __slots__ = ("name", "attrs")

    def __init__(self, name: str, attrs: dict[str, Any]):
        self.name, self.attrs = name, attrs


_MODULES = {"math": _Module("math", TRUSTED_MATH)}


class _Remote:
    """A test variable bound to an object of the program (what request ``index`` returned)."""

    __slots__ = ("index",)

    def __init__(self, index: int):
        self.index = index


class _Alias:
    """A test variable standing for one of the program's names (``candidate`` -> ``f``)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _CheckDef:
    __slots__ = ("node",)

    def __init__(self, node: ast.FunctionDef):
        self.node = node


_PENDING = type("_Pending", (), {"__repr__": lambda self: "<pending>"})()
_MISSING = object()


class _Case:
    """Runs one test case's statements. ``planner`` is None when judging (second run)."""

    def __init__(self, judge: "_AssertJudge", case: int, results: list | None):
        self.judge, self.case, self.results = judge, case, results
        self.planning = results is None
        self.loop: tuple[int, ...] = ()
        self.steps = 0
        self.asserts = 0

    # -- classification ------------------------------------------------------------------
    def _program_name(self, name: str, env: dict) -> bool:
        v = env.get(name, _MISSING)
        if v is _MISSING:
            return name not in TRUSTED_BUILTINS
        return isinstance(v, (_Remote, _Alias))

    def reads_program(self, node: ast.AST, env: dict) -> bool:
        return any(isinstance(n, ast.Name) and self._program_name(n.id, env) for n in ast.walk(node))

    def kind(self, node: ast.AST, env: dict) -> str:
        """"program" (the sandbox computes it) or "trusted" (evaluated here)."""
        if isinstance(node, ast.Name):
            return "program" if self._program_name(node.id, env) else "trusted"
        if isinstance(node, ast.Call):
            if self.trusted_callee(node.func, env):
                return "trusted"
            return "program" if self.kind(node.func, env) == "program" else "trusted"
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            if isinstance(node, ast.Attribute) and node.attr.startswith("__"):
                raise UnsupportedTest(f"line {node.lineno}: dunder attribute {node.attr!r} in a test")
            base = node.value
            if isinstance(node, ast.Attribute) and isinstance(base, ast.Name):
                if isinstance(env.get(base.id), _Module):
                    return "trusted"
                if base.id not in env and base.id in sys.stdlib_module_names:
                    # The program could bind the name to anything (e.g. a fake re.match).
                    raise UnsupportedTest(f"line {node.lineno}: module {base.id} is not available to tests "
                                          "(only math)")
            return "program" if self.kind(base, env) == "program" else "trusted"
        return "trusted"

    def trusted_callee(self, func: ast.AST, env: dict) -> bool:
        if isinstance(func, ast.Name):
            v = env.get(func.id, _MISSING)
            if v is _MISSING:
                return func.id in TRUSTED_BUILTINS
            return any(v is f for f in _TRUSTED_FUNCS)
        if isinstance(func, ast.Attribute):
            if isinstance(func.value, ast.Name) and isinstance(env.get(func.value.id), _Module):
                return True
            return func.attr in _ALL_METHODS and self.kind(func.value, env) == "trusted"
        return False

    # -- requests to the program ---------------------------------------------------------
    def request(self, node: ast.AST, env: dict) -> int:
        """Index of the request that makes the program evaluate ``node`` (registered when planning)."""
        key = (self.case, id(node), self.loop)
        if not self.planning:
            return self.judge.index[key]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in _PY_BUILTINS \
                and env.get(node.func.id, _MISSING) is _MISSING:
            raise UnsupportedTest(f"line {node.lineno}: builtin {node.func.id}() is not evaluated by the trusted judge")
        if isinstance(node, ast.Name) and node.id in _PY_BUILTINS and node.id not in env:
            raise UnsupportedTest(f"line {node.lineno}: builtin {node.id!r} is not evaluated by the trusted judge")
        bind: dict[str, Any] = {}
        for n in ast.walk(node):
            if not isinstance(n, ast.Name) or n.id not in env or n.id in bind:
                continue
            v = env[n.id]
            if isinstance(v, _Remote):
                bind[n.id] = {"leaf": v.index}
            elif isinstance(v, _Alias):
                bind[n.id] = {"global": v.name}
            elif isinstance(v, _Module):
                bind[n.id] = {"module": v.name}
            elif v is _PENDING:
                raise UnsupportedTest(f"line {node.lineno}: {n.id!r} is computed from the program's output "
                                      "and passed back to it")
            else:
                try:
                    bind[n.id] = {"v": sandbox.encode_value(v)}
                except ValueError:
                    raise UnsupportedTest(f"line {node.lineno}: {n.id!r} cannot be passed to the program") from None
        req: dict[str, Any] = {"src": ast.unparse(node)}
        if bind:
            req["bind"] = bind
        self.judge.requests.append(req)
        self.judge.index[key] = len(self.judge.requests) - 1
        return self.judge.index[key]

    def program_value(self, node: ast.AST, env: dict) -> Any:
        i = self.request(node, env)
        if self.planning:
            return _PENDING
        kind, value = self.results[i]  # type: ignore[index]
        if kind != "ok":
            raise _Fail(f"{ast.unparse(node)[:80]}: {value or kind}")
        return value

    # -- evaluation ----------------------------------------------------------------------
    def _step(self) -> None:
        self.steps += 1
        if self.steps > _MAX_STEPS:
            raise _Fail("test runs too long")

    def soft(self, node: ast.AST, env: dict) -> Any:
        """Planning past a still-unknown value: evaluate ``node`` only to collect its requests."""
        try:
            return self.ev(node, env)
        except UnsupportedTest:
            raise
        except Exception:
            return _PENDING

    def ev(self, node: ast.AST, env: dict) -> Any:
        self._step()
        if self.kind(node, env) == "program":
            if not self.reads_program(node, env):  # e.g. a method the judge does not know on a literal
                raise UnsupportedTest(f"line {node.lineno}: {ast.unparse(node)[:80]!r} is not evaluated by the trusted judge")
            return self.program_value(node, env)
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return env[node.id] if node.id in env else TRUSTED_BUILTINS[node.id]
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            if any(isinstance(e, ast.Starred) for e in node.elts):
                raise UnsupportedTest(f"line {node.lineno}: * in a display is not supported")
            items = [self.ev(e, env) for e in node.elts]
            if _PENDING in items:
                return _PENDING
            return {ast.List: list, ast.Tuple: tuple, ast.Set: _t_set}[type(node)](items)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise UnsupportedTest(f"line {node.lineno}: ** in a dict display is not supported")
            pairs = [(self.ev(k, env), self.ev(v, env)) for k, v in zip(node.keys, node.values)]  # type: ignore[arg-type]
            if any(_PENDING in p for p in pairs):
                return _PENDING
            return _t_dict(pairs)
        if isinstance(node, ast.UnaryOp):
            v = self.ev(node.operand, env)
            return _PENDING if v is _PENDING else _UNOPS[type(node.op)](v)
        if isinstance(node, ast.BinOp):
            a, b = self.ev(node.left, env), self.ev(node.right, env)
            return _PENDING if _PENDING in (a, b) else _binop(node.op, a, b)
        if isinstance(node, ast.BoolOp):
            v: Any = None
            for i, x in enumerate(node.values):
                v = self.ev(x, env)
                if v is _PENDING:
                    for rest in node.values[i + 1:]:
                        self.soft(rest, env)
                    return _PENDING
                if bool(v) == isinstance(node.op, ast.Or):
                    return v
            return v
        if isinstance(node, ast.Compare):
            left = self.ev(node.left, env)
            for i, (op, right_node) in enumerate(zip(node.ops, node.comparators)):
                right = self.ev(right_node, env)
                if _PENDING in (left, right):
                    for rest in node.comparators[i + 1:]:
                        self.soft(rest, env)
                    return _PENDING
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            c = self.ev(node.test, env)
            if c is _PENDING:
                self.soft(node.body, env)
                self.soft(node.orelse, env)
                return _PENDING
            return self.ev(node.body if c else node.orelse, env)
        if isinstance(node, ast.Subscript):
            v, k = self.ev(node.value, env), self.ev(node.slice, env)
            return _PENDING if _PENDING in (v, k) else v[k]
        if isinstance(node, ast.Slice):
            parts = [None if p is None else self.ev(p, env) for p in (node.lower, node.upper, node.step)]
            return _PENDING if _PENDING in parts else slice(*parts)
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            mod = env.get(node.value.id)
            if isinstance(mod, _Module) and node.attr in mod.attrs:
                return mod.attrs[node.attr]
        if isinstance(node, ast.Call):
            return self.call(node, env)
        raise UnsupportedTest(f"line {getattr(node, 'lineno', '?')}: {type(node).__name__} "
                              f"({ast.unparse(node)[:60]!r}) is not evaluated by the trusted judge")

    def call(self, node: ast.Call, env: dict) -> Any:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise UnsupportedTest(f"line {node.lineno}: * or ** arguments are not supported")
        args = [self.ev(a, env) for a in node.args]
        kwargs = {k.arg: self.ev(k.value, env) for k in node.keywords}
        obj: Any = None
        func = node.func
        if isinstance(func, ast.Attribute) and not (isinstance(func.value, ast.Name)
                                                    and isinstance(env.get(func.value.id), _Module)):
            obj = self.ev(func.value, env)
            if _PENDING in args or _PENDING in kwargs.values() or obj is _PENDING:
                return _PENDING
            return _call_method(obj, func.attr, args, kwargs)
        fn = self.ev(func, env)
        if _PENDING in args or _PENDING in kwargs.values():
            return _PENDING
        if not any(fn is f for f in _TRUSTED_FUNCS):
            raise _Fail(f"line {node.lineno}: {ast.unparse(func)[:40]} is not a function tests may call")
        return _call_trusted(fn, args, kwargs)

    # -- statements ----------------------------------------------------------------------
    def run(self, stmts: list[ast.stmt], env: dict) -> None:
        for st in stmts:
            self._step()
            self.stmt(st, env)

    def stmt(self, st: ast.stmt, env: dict) -> None:
        if isinstance(st, ast.Assert):
            self.asserts += 1
            v = self.ev(st.test, env)
            if v is not _PENDING and not v:
                raise _Fail(f"line {st.lineno}: assertion failed")
        elif isinstance(st, ast.Assign) and len(st.targets) == 1:
            self.assign(st.targets[0], st.value, env)
        elif isinstance(st, ast.Expr):
            if isinstance(st.value, ast.Constant):
                return
            if self.inline_check(st.value, env):
                return
            self.ev(st.value, env)
        elif isinstance(st, (ast.Import, ast.ImportFrom)):
            self.imports(st, env)
        elif isinstance(st, ast.For) and not st.orelse:
            items = self.ev(st.iter, env)
            if items is _PENDING:
                raise UnsupportedTest(f"line {st.lineno}: a loop over the program's output is not supported")
            items = list(items)
            if len(items) > _MAX_LOOP:
                raise _Fail(f"line {st.lineno}: loop of {len(items)} iterations")
            outer = self.loop
            for i, item in enumerate(items):
                self.loop = outer + (st.lineno, i)
                self.bind(st.target, item, env)
                self.run(st.body, env)
            self.loop = outer
        elif isinstance(st, ast.FunctionDef) and not st.decorator_list and len(st.args.args) == 1 and \
                not (st.args.vararg or st.args.kwarg or st.args.kwonlyargs or st.args.posonlyargs):
            env[st.name] = _CheckDef(st)
        elif isinstance(st, ast.Pass):
            return
        else:
            raise UnsupportedTest(f"line {st.lineno}: {type(st).__name__} statements are not supported "
                                  f"in assert-style tests ({ast.unparse(st).splitlines()[0][:60]!r})")

    def assign(self, target: ast.AST, value: ast.AST, env: dict) -> None:
        if isinstance(target, ast.Name) and self.kind(value, env) == "program":
            env[target.id] = _Remote(self.request(value, env))  # the object itself stays in the program
            return
        self.bind(target, self.ev(value, env), env)

    def bind(self, target: ast.AST, value: Any, env: dict) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(t, ast.Name) for t in target.elts):
            if value is _PENDING:
                for t in target.elts:
                    env[t.id] = _PENDING  # type: ignore[attr-defined]
                return
            vals = list(value)
            if len(vals) != len(target.elts):
                raise _Fail(f"line {target.lineno}: cannot unpack {len(vals)} values into {len(target.elts)}")
            for t, v in zip(target.elts, vals):
                env[t.id] = v  # type: ignore[attr-defined]
        else:
            raise UnsupportedTest(f"line {target.lineno}: assignment to {ast.unparse(target)[:40]!r} is not supported")

    def imports(self, st: ast.Import | ast.ImportFrom, env: dict) -> None:
        if isinstance(st, ast.Import):
            for a in st.names:
                if a.name not in _MODULES:
                    raise UnsupportedTest(f"line {st.lineno}: import {a.name} (only math is available to tests)")
                env[a.asname or a.name] = _MODULES[a.name]
            return
        mod = _MODULES.get(st.module or "")
        if mod is None or st.level:
            raise UnsupportedTest(f"line {st.lineno}: from {st.module} import (only math is available to tests)")
        for a in st.names:
            names = list(mod.attrs) if a.name == "*" else [a.name]
            for n in names:
                if n not in mod.attrs:
                    raise UnsupportedTest(f"line {st.lineno}: math.{n} is not available to tests")
                env[n if a.name == "*" else (a.asname or n)] = mod.attrs[n]

    def inline_check(self, call: ast.AST, env: dict) -> bool:
        """``check(f)`` where ``def check(candidate): ...`` came earlier: run its body with
        ``candidate`` standing for the program's ``f``."""
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)
                and isinstance(env.get(call.func.id), _CheckDef)):
            return False
        d = env[call.func.id].node
        if len(call.args) != 1 or call.keywords or not isinstance(call.args[0], ast.Name):
            raise UnsupportedTest(f"line {call.lineno}: {call.func.id}() must be called with one name")
        arg = call.args[0].id
        inner = dict(env)
        v = env.get(arg, _MISSING)
        inner[d.args.args[0].arg] = _Alias(arg) if v is _MISSING else v
        if any(isinstance(n, (ast.Return, ast.Yield, ast.YieldFrom, ast.Global, ast.Nonlocal))
               for n in ast.walk(d)):
            raise UnsupportedTest(f"line {d.lineno}: {d.name}() may only hold assertions")
        outer = self.loop
        self.loop = outer + (id(call),)  # the same body may be run for several functions
        self.run(d.body, inner)
        self.loop = outer
        return True


class _AssertJudge:
    """Plans the requests of assert-style test cases, then judges them from the values."""

    def __init__(self, tests: Sequence[str]):
        self.requests: list[dict[str, Any]] = []
        self.index: dict[tuple, int] = {}
        self.trees: list[ast.Module] = []
        for i, t in enumerate(tests):
            try:
                self.trees.append(ast.parse(t))
            except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
                raise UnsupportedTest(f"test {i} does not parse: {e}") from None
        for i, tree in enumerate(self.trees):
            case = _Case(self, i, None)
            before = len(self.requests)
            try:
                case.run(tree.body, dict(_MODULES))
            except UnsupportedTest:
                raise
            except RecursionError:
                raise UnsupportedTest(f"test {i} is nested too deeply") from None
            except Exception:  # fails whatever the program does; judged (as failed) below
                continue
            if not case.asserts:
                raise UnsupportedTest(f"test {i} runs no assert statement")
            if len(self.requests) == before:
                # e.g. `assert sum([1, 2]) == 3` for a task whose program defines sum(): judged
                # here with the builtin, it would pass whatever the program does.
                raise UnsupportedTest(f"test {i} reads nothing from the program")

    def judge(self, results: list[tuple[str, Any]]) -> list[bool]:
        out = []
        for i, tree in enumerate(self.trees):
            try:
                _Case(self, i, results).run(tree.body, dict(_MODULES))
                out.append(True)
            except Exception:  # a false assertion, a failed or missing value, an error here
                out.append(False)
        return out


def judge_asserts(
    code: str,
    tests: Sequence[str],
    *,
    limits: SandboxLimits = SandboxLimits(),
    isolation: str = "auto",
) -> tuple[list[bool], sandbox.SandboxResult]:
    """Judge assert-style ``tests`` against ``code``: the program runs once in the sandbox and
    computes the values the assertions read from it; the assertions are evaluated here.

    Raises :class:`UnsupportedTest` (before running anything) if a test uses something the
    trusted judge does not evaluate."""
    judge = _AssertJudge(tests)
    values, result = sandbox.run_values(code, judge.requests, limits=limits, isolation=isolation)  # type: ignore[arg-type]
    return judge.judge(values), result


def _call_matches(value: Any, expected: Any) -> bool:
    """APPS call-based comparison, by value on plain data: the return value in its JSON form
    (tuples as lists, dict keys as strings) equals ``expected`` or ``[expected]``."""
    try:
        v = json.loads(json.dumps(value))
    except (TypeError, ValueError, RecursionError):  # sets, bytes, unrepresentable objects ...
        return False
    exp = _json_norm(expected)
    return v == exp or [v] == exp


def run_tests(
    code: str,
    tests: TestSpec,
    *,
    limits: SandboxLimits = SandboxLimits(),
    isolation: str = "auto",
    workers: int = 1,
    max_cases: int | None = None,
) -> list[bool]:
    """Run ``code`` on every case of ``tests`` in the sandbox; per-case pass/fail, decided here.

    Raises :class:`UnsupportedTest` (before running anything) for assert-style tests the trusted
    judge cannot evaluate."""
    n = len(tests) if max_cases is None else min(len(tests), max_cases)
    if tests.kind == "stdio":
        jobs = [{"code": code, "stdin": tests.inputs[i]} for i in range(n)]
        res = sandbox.run_many(jobs, workers=workers, limits=limits, isolation=isolation)  # type: ignore[arg-type]
        return [r.status == "ok" and outputs_match(r.stdout, tests.outputs[i]) for i, r in enumerate(res)]
    if tests.kind == "asserts":
        return judge_asserts(code, tests.inputs[:n], limits=limits, isolation=isolation)[0]
    calls, _ = sandbox.run_calls(code, tests.fn_name or "", tests.inputs[:n], limits=limits, isolation=isolation)  # type: ignore[arg-type]
    return [ok and _call_matches(val, exp) for (ok, val), exp in zip(calls, tests.outputs[:n])]


def make_code_reward(
    *,
    mode: Literal["fraction", "all"] = "fraction",
    limits: SandboxLimits = SandboxLimits(),
    workers: int = 2,
    max_cases: int | None = None,
    isolation: str = "auto",
):
    """A code reward function ``fn(prompts, completions, tests=None, answer=None, **kw)``.

    Args:
        mode: "fraction" = share of cases passed; "all" = 1.0 only if every case passes.
        limits: sandbox limits per run (:class:`spro.rewards.sandbox.SandboxLimits`).
        workers: rows graded concurrently (each a sandboxed process; threads only wait).
        max_cases: use at most this many test cases per row (None = all).
        isolation: sandbox isolation ("auto", "bwrap", "namespace", "none"); see
            :mod:`spro.rewards.sandbox` and ``spro doctor``.
    """
    if mode not in ("fraction", "all"):
        raise ValueError(f"mode must be 'fraction' or 'all', got {mode!r}")

    def score_row(i: int, completion: Any, spec: Any) -> float | None:
        try:
            tests = parse_tests(spec)
            passed = run_tests(extract_code(completion), tests, limits=limits, isolation=isolation,
                               max_cases=max_cases)
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
        if mode == "all":
            return 1.0 if all(passed) else 0.0
        return sum(passed) / len(passed)

    def code_reward(prompts: Sequence[Any], completions: Sequence[Any], tests: Sequence[Any] | None = None,
                    answer: Sequence[Any] | None = None, **kw: Any) -> list[float | None]:
        specs = tests if tests is not None else answer
        if specs is None:
            raise ValueError("code reward needs a 'tests' column (or test cases in the 'answer' column)")
        if len(specs) != len(completions):
            raise ValueError(f"{len(completions)} completions but {len(specs)} test specifications")
        rows = list(enumerate(zip(completions, specs)))
        if workers <= 1 or len(rows) <= 1:
            return [score_row(i, c, s) for i, (c, s) in rows]
        with ThreadPoolExecutor(workers) as ex:
            return list(ex.map(lambda r: score_row(r[0], r[1][0], r[1][1]), rows))

    return code_reward


_default_code = make_code_reward()


@register_reward("code")
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


@register_reward("eurus")
def eurus_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any] | None = None,
                 data_source: Sequence[Any] | None = None, tests: Sequence[Any] | None = None,
                 **kw: Any) -> list[float | None]:
    """Mixed math + code data (Eurus-2-RL-Data style): rows whose ``data_source`` is a coding
    source (see ``CODE_SOURCES``; or, without a source, whose ground truth holds test cases) get
    :func:`code_reward`, the others :func:`spro.rewards.math.math_reward`."""
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
        vals = code_reward([prompts[i] for i in ci], [completions[i] for i in ci],
                           tests=[test_col[i] if test_col[i] is not None else answers[i] for i in ci])
        for i, v in zip(ci, vals):
            out[i] = v
    if mi:
        vals = math_reward([prompts[i] for i in mi], [completions[i] for i in mi], answer=[answers[i] for i in mi])
        for i, v in zip(mi, vals):
            out[i] = v
    return out


def run_asserts(
    code: str,
    tests: Sequence[str],
    *,
    limits: SandboxLimits = SandboxLimits(),
    isolation: Isolation = "auto",
) -> tuple[list[bool], SandboxResult]:
    """Run ``code`` once and judge each test (``"assert f(2) == 4"``, or several statements) on the
    trusted side: the program only computes the values the assertions read from it.

    Returns (passed per test, the run's result). Raises :class:`UnsupportedTest`
    (a ValueError) for a test the trusted judge cannot evaluate (see :mod:`spro.rewards.code`).
    """
    return judge_asserts(code, tests, limits=limits, isolation=isolation)
