"""The trusted judge of assert-style code tests (``["assert f(1) == 2", ...]``, HumanEval's
``def check(candidate): ...``): the assertions run here, on the trusted side, and only what they
read from the program is computed in the sandbox.

A test such as ``assert sorted(f([3, 1])) == [1, 3]`` is evaluated by the small interpreter
below: every literal, operator, comparison, builtin, ``math`` function, builtin type's method
and comprehension is evaluated here; the program is read only through requests that carry the
*argument values* a call needs (``f`` called on ``[3, 1]``), never a test variable, an
expression of the test or an expected value (the requests are described in
:mod:`spro.rewards.sandbox_child`). Values come back as plain data, and builtin methods
(``f(x).startswith("ab")``) are applied here to the decoded value, so no code of the program
decides a comparison. A test whose verdict would need the program's own code (a builtin method
called on an object of the program's class, a helper of the program applied to its own output,
a name the test does not define) scores ``None``: :class:`UnsupportedTest` before anything runs,
or ``None`` for the case after the run. Each test is run twice: once to collect the requests
(values still unknown), once to judge.

Every operation is bounded (size of built sequences, integer sizes, steps per case, iterations
per loop; sets and dicts refuse many equal hashes before they are built), so values the program
sends back cannot make the trusted side do quadratic work.

Why over 600 lines: it is one interpreter (guarded builtins, operators, the statement and
expression forms a test may use) whose parts only make sense together; it is the one place where
test code meets the program's values, and is kept whole so that it can be reviewed as such.
"""

from __future__ import annotations

import ast
import builtins
import math as _math
import operator
import sys
from typing import Any, Sequence

from spro.rewards import sandbox
from spro.rewards.sandbox import Isolation, SandboxLimits, SandboxResult, Unrepresentable

__all__ = ["UnsupportedTest", "TRUSTED_BUILTINS", "judge_asserts", "run_asserts"]


class UnsupportedTest(ValueError):
    """An assert-style test uses something the trusted judge does not evaluate (the message says
    what and where). Supported: ``assert`` statements; ``x = ...`` and ``a, b = ...``;
    ``for x in <literal data or range>:``; ``import math`` / ``from math import ...``;
    ``def check(candidate): ...`` followed by ``check(f)`` (HumanEval); in expressions: literals,
    operators, comparisons, ``and``/``or``/``not``, ``x if c else y``, indexing and slicing, the
    builtins in ``TRUSTED_BUILTINS``, ``math`` functions and common ``str``/``list``/``dict``/``set``
    methods, comprehensions and generator expressions (``all(f(x) == y for x, y in cases)``).
    A lambda may be passed to the program's functions if it names only its parameters and
    builtins. The program is read only through calls of its functions (with values of the test,
    never with its own values), attributes of its objects and its objects' own methods; a program
    name used as a value, or a name a ``check()`` body uses without defining, is unsupported. A
    test must read something from the program: one that does not would pass whatever the
    program is."""


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
    return sandbox._hashes_ok(list(it))


def _t_range(*a: Any) -> range:
    r = range(*a)
    _size(len(r))
    return r


def _t_set(it: Any = ()) -> set:
    return set(_hashable_items(it))


def _t_frozenset(it: Any = ()) -> frozenset:
    return frozenset(_hashable_items(it))


def _t_dict(*a: Any, **kw: Any) -> dict:
    if len(a) > 1:
        raise _Fail("dict() takes at most one positional argument")
    src = a[0] if a else ()
    pairs = list(src.items()) if isinstance(src, dict) else [tuple(p) for p in src]
    if any(len(p) != 2 for p in pairs):
        raise _Fail("dict() items must be pairs")
    _hashable_items([k for k, _ in pairs] + list(kw))  # before building: no quadratic insertion
    return dict(pairs, **kw)


def _t_prod(it: Any, *, start: Any = 1) -> Any:
    # The cost of a product of big integers grows with the square of its size: bound the size.
    items = list(it)
    if sum(x.bit_length() for x in items + [start] if type(x) is int) > _MAX_BITS:
        raise _Fail("product too large for a test operation")
    return _math.prod(items, start=start)


def _t_lcm(*a: Any) -> Any:
    if sum(x.bit_length() for x in a if type(x) is int) > _MAX_BITS:
        raise _Fail("lcm too large for a test operation")
    return _math.lcm(*a)


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
                 _math.perm: _t_small(_math.perm, 100_000), _math.prod: _t_prod, _math.lcm: _t_lcm})
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
    if type(obj) in (set, frozenset):  # a set method hashes the items of its arguments
        for x in args:
            if type(x) not in (set, frozenset):
                _hashable_items(x)
    return getattr(obj, name)(*args, **kwargs)


class _Module:
    __slots__ = ("name", "attrs")

    def __init__(self, name: str, attrs: dict[str, Any]):
        self.name, self.attrs = name, attrs


_MODULES = {"math": _Module("math", TRUSTED_MATH)}


class _Ref:
    """An object of the program, kept in the sandbox: what request ``index`` returned. ``how`` is
    ``"name"`` (one of the program's globals), ``"attr"`` or ``"call"``."""

    __slots__ = ("index", "how", "label")

    def __init__(self, index: int, how: str, label: str):
        self.index, self.how, self.label = index, how, label


class _Alias:
    """A test variable standing for one of the program's names (``candidate`` -> ``f``)."""

    __slots__ = ("name",)

    def __init__(self, name: str):
        self.name = name


class _CheckDef:
    __slots__ = ("node",)

    def __init__(self, node: ast.FunctionDef):
        self.node = node


class _NeedsProgram(Exception):
    """Deciding the case would need the program's own code: the case (and row) scores None."""


_PENDING = type("_Pending", (), {"__repr__": lambda self: "<pending>"})()
_MISSING = object()
_COMPS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


def _pending(*xs: Any) -> bool:
    return any(x is _PENDING for x in xs)


def _where(node: ast.AST) -> str:
    return f"line {getattr(node, 'lineno', '?')}"


class _Case:
    """Runs one test case's statements; ``results`` is None while planning (first run)."""

    def __init__(self, judge: "_AssertJudge", case: int, results: list | None):
        self.judge, self.case, self.results = judge, case, results
        self.planning = results is None
        self.loop: tuple[int, ...] = ()
        self.steps = 0
        self.asserts = 0
        self.in_check = False

    # -- the program's side ----------------------------------------------------------------
    def request(self, node: ast.AST, op: dict[str, Any], how: str) -> _Ref:
        """The request that makes the program compute ``node`` (registered while planning)."""
        key = (self.case, id(node), self.loop)
        index = self.judge.index.get(key)
        if index is None:
            if not self.planning:  # a path the plan did not take (cannot happen for a plain test)
                raise _NeedsProgram(f"{_where(node)}: no value planned for {ast.unparse(node)[:60]!r}")
            self.judge.requests.append(op)
            index = self.judge.index[key] = len(self.judge.requests) - 1
        return _Ref(index, how, ast.unparse(node)[:80])

    def fetch(self, ref: _Ref) -> Any:
        """The decoded value of a program object (plain data or an Unrepresentable)."""
        if ref.how == "name":
            raise UnsupportedTest(f"the test reads the program's name {ref.label!r} as a value (the program "
                                  "would choose it); only calls of its functions and its objects are read")
        if self.planning:
            return _PENDING
        kind, value = self.results[ref.index]  # type: ignore[index]
        if kind != "ok":
            raise _Fail(f"{ref.label}: {value or kind}")
        return value

    def program_call(self, node: ast.Call, fn: _Ref, env: dict) -> _Ref:
        args: list[Any] = []
        fn_args: dict[int, str] = {}
        for i, a in enumerate(node.args):
            if isinstance(a, ast.Lambda):
                self.check_lambda(a, env)
                fn_args[i] = ast.unparse(a)
                args.append(None)
            else:
                args.append(self.argument(a, env))
        kw = [[k.arg, self.argument(k.value, env)] for k in node.keywords]
        try:
            op: dict[str, Any] = {"apply": fn.index, "args": sandbox.encode_value(args)}
            if kw:
                op["kw"] = [[k, sandbox.encode_value(v)] for k, v in kw]
        except ValueError:
            raise UnsupportedTest(f"{_where(node)}: an argument of {ast.unparse(node)[:60]!r} is not plain "
                                  "data") from None
        if fn_args:
            op["fn_args"] = fn_args
        return self.request(node, op, "call")

    def argument(self, node: ast.AST, env: dict) -> Any:
        v = self.ev(node, env)
        if isinstance(v, _Ref) or v is _PENDING:
            raise UnsupportedTest(f"{_where(node)}: the program's own value {ast.unparse(node)[:60]!r} is passed "
                                  "back to the program (its code would decide the verdict)")
        return v

    def check_lambda(self, lam: ast.Lambda, env: dict) -> None:
        """A lambda sent to the program may name only its own parameters and builtins (never a
        variable of the test, which could hold an expected value)."""
        own = set()
        for n in ast.walk(lam):
            if isinstance(n, ast.arguments):
                own |= {a.arg for a in n.posonlyargs + n.args + n.kwonlyargs}
                own |= {a.arg for a in (n.vararg, n.kwarg) if a is not None}
            elif isinstance(n, ast.comprehension):
                own |= {t.id for t in ast.walk(n.target) if isinstance(t, ast.Name)}
        for n in ast.walk(lam):
            if isinstance(n, ast.Name) and n.id not in own and (n.id in env or n.id not in _PY_BUILTINS):
                raise UnsupportedTest(f"{_where(n)}: a lambda passed to the program names {n.id!r} "
                                      "(only its parameters and builtins)")
            if isinstance(n, ast.Attribute) and n.attr.startswith("__"):
                raise UnsupportedTest(f"{_where(n)}: dunder attribute {n.attr!r} in a test")

    # -- evaluation --------------------------------------------------------------------------
    def _step(self) -> None:
        self.steps += 1
        if self.steps > _MAX_STEPS:
            raise _Fail("test runs too long")

    def soft(self, node: ast.AST, env: dict) -> Any:
        """Planning past a still-unknown value: evaluate ``node`` only to collect its requests."""
        try:
            return self.val(node, env)
        except UnsupportedTest:
            raise
        except Exception:
            return _PENDING

    def val(self, node: ast.AST, env: dict) -> Any:
        """``node``'s value as data (a program object is fetched as its decoded value)."""
        v = self.ev(node, env)
        return self.fetch(v) if isinstance(v, _Ref) else v

    def name(self, node: ast.Name, env: dict) -> Any:
        v = env.get(node.id, _MISSING)
        if v is _MISSING:
            if node.id in TRUSTED_BUILTINS:
                return TRUSTED_BUILTINS[node.id]
            if node.id in _PY_BUILTINS:
                raise UnsupportedTest(f"{_where(node)}: builtin {node.id} is not evaluated by the trusted judge")
            if self.in_check:
                raise UnsupportedTest(f"{_where(node)}: check() uses {node.id!r} without defining it (only "
                                      "its candidate is the program's)")
            return self.request(node, {"name": node.id}, "name")
        if isinstance(v, _Alias):
            return self.request(node, {"name": v.name}, "name")
        return v

    def ev(self, node: ast.AST, env: dict) -> Any:
        """``node``'s value; a :class:`_Ref` where it is an object of the program."""
        self._step()
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return self.name(node, env)
        if isinstance(node, (ast.List, ast.Tuple, ast.Set)):
            if any(isinstance(e, ast.Starred) for e in node.elts):
                raise UnsupportedTest(f"{_where(node)}: * in a display is not supported")
            items = [self.val(e, env) for e in node.elts]
            if _pending(*items):
                return _PENDING
            return {ast.List: list, ast.Tuple: tuple, ast.Set: _t_set}[type(node)](items)
        if isinstance(node, ast.Dict):
            if any(k is None for k in node.keys):
                raise UnsupportedTest(f"{_where(node)}: ** in a dict display is not supported")
            pairs = [(self.val(k, env), self.val(v, env)) for k, v in zip(node.keys, node.values)]  # type: ignore[arg-type]
            if any(_pending(*p) for p in pairs):
                return _PENDING
            return _t_dict(pairs)
        if isinstance(node, ast.UnaryOp):
            v = self.val(node.operand, env)
            return _PENDING if _pending(v) else _UNOPS[type(node.op)](v)
        if isinstance(node, ast.BinOp):
            a, b = self.val(node.left, env), self.val(node.right, env)
            return _PENDING if _pending(a, b) else _binop(node.op, a, b)
        if isinstance(node, ast.BoolOp):
            v: Any = None
            for i, x in enumerate(node.values):
                v = self.val(x, env)
                if _pending(v):
                    for rest in node.values[i + 1:]:
                        self.soft(rest, env)
                    return _PENDING
                if bool(v) == isinstance(node.op, ast.Or):
                    return v
            return v
        if isinstance(node, ast.Compare):
            left = self.val(node.left, env)
            for i, (op, right_node) in enumerate(zip(node.ops, node.comparators)):
                right = self.val(right_node, env)
                if _pending(left, right):
                    for rest in node.comparators[i + 1:]:
                        self.soft(rest, env)
                    return _PENDING
                if not _CMPOPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            c = self.val(node.test, env)
            if _pending(c):
                self.soft(node.body, env)
                self.soft(node.orelse, env)
                return _PENDING
            return self.val(node.body if c else node.orelse, env)
        if isinstance(node, ast.Subscript):  # on the decoded value, here
            v, k = self.val(node.value, env), self.val(node.slice, env)
            return _PENDING if _pending(v, k) else v[k]
        if isinstance(node, ast.Slice):
            parts = [None if p is None else self.val(p, env) for p in (node.lower, node.upper, node.step)]
            return _PENDING if _pending(*parts) else slice(*parts)
        if isinstance(node, ast.Attribute):
            return self.attribute(node, env)
        if isinstance(node, ast.Call):
            return self.call(node, env)
        if isinstance(node, _COMPS):
            return self.comprehension(node, env)
        raise UnsupportedTest(f"{_where(node)}: {type(node).__name__} ({ast.unparse(node)[:60]!r}) is not "
                              "evaluated by the trusted judge")

    def receiver(self, node: ast.Attribute, env: dict) -> Any:
        if node.attr.startswith("__"):
            raise UnsupportedTest(f"{_where(node)}: dunder attribute {node.attr!r} in a test")
        base = node.value
        if isinstance(base, ast.Name) and base.id not in env and base.id in sys.stdlib_module_names \
                and base.id not in _MODULES:
            # The program could bind the name to anything (e.g. a fake re.match).
            raise UnsupportedTest(f"{_where(node)}: module {base.id} is not available to tests (only math)")
        return self.ev(base, env)

    def attribute(self, node: ast.Attribute, env: dict) -> Any:
        obj = self.receiver(node, env)
        if isinstance(obj, _Module):
            if node.attr not in obj.attrs:
                raise UnsupportedTest(f"{_where(node)}: math.{node.attr} is not available to tests")
            return obj.attrs[node.attr]
        if isinstance(obj, _Ref):  # an attribute of the program's object: the program's own value
            return self.request(node, {"attr": obj.index, "name": node.attr}, "attr")
        raise UnsupportedTest(f"{_where(node)}: attribute {ast.unparse(node)[:60]!r} is not evaluated by the "
                              "trusted judge")

    def call(self, node: ast.Call, env: dict) -> Any:
        if any(isinstance(a, ast.Starred) for a in node.args) or any(k.arg is None for k in node.keywords):
            raise UnsupportedTest(f"{_where(node)}: * or ** arguments are not supported")
        func = node.func
        if isinstance(func, ast.Attribute):
            recv = self.receiver(func, env)
            if isinstance(recv, _Module):
                fn = self.attribute(func, env)
            elif isinstance(recv, _Ref) and func.attr not in _ALL_METHODS:
                # A method of the program's own object (``Solution().f``, ``stack.push``).
                meth = self.request(func, {"attr": recv.index, "name": func.attr}, "attr")
                return self.program_call(node, meth, env)
            else:  # a builtin type's method, applied here to the decoded value
                obj = self.fetch(recv) if isinstance(recv, _Ref) else recv
                args, kwargs = self.arguments(node, env)
                if _pending(obj, *args, *kwargs.values()):
                    return _PENDING
                if isinstance(obj, Unrepresentable):
                    raise _NeedsProgram(f"{_where(node)}: .{func.attr}() of an object of the program")
                return _call_method(obj, func.attr, args, kwargs)
        else:
            fn = self.ev(func, env)
            if isinstance(fn, _Ref):
                return self.program_call(node, fn, env)
        args, kwargs = self.arguments(node, env)
        if _pending(fn, *args, *kwargs.values()):
            return _PENDING
        if not any(fn is f for f in _TRUSTED_FUNCS):
            raise _Fail(f"{_where(node)}: {ast.unparse(func)[:40]} is not a function tests may call")
        return _call_trusted(fn, args, kwargs)

    def arguments(self, node: ast.Call, env: dict) -> tuple[list, dict]:
        return [self.val(a, env) for a in node.args], {k.arg: self.val(k.value, env) for k in node.keywords}

    def comprehension(self, node: Any, env: dict) -> Any:
        """A comprehension or generator expression (a generator as a list), evaluated here."""
        out: list[Any] = []
        pending = False
        outer = self.loop

        def level(i: int, scope: dict) -> None:
            nonlocal pending
            if i == len(node.generators):
                if isinstance(node, ast.DictComp):
                    item = (self.val(node.key, scope), self.val(node.value, scope))
                    pending = pending or _pending(*item)
                else:
                    item = self.val(node.elt, scope)
                    pending = pending or _pending(item)
                out.append(item)
                if len(out) > _MAX_LOOP * 10:
                    raise _Fail(f"{_where(node)}: comprehension of more than {_MAX_LOOP * 10} items")
                return
            gen = node.generators[i]
            if gen.is_async:
                raise UnsupportedTest(f"{_where(node)}: async comprehension")
            items = self.val(gen.iter, scope)
            inner = dict(scope)
            if _pending(items):
                # Iterating the program's output: fine, as long as nothing inside calls the program.
                before = len(self.judge.requests)
                self.bind(gen.target, _PENDING, inner)
                for c in gen.ifs:
                    self.soft(c, inner)
                level_soft(i + 1, inner)
                if len(self.judge.requests) != before:
                    raise UnsupportedTest(f"{_where(node)}: a comprehension over the program's output calls "
                                          "the program")
                pending = True
                return
            base = self.loop  # the keys of the enclosing loops and generators
            for k, item in enumerate(_bounded(items, _MAX_LOOP * 10, node)):
                self.loop = base + (id(gen), k)
                self.bind(gen.target, item, inner)
                conds = [self.val(c, inner) for c in gen.ifs]
                if _pending(*conds):
                    pending = True
                    level(i + 1, inner)
                elif all(conds):
                    level(i + 1, inner)
            self.loop = base

        def level_soft(i: int, scope: dict) -> None:
            try:
                level(i, scope)
            except UnsupportedTest:
                raise
            except Exception:
                pass

        level(0, dict(env))
        self.loop = outer
        if pending:
            return _PENDING
        if isinstance(node, ast.SetComp):
            return _t_set(out)
        if isinstance(node, ast.DictComp):
            return _t_dict(out)
        return out

    # -- statements ----------------------------------------------------------------------
    def run(self, stmts: list[ast.stmt], env: dict) -> None:
        for st in stmts:
            self._step()
            self.stmt(st, env)

    def stmt(self, st: ast.stmt, env: dict) -> None:
        if isinstance(st, ast.Assert):
            self.asserts += 1
            v = self.val(st.test, env)
            if not _pending(v) and not v:
                raise _Fail(f"line {st.lineno}: assertion failed")
        elif isinstance(st, ast.Assign) and len(st.targets) == 1:
            target = st.targets[0]
            self.bind(target, self.ev(st.value, env) if isinstance(target, ast.Name) else self.val(st.value, env),
                      env)
        elif isinstance(st, ast.Expr):
            if isinstance(st.value, ast.Constant):
                return
            if self.inline_check(st.value, env):
                return
            self.ev(st.value, env)
        elif isinstance(st, (ast.Import, ast.ImportFrom)):
            self.imports(st, env)
        elif isinstance(st, ast.For) and not st.orelse:
            items = self.val(st.iter, env)
            if _pending(items):
                raise UnsupportedTest(f"line {st.lineno}: a loop over the program's output is not supported")
            outer = self.loop
            for i, item in enumerate(_bounded(items, _MAX_LOOP, st)):
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

    def bind(self, target: ast.AST, value: Any, env: dict) -> None:
        if isinstance(target, ast.Name):
            env[target.id] = value
        elif isinstance(target, (ast.Tuple, ast.List)) and all(isinstance(t, ast.Name) for t in target.elts):
            if _pending(value):
                for t in target.elts:
                    env[t.id] = _PENDING  # type: ignore[attr-defined]
                return
            if isinstance(value, _Ref):
                value = self.fetch(value)
            vals = list(_bounded(value, len(target.elts) + 1, target))
            if len(vals) != len(target.elts):
                raise _Fail(f"{_where(target)}: cannot unpack {len(vals)} values into {len(target.elts)}")
            for t, v in zip(target.elts, vals):
                env[t.id] = v  # type: ignore[attr-defined]
        else:
            raise UnsupportedTest(f"{_where(target)}: assignment to {ast.unparse(target)[:40]!r} is not supported")

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
        ``candidate`` standing for the program's ``f``; the body may use no other program name."""
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
        outer, was = self.loop, self.in_check
        self.loop = outer + (id(call),)  # the same body may be run for several functions
        self.in_check = True
        self.run(d.body, inner)
        self.loop, self.in_check = outer, was
        return True


def _bounded(items: Any, limit: int, node: ast.AST) -> list:
    if isinstance(items, (list, tuple, str, bytes, dict, set, frozenset, range)) and len(items) > limit:
        raise _Fail(f"{_where(node)}: more than {limit} iterations")
    if isinstance(items, Unrepresentable):
        raise _Fail(f"{_where(node)}: iteration over an unrepresentable value")
    return list(items)


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

    def judge(self, results: list[tuple[str, Any]]) -> list[bool | None]:
        """Per case: True (passed), False (failed) or None (deciding it needs program code)."""
        out: list[bool | None] = []
        for i, tree in enumerate(self.trees):
            try:
                _Case(self, i, results).run(tree.body, dict(_MODULES))
                out.append(True)
            except (_NeedsProgram, UnsupportedTest):
                out.append(None)
            except Exception:  # a false assertion, a failed or missing value, an error here
                out.append(False)
        return out


def judge_asserts(
    code: str,
    tests: Sequence[str],
    *,
    limits: SandboxLimits = SandboxLimits(),
    isolation: str = "auto",
) -> tuple[list[bool | None], SandboxResult]:
    """Judge assert-style ``tests`` against ``code``: the program runs once in the sandbox and
    computes the values the assertions read from it; the assertions are evaluated here.

    Per test: True, False, or None where the verdict would need the program's own code. Raises
    :class:`UnsupportedTest` (before running anything) if a test uses something the trusted judge
    does not evaluate."""
    judge = _AssertJudge(tests)
    values, result = sandbox.run_values(code, judge.requests, limits=limits, isolation=isolation)  # type: ignore[arg-type]
    return judge.judge(values), result


run_asserts = judge_asserts
"""Alias of :func:`judge_asserts`."""
