"""The code sandbox: ordinary programs, statuses, the value channel and its codec, what each
isolation mode claims (checked from inside), and cleanup of hostile trees.

The hostile programs themselves (one test per attack and mode) are in test_hostile.py.
"""

from __future__ import annotations

import json
import math
import os
import tempfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spro.rewards import sandbox
from spro.rewards.sandbox import (SandboxLimits, Unrepresentable, decode_value, encode_value, isolation_report,
                                  run_calls, run_python, run_values)
from spro.rewards.code import run_asserts

# Ordinary programs get a generous wall limit: the machine may be busy.
NORMAL = SandboxLimits(cpu_seconds=5, wall_seconds=30, memory_mb=512, output_bytes=64 * 1024, max_processes=16,
                       disk_mb=16)
MODES = ["bwrap", "namespace", "unsafe-none"]  # the "none" mode is chosen only by its explicit name


def _need(mode: str) -> None:
    p = sandbox._probe()
    if mode != "unsafe-none" and not p[mode]:
        pytest.skip(f"{mode} isolation unavailable here: {p['reasons'][mode]}")


@pytest.mark.parametrize("mode", MODES)
def test_ordinary_program_runs(mode):
    _need(mode)
    res = run_python(
        "import os, sys, tempfile\n"
        "n = int(input())\n"
        "open('scratch.txt', 'w').write('ok')\n"
        "with tempfile.TemporaryFile() as f:\n"
        "    f.write(b'x')\n"
        "print(n * 2, open('scratch.txt').read(), sorted(os.environ))\n",
        stdin="21\n",
        limits=NORMAL,
        isolation=mode,
    )
    assert res.status == "ok", res.stderr
    assert res.isolation == ("none" if mode == "unsafe-none" else mode)
    assert res.stdout.startswith("42 ok ")
    env_keys = eval(res.stdout.split(" ", 2)[2])
    assert set(env_keys) <= {"PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                             "MKL_NUM_THREADS", "SPRO_SANDBOX_RUN", "PWD"}


CLAIMS = r"""
import json, os, socket
st = open('/proc/self/status').read()
field = lambda k: st.split(k + ':')[1].split()[0]
def writable(p):
    try:
        open(p, 'w').close(); os.unlink(p); return True
    except OSError:
        return False
tmp = os.statvfs('/tmp')
print(json.dumps({
    'pid': os.getpid(), 'cap_eff': field('CapEff'), 'no_new_privs': field('NoNewPrivs'),
    'root': sorted(os.listdir('/')), 'etc': sorted(os.listdir('/etc')) if os.path.isdir('/etc') else [],
    'root_writable': writable('/claims-probe'), 'tmp_writable': writable('/tmp/claims-probe'),
    'tmp_size': tmp.f_blocks * tmp.f_frsize, 'cwd': os.getcwd(),
    'interfaces': [l.split(':')[0].strip() for l in open('/proc/net/dev').read().splitlines()[2:]],
    'procs': sorted(int(p) for p in os.listdir('/proc') if p.isdigit()),
}))
"""


@pytest.mark.parametrize("mode", ["bwrap", "namespace"])
def test_isolation_claims_hold_from_inside(mode):
    """What isolation_report says about a namespace mode, checked by a program inside it."""
    _need(mode)
    rep = isolation_report(mode)
    assert rep["mode"] == mode and rep["pid_namespace"] and rep["capabilities_dropped"]
    res = run_python(CLAIMS, limits=NORMAL, isolation=mode)
    assert res.status == "ok", res.stderr
    c = json.loads(res.stdout)
    assert int(c["cap_eff"], 16) == 0 and c["no_new_privs"] == "1"
    assert c["pid"] <= 3 and max(c["procs"]) <= 4  # only the sandbox's own processes are visible
    assert not c["root_writable"] and c["tmp_writable"] and c["cwd"] == "/tmp"
    assert c["tmp_size"] <= NORMAL.disk_mb << 20
    assert c["interfaces"] == ["lo"]
    if mode == "bwrap":
        allowed = {"usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "etc", "proc", "dev", "tmp"}
        allowed |= {p.split("/")[1] for p in sandbox._python_paths()}
        assert set(c["root"]) <= allowed, c["root"]
        assert set(c["etc"]) <= {"ld.so.cache", "ld.so.conf", "localtime"}
        assert not {"home", "run", "var"} & set(c["root"]) - allowed


def test_fallback_report_is_honest():
    rep = isolation_report("none")
    assert rep["network"].startswith("python socket patch")
    assert {"write_outside", "unix_socket", "loopback_tcp", "kill_parent"} <= set(rep["not_contained"])
    assert isolation_report("auto")["mode"] in sandbox.ISOLATION_MODES


def test_statuses_and_host_working_dir_removed():
    res = run_python("import os\nprint(os.getcwd())\nraise SystemExit(3)", limits=NORMAL, isolation="unsafe-none")
    assert res.status == "error" and res.returncode == 3
    assert res.stdout.strip().startswith(tempfile.gettempdir())
    assert not os.path.exists(res.stdout.strip())
    res = run_python("raise ValueError('boom')", limits=NORMAL)
    assert res.status == "error" and "ValueError: boom" in res.stderr
    res = run_python("print('x' * 10)", limits=NORMAL)
    assert res.ok and res.stdout == "x" * 10 + "\n" and res.run_id


def test_asserts_are_per_test_and_unforgeable_by_printing():
    code = "def f(x):\n    return x * 2\nprint('0 PASS')\nprint('1 PASS')\nprint('[1, 7]')\n"
    passed, res = run_asserts(code, ["assert f(2) == 4", "assert f(3) == 7", "assert f(0) == 0"], limits=NORMAL)
    assert passed == [True, False, True]
    # A program that exits before the tests passes none of them.
    passed, _ = run_asserts("import os\nos._exit(0)\ndef f(x): return 1", ["assert f(1) == 1"], limits=NORMAL)
    assert passed == [False]


def test_run_values_requests_bindings_and_errors():
    code = ("class Solution:\n    def twice(self, x):\n        return 2 * x\n"
            "def pair(a, b):\n    return (a, {b})\n"
            "class Box:\n    def __init__(self):\n        self.items = []\n"
            "def ap(fn, x):\n    return fn(x)\n")
    reqs = [
        {"call": "twice", "args": encode_value([21])},              # a Solution method
        {"call": "pair", "args": encode_value([[1, 2], 3])},
        {"name": "Box"},
        {"apply": 2, "args": []},                                   # an object: unrepresentable
        {"attr": 3, "name": "items"},                               # the same object's attribute
        {"name": "pair"},
        {"apply": 5, "args": encode_value([1, 2]), "kw": []},
        {"name": "undefined_name"},
        {"apply": 7, "args": []},                                   # the failed request's value
        {"name": "ap"},
        {"apply": 9, "args": [None], "fn_args": {0: "lambda v: v + 1"}, "kw": [["x", 4]]},  # a closed lambda
    ]
    values, res = run_values(code, reqs, limits=NORMAL)
    assert res.ok
    assert values[0] == ("ok", 42)
    assert values[1] == ("ok", ([1, 2], {3}))
    assert values[3][0] == "ok" and isinstance(values[3][1], Unrepresentable)
    assert values[4] == ("ok", [])
    assert values[6] == ("ok", (1, {2}))
    assert values[7][0] == "error" and "NameError" in values[7][1]
    assert values[8][0] == "error" and "has no value" in values[8][1]
    assert values[10] == ("ok", 5)
    calls, _ = run_calls(code, "twice", [[1], [2]], limits=NORMAL)
    assert calls == [(True, 2), (True, 4)]


def test_requests_after_a_crash_or_timeout_are_missing():
    code = "def f(x):\n    if x == 2:\n        while True: pass\n    return x\n"
    values, res = run_values(code, [{"call": "f", "args": [1]}, {"call": "f", "args": [2]}, {"call": "f", "args": [3]}],
                             limits=SandboxLimits(cpu_seconds=1, wall_seconds=5))
    assert res.status == "timeout"
    assert values == [("ok", 1), ("missing", None), ("missing", None)]


def test_parallel_runs_keep_order():
    jobs = [{"code": "print(int(input()) ** 2)", "stdin": f"{i}\n"} for i in range(6)]
    res = sandbox.run_many(jobs, workers=3, limits=NORMAL)
    assert [r.stdout.strip() for r in res] == [str(i * i) for i in range(6)]


# ---------------------------------------------------------------------------- the codec
plain = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5)
    | st.binary(max_size=5) | st.complex_numbers(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.tuples(inner, inner)
    | st.frozensets(st.integers() | st.text(max_size=3), max_size=3)
    | st.dictionaries(st.integers() | st.text(max_size=3), inner, max_size=3),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(plain)
def test_codec_round_trips_plain_data(v):
    back = decode_value(json.loads(json.dumps(encode_value(v))))
    assert back == v and type(back) is type(v)


def test_codec_specials_and_big_integers():
    for v in (float("inf"), -float("inf"), 2 ** 30000, -(3 ** 20000), {1, 2}, b"\x00\xff"):
        assert decode_value(json.loads(json.dumps(encode_value(v)))) == v
    assert math.isnan(decode_value(json.loads(json.dumps(encode_value(float("nan"))))))


TRICKY = ['"quoted" \\ back\nslash\x00\x1f\x7f', "\udc80 lone surrogate", "é ✓ 𝔘", 2 ** 9000, -(2 ** 70), -0.0, 1e-320,
          float("inf"), {(1, "a"): [None, True], "k": {1.5: b"\x00"}}, {frozenset({1}), 2}, 3 + 4j, ()]


def test_values_survive_the_sandbox_round_trip():
    """The runner writes its own JSON (it does not import json); every kind of value comes back."""
    code = f"def v():\n    return {TRICKY!r}\n".replace("inf", "float('inf')")
    values, res = run_values(code, [{"call": "v", "args": []}], limits=NORMAL)
    assert res.ok, res.stderr
    assert values == [("ok", TRICKY)]


def test_decoder_is_strict():
    class MyInt(int):
        pass

    three = encode_value(MyInt(3))  # a subclass travels as its base data (its __eq__ stays behind)
    assert type(three) is int and three == 3
    with pytest.raises(ValueError):
        encode_value(object())
    for bad in ({"zz": 1}, {"t": 1}, {"t": [1], "s": [2]}, {"d": [[1]]}, {"c": ["a", 1]}, {"f": "1e5"},
                {"x": 5}, {"s": [[1]]}):
        with pytest.raises((ValueError, TypeError)):
            decode_value(bad)
    deep = [[]]
    for _ in range(200):
        deep = [deep]
    with pytest.raises(ValueError):
        decode_value(deep)
    # Many distinct items with one hash would make set construction quadratic: refused.
    p = 2 ** 61 - 1
    with pytest.raises(ValueError, match="equal hashes"):
        decode_value({"s": [k * p for k in range(1, 200)]})
    u = decode_value({"u": "E"})
    assert isinstance(u, Unrepresentable)
    for op in (lambda: u == 1, lambda: 1 == u, lambda: bool(u), lambda: hash(u), lambda: [u] == [1]):
        with pytest.raises(TypeError):
            op()


def test_results_channel_parsing_is_defensive():
    lines = b"\n".join([b"not json", b"[0, 1]", b"[0, 2]", b'[1, {"e": "ValueError: x"}]', b"[2, {\"zz\": 1}]",
                        b"[9, 1]", b"[\"3\", 1]", b"[" * 5000 + b"]" * 5000])
    out = sandbox._parse_results(lines, 4)
    assert out[0] == ("error", "answered twice")
    assert out[1] == ("error", "ValueError: x")
    assert out[2][0] == "error" and out[3] == ("missing", None)


# ---------------------------------------------------------------------------- cleanup
def _hostile_tree(base: str, canary: str, depth: int = 3000) -> None:
    os.symlink(canary, os.path.join(base, "link"))
    for i in range(1000):
        with open(os.path.join(base, f"f{i}"), "w") as f:
            f.write("x")
    fd = os.open(base, os.O_RDONLY)
    for _ in range(depth):  # 3000: deeper than PATH_MAX and the recursion limit
        os.mkdir("d", dir_fd=fd)
        nfd = os.open("d", os.O_RDONLY, dir_fd=fd)
        os.close(fd)
        fd = nfd
    os.close(os.open("x", os.O_CREAT | os.O_WRONLY, 0, dir_fd=fd))
    os.chmod("x", 0, dir_fd=fd)
    os.fchmod(fd, 0)
    os.close(fd)
    os.mkdir(os.path.join(base, "locked"))
    open(os.path.join(base, "locked", "y"), "w").close()
    os.chmod(os.path.join(base, "locked"), 0)


def test_rmtree_removes_hostile_trees(tmp_path):
    canary = tmp_path / "canary"
    canary.write_text("keep")
    base = tmp_path / "tree"
    base.mkdir()
    _hostile_tree(str(base), str(canary))
    assert sandbox._rmtree(str(base)) is True
    assert not base.exists() and canary.read_text() == "keep"


def test_sweep_removes_what_a_dead_caller_left(tmp_path):
    import subprocess
    import sys

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    stale = os.path.join(tempfile.gettempdir(), f"spro-sbx-{dead}-test")
    live = os.path.join(tempfile.gettempdir(), f"spro-sbx-{os.getpid()}-test")
    canary = tmp_path / "canary"
    canary.write_text("keep")
    os.mkdir(stale)
    os.mkdir(live)
    try:
        _hostile_tree(stale, str(canary), depth=50)  # (depth is test_rmtree's business)
        removed = sandbox.sweep_stale()
        assert stale in removed and not os.path.exists(stale)
        assert os.path.isdir(live) and canary.read_text() == "keep"  # its owner is alive
    finally:
        os.rmdir(live)
        sandbox._rmtree(stale)


def test_standard_library_values_travel_as_their_plain_data():
    code = ("import collections, decimal, enum, fractions, itertools\nimport numpy as np\n"
            "class Color(enum.IntEnum):\n    RED = 1\n"
            "P = collections.namedtuple('P', 'x y')\n"
            "def values():\n"
            "    return [collections.Counter('aab'), collections.OrderedDict(b=1), collections.defaultdict(int, a=2),\n"
            "            P(1, 2), collections.deque([3]), fractions.Fraction(1, 3), decimal.Decimal('1.10'),\n"
            "            np.int64(7), np.float32(0.5), np.array([[1, 2]]), (i for i in range(3)), map(str, [1]),\n"
            "            {'k': 1}.items(), range(2), Color.RED, collections.UserDict(a=1), bytearray(b'x')]\n"
            "def endless():\n    return itertools.count()\n")
    values, res = run_values(code, [{"call": "values", "args": []}, {"call": "endless", "args": []}], limits=NORMAL)
    assert res.ok, res.stderr
    kind, got = values[0]
    assert kind == "ok", got
    import decimal
    import fractions
    assert got == [{"a": 2, "b": 1}, {"b": 1}, {"a": 2}, (1, 2), [3], fractions.Fraction(1, 3), decimal.Decimal("1.10"),
                   7, 0.5, [[1, 2]], [0, 1, 2], ["1"], [("k", 1)], [0, 1], 1, {"a": 1}, b"x"]
    assert type(got[0]) is dict and type(got[3]) is tuple and type(got[14]) is int
    assert str(got[6]) == "1.10"  # exactly
    assert values[1][0] == "ok" and isinstance(values[1][1], Unrepresentable)  # bounded: not materialised
