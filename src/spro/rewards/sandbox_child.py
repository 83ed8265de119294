"""The sandbox's child program: runs *inside* the sandbox, as ``python -I -c <this file's source>
JOB_FD RESULTS_FD`` (see :func:`spro.rewards.sandbox._execute`), and is imported by the trusted
side for the value codec, so that both sides share one source.

It must import nothing but built-in modules at start (``os``, ``sys``, ``marshal``; ``json`` would
pull in ``re`` and cost a good part of a sandbox start) and nothing from ``spro`` (which is not
visible inside the sandbox).

The job (mode, program, requests, limits) arrives marshalled on an inherited unlinked file; results
leave on another. In ``"script"`` mode the program runs as ``__main__`` with the test input on
stdin. In ``"values"`` mode it runs, then each request is evaluated on its globals and one line
``[index, encoded value]`` (or ``[index, {"e": "Error: message"}]``) is written per request.

Requests (built by :mod:`spro.rewards.sandbox` and :mod:`spro.rewards.asserts`) carry only what
the program is given: names of its functions and argument values, never expected values:

* ``{"call": name, "args": [...]}``: call the program's function ``name`` (or the method of its
  ``class Solution``) on the decoded arguments;
* ``{"name": name}``: the program's global ``name``;
* ``{"attr": k, "name": a}``: attribute ``a`` of the object request ``k`` returned;
* ``{"apply": k, "args": [...], "kw": [[name, value], ...], "fn_args": {pos: source}}``: call
  the object request ``k`` returned on the decoded arguments (``fn_args``: positions holding a
  closed lambda of the test, compiled here with builtins only).

**Value codec** (:func:`encode_value` / :func:`decode_value`): plain data as JSON-able
structures. Exact builtin types travel as themselves; subclasses of builtin containers and numbers
travel as their base data (``Counter``, ``defaultdict``, ``OrderedDict`` as dicts, ``namedtuple``
as tuples, ``deque`` as lists, ``IntEnum`` as ints), numpy scalars and arrays (at most
``MAX_ITEMS`` elements) as numbers and lists, ``Fraction`` and ``Decimal`` exactly, and iterators,
generators and dict views are materialised here (at most ``MAX_ITEMS`` items) as lists. Anything
else (an instance of a program's class, a function, ...) becomes an :class:`Unrepresentable` that
equals nothing. Decoding is strict (exact JSON types, one known tag per object, bounded depth, no
adversarial hash collisions) and creates only builtin plain data (and ``Fraction``/``Decimal``),
so no code of the program runs where values are decoded; its size is that of the results file,
capped by ``SandboxLimits.output_bytes``.
"""

import os
import sys

_MAX_DEPTH = 64
_BIG_INT = 1 << 8000
MAX_ITEMS = 1_000_000
"""Items materialised from one iterator, view or numpy array."""


class Unrepresentable:
    """A value with no plain-data form (an instance of a program's class, a function, ...).
    Equal to nothing; truth tests and hashing raise."""

    __slots__ = ("what",)

    def __init__(self, what):
        self.what = what

    def __repr__(self):
        return "<unrepresentable %s>" % self.what

    def __eq__(self, other):
        raise TypeError("unrepresentable value (%s) compared" % self.what)

    __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __eq__

    def __bool__(self):
        raise TypeError("unrepresentable value (%s) tested for truth" % self.what)

    def __hash__(self):
        raise TypeError("unrepresentable value (%s) hashed" % self.what)


class _NotPlain(Exception):
    pass


_VIEWS = (type({}.keys()), type({}.values()), type({}.items()))


def _items(it):
    out = []
    for x in it:
        out.append(x)
        if len(out) > MAX_ITEMS:
            raise _NotPlain("more than %d items" % MAX_ITEMS)
    return out


def _mro_base(t):
    for b in t.__mro__:
        if b in (bool, int, float, complex, str, bytes, bytearray, list, tuple, dict, set, frozenset):
            return b
    return None


def encode_value(v, _depth=0):
    """Plain data -> JSON-able structure; raises _NotPlain for anything else (rules above)."""
    t = type(v)
    if v is None or t is bool or t is str:
        return v
    if t is int:
        return v if -_BIG_INT < v < _BIG_INT else {"x": hex(v)}
    if t is float:
        return v if v - v == 0 else {"f": repr(v)}
    if _depth >= _MAX_DEPTH:
        raise _NotPlain("nested deeper than %d" % _MAX_DEPTH)
    d = _depth + 1
    if t is list:
        return [encode_value(x, d) for x in v]
    if t is tuple:
        return {"t": [encode_value(x, d) for x in v]}
    if t is set or t is frozenset:
        return {"s" if t is set else "z": [encode_value(x, d) for x in v]}
    if t is dict:
        return {"d": [[encode_value(k, d), encode_value(x, d)] for k, x in v.items()]}
    if t is bytes:
        return {"b": v.hex()}
    if t is complex:
        return {"c": [encode_value(v.real, d), encode_value(v.imag, d)]}
    return _encode_other(v, t, d)


def _encode_other(v, t, d):
    # Subclasses of builtin types (read through the base type's own methods), then known
    # look-alikes from the standard library and numpy, then iterators.
    base = _mro_base(t)
    if base is not None:
        if base is bool or base is int:
            return encode_value(int.__index__(v), d)
        if base is float:
            return encode_value(float.__float__(v), d)
        if base is str:
            return str.__str__(v)
        if base is bytes or base is bytearray:
            return {"b": bytes(v).hex()}
        if base is complex:
            return encode_value(complex(complex.real.__get__(v), complex.imag.__get__(v)), d)
        if base is list:
            return [encode_value(x, d) for x in _items(list.__iter__(v))]
        if base is tuple:
            return {"t": [encode_value(x, d) for x in _items(tuple.__iter__(v))]}
        if base is set or base is frozenset:
            return {"s" if base is set else "z": [encode_value(x, d) for x in _items(base.__iter__(v))]}
        if base is dict:
            return {"d": [[encode_value(k, d), encode_value(x, d)] for k, x in _items(dict.items(v))]}
    mods = sys.modules
    fr, dec, np, coll = mods.get("fractions"), mods.get("decimal"), mods.get("numpy"), mods.get("collections")
    if fr is not None and isinstance(v, fr.Fraction):
        return {"q": [encode_value(int.__index__(v.numerator), d), encode_value(int.__index__(v.denominator), d)]}
    if dec is not None and isinstance(v, dec.Decimal):
        return {"m": dec.Decimal.__str__(v)}
    if np is not None:
        if isinstance(v, np.generic):
            return encode_value(v.item(), d)
        if isinstance(v, np.ndarray):
            if v.size > MAX_ITEMS:
                raise _NotPlain("numpy array of more than %d items" % MAX_ITEMS)
            return encode_value(v.tolist(), d)
    if coll is not None:
        if isinstance(v, coll.deque):
            return [encode_value(x, d) for x in _items(coll.deque.__iter__(v))]
        if isinstance(v, (coll.UserDict, coll.UserList, coll.UserString)):
            return encode_value(v.data, d)
    if t in _VIEWS or t is range or hasattr(t, "__next__"):
        return [encode_value(x, d) for x in _items(v)]
    raise _NotPlain(t.__name__)


def _hashes_ok(items):
    # Many distinct items with one hash make set/dict construction quadratic: refuse them.
    if len(items) > 64:
        counts = {}
        for x in items:
            h = hash(x)
            counts[h] = counts.get(h, 0) + 1
            if counts[h] > 16:
                raise ValueError("too many items with equal hashes")
    return items


def _decimal(x):
    # Finite decimals with a bounded exponent, infinities and quiet NaN (signalling NaNs raise on
    # comparison): checked by hand, without importing re.
    s = x[1:] if x[:1] in ("+", "-") else x
    if s in ("Infinity", "NaN"):
        pass
    else:
        mant, _, exp = s.partition("E")
        if exp:
            e = exp[1:] if exp[:1] in ("+", "-") else exp
            if not (e.isdigit() and e.isascii() and len(e) <= 6):
                raise ValueError("bad decimal")
        digits = mant.replace(".", "", 1)
        if not (digits.isdigit() and digits.isascii() and len(x) <= 5000):
            raise ValueError("bad decimal")
    import decimal
    return decimal.Decimal(x)


def decode_value(o, _depth=0):
    """Strict inverse of encode_value; raises ValueError/TypeError on anything malformed."""
    t = type(o)
    if o is None or t is bool or t is int or t is float or t is str:
        return o
    if _depth >= _MAX_DEPTH:
        raise ValueError("nested deeper than %d" % _MAX_DEPTH)
    d = _depth + 1
    if t is list:
        return [decode_value(x, d) for x in o]
    if t is dict and len(o) == 1:
        (k, x), = o.items()
        tx = type(x)
        if tx is list:
            if k == "t":
                return tuple(decode_value(e, d) for e in x)
            if k == "s":
                return set(_hashes_ok([decode_value(e, d) for e in x]))
            if k == "z":
                return frozenset(_hashes_ok([decode_value(e, d) for e in x]))
            if k == "d":
                pairs = []
                for p in x:
                    if type(p) is not list or len(p) != 2:
                        raise ValueError("bad dict item")
                    pairs.append((decode_value(p[0], d), decode_value(p[1], d)))
                _hashes_ok([p[0] for p in pairs])
                return dict(pairs)
            if k == "c" and len(x) == 2:
                re_, im = decode_value(x[0], d), decode_value(x[1], d)
                if type(re_) is float and type(im) is float:
                    return complex(re_, im)
            if k == "q" and len(x) == 2:
                num, den = decode_value(x[0], d), decode_value(x[1], d)
                if type(num) is int and type(den) is int and den > 0:
                    import fractions
                    return fractions.Fraction(num, den)
        elif tx is str:
            if k == "b":
                return bytes.fromhex(x)
            if k == "f" and x in ("nan", "inf", "-inf"):
                return float(x)
            if k == "x":
                return int(x, 16)
            if k == "m":
                return _decimal(x)
            if k == "u":
                return Unrepresentable(x[:100])
    raise ValueError("not an encoded value")


def _lockdown(lk, work):
    # Namespace fallback: in our own user+mount namespace, make everything read-only, put a private
    # tmpfs on the working directory, hide directories holding sockets and user files under empty
    # tmpfs, bind the interpreter's own folders that lie under them back read-only, and (later)
    # drop every capability so that nothing can be undone.
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)

    class _MountAttr(ctypes.Structure):
        _fields_ = [("set", ctypes.c_uint64), ("clr", ctypes.c_uint64),
                    ("prop", ctypes.c_uint64), ("userns", ctypes.c_uint64)]

    def read_only(path):  # mount_setattr(MOUNT_ATTR_RDONLY, AT_RECURSIVE)
        attr = _MountAttr(1, 0, 0, 0)
        if libc.syscall(442, -100, path.encode(), 0x8000, ctypes.byref(attr), ctypes.sizeof(attr)) != 0:
            sys.stderr.write("sandbox: read-only remount of %s failed\n" % path); os._exit(120)

    binds = lk.get("binds", [])
    # O_PATH handles on the interpreter's folders, taken before they are covered.
    handles = [(p, os.open(p, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)) for p in binds]
    read_only("/")
    covered = set()
    mounts = [(work, 2 | 4, "size=%d,mode=0700" % lk["size"])]  # MS_NOSUID|MS_NODEV
    for d in lk["hide"]:
        if any(p == d or p.startswith(d.rstrip("/") + "/") for p in binds):
            covered.add(d)  # made read-only after the binds
            mounts.append((d, 2 | 4 | 8, "size=64k,mode=0555"))  # MS_NOSUID|MS_NODEV|MS_NOEXEC
        else:
            mounts.append((d, 1 | 2 | 4 | 8, "size=4k,mode=0555"))  # + MS_RDONLY
    for path, flags, data in mounts:
        if libc.mount(b"tmpfs", path.encode(), b"tmpfs", flags, data.encode()) != 0:
            sys.stderr.write("sandbox: tmpfs on %s failed\n" % path); os._exit(120)
    for p, fd in handles:
        try:
            os.makedirs(p, exist_ok=True)
        except OSError:
            sys.stderr.write("sandbox: cannot make %s\n" % p); os._exit(120)
        if libc.mount(("/proc/self/fd/%d" % fd).encode(), p.encode(), None, 4096 | 16384, None) != 0:  # MS_BIND|MS_REC
            sys.stderr.write("sandbox: bind of %s failed\n" % p); os._exit(120)
        os.close(fd)
        read_only(p)
    for d in covered:
        read_only(d)
    return libc


def _drop_capabilities(libc):
    import ctypes
    libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
    for c in range(64):
        libc.prctl(24, c, 0, 0, 0)  # PR_CAPBSET_DROP

    class _H(ctypes.Structure):
        _fields_ = [("v", ctypes.c_uint32), ("pid", ctypes.c_int)]

    class _D(ctypes.Structure):
        _fields_ = [("e", ctypes.c_uint32), ("p", ctypes.c_uint32), ("i", ctypes.c_uint32)]

    if libc.capset(ctypes.byref(_H(0x20080522, 0)), (_D * 2)()) != 0:
        sys.stderr.write("sandbox: capset failed\n"); os._exit(120)


def _block_sockets():
    import socket as _s

    def _blocked(*a, **k):
        raise OSError(101, "network is disabled in the spro sandbox")

    _s.socket = _s.create_connection = _s.socketpair = _blocked
    try:
        import _socket
        _socket.socket = _blocked
    except Exception:
        pass


def _set_limits(L):
    import resource

    def _set(res, v, hard=None):
        try:
            resource.setrlimit(res, (v, v if hard is None else hard))
        except (ValueError, OSError):
            pass
    _set(resource.RLIMIT_CORE, 0)
    _set(resource.RLIMIT_FSIZE, L["fsize"])
    _set(resource.RLIMIT_NOFILE, L["nofile"])
    _set(resource.RLIMIT_AS, L["as"])
    _set(resource.RLIMIT_NPROC, L["nproc"])
    _set(resource.RLIMIT_CPU, L["cpu"], L["cpu"] + 1)


_JSON_ESCAPES = {i: "\\u%04x" % i for i in range(32)}
_JSON_ESCAPES.update({34: '\\"', 92: "\\\\"})


def _json(o):
    # JSON text of an encoded value (None/bool/int/finite float/str/list/dict of str keys) without
    # importing json, whose import (it pulls in re) costs a good part of a sandbox start.
    t = type(o)
    if o is None:
        return "null"
    if t is bool:
        return "true" if o else "false"
    if t is int or t is float:
        return repr(o)
    if t is str:
        return '"' + o.translate(_JSON_ESCAPES) + '"'
    if t is list:
        return "[" + ",".join([_json(x) for x in o]) + "]"
    return "{" + ",".join([_json(k) + ":" + _json(v) for k, v in o.items()]) + "}"

def _fn_arg(src):
    # A closed lambda of the test (checked on the trusted side: it names only its parameters and
    # builtins), compiled with the builtins alone.
    return eval(compile(src, "<test lambda>", "eval"), {"__builtins__": __builtins__})


def _answer(req, g, values, fns):
    if "call" in req:
        name = req["call"]
        if name not in fns:
            fn = g.get(name)
            if fn is None and "Solution" in g:
                fn = getattr(g["Solution"](), name)
            if fn is None:
                raise NameError("name %r is not defined" % name)
            fns[name] = fn
        return fns[name](*decode_value(req["args"]))
    if "name" in req and "attr" not in req:
        if req["name"] not in g:
            raise NameError("name %r is not defined" % req["name"])
        return g[req["name"]]
    ref = req["attr"] if "attr" in req else req["apply"]
    if ref not in values:
        raise NameError("request %d has no value (it failed)" % ref)
    if "attr" in req:
        return getattr(values[ref], req["name"])
    args = decode_value(req["args"])
    for pos, src in req.get("fn_args", {}).items():
        args[pos] = _fn_arg(src)
    kw = {k: decode_value(v) for k, v in req.get("kw", [])}
    return values[ref](*args, **kw)


def _serve_values(g, requests, res_fd):
    out = open(res_fd, "w", encoding="utf-8", errors="surrogatepass", closefd=False)
    values = {}
    fns = {}
    for i, req in enumerate(requests):
        try:
            v = _answer(req, g, values, fns)
            values[i] = v
            try:
                enc = encode_value(v)
            except _NotPlain as e:
                enc = {"u": str(e)}
            except RecursionError:
                enc = {"u": "nested too deeply"}
            line = _json([i, enc])
        except BaseException as e:
            try:
                msg = "%s: %s" % (type(e).__name__, e)
            except BaseException:
                msg = "error"
            print("request %d failed: %s" % (i, msg[:300]), file=sys.stderr)
            line = _json([i, {"e": str(msg)[:300]}])
        try:
            out.write(line + "\n")
            out.flush()
        except BaseException:
            break


def _runner():
    import marshal  # built in: no import cost (json would pull in re); the job comes from the parent
    job_fd, res_fd = int(sys.argv[1]), int(sys.argv[2])
    with open(job_fd, "rb") as f:
        job = marshal.loads(f.read())
    if job.get("pid1"):
        # Process 1 of a new pid namespace: run the program in a child with ordinary signal
        # semantics and pass on its exit status; when we exit the kernel kills whatever is left.
        pid = os.fork()
        if pid:
            while True:
                try:
                    _, st = os.waitpid(pid, 0)
                    break
                except InterruptedError:
                    continue
            os._exit(128 + os.WTERMSIG(st) if os.WIFSIGNALED(st) else os.WEXITSTATUS(st))
    lk = job.get("lockdown")
    libc = _lockdown(lk, job["workdir"]) if lk else None
    os.chdir(job["workdir"])
    _set_limits(job["limits"])
    if libc is not None:
        _drop_capabilities(libc)
    if job.get("parent_pid"):
        import ctypes
        ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)  # PR_SET_PDEATHSIG = SIGKILL
        if os.getppid() != job["parent_pid"]:
            os._exit(125)
    if job.get("block_socket"):
        _block_sockets()
    code, mode = job["code"], job["mode"]
    requests = job.get("requests", [])
    del job
    g = {"__name__": "__main__", "__builtins__": __builtins__}
    if mode == "script":
        sys.argv = ["main.py"]
        exec(compile(code, "main.py", "exec"), g)
        sys.exit(0)
    try:
        exec(compile(code, "main.py", "exec"), g)
    except SystemExit:
        pass
    except BaseException:
        import traceback
        traceback.print_exc()
    _serve_values(g, requests, res_fd)
    try:
        sys.stdout.flush()
    except BaseException:
        pass
    os._exit(0)


if __name__ == "__main__":
    _runner()
