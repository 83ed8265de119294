"""Run untrusted (model-written) Python in a separate, limited process.

Every call starts a fresh interpreter (``python -I``: no ``PYTHON*`` variables, no user site,
no script directory on ``sys.path``) in its own session. What is in force is probed once per
process and reported by :func:`isolation_report`; nothing is claimed that was not checked.

``isolation="namespace"`` (the default where the probe succeeds; ``"auto"`` picks it):

* ``unshare --user --map-root-user --net --pid --fork --kill-child --mount --mount-proc``;
* **network**: a new net namespace with no interface up, so no connection can be made;
* **processes**: a new pid namespace with its own ``/proc``: the program sees and can signal
  only its own processes (not the parent, whose pid it cannot even name); the harness runs as
  process 1 and the program as its child, and when process 1 ends the kernel kills everything
  left in the namespace, including double-forked ``setsid()`` daemons;
* **files**: the whole file system is remounted read-only (``mount_setattr`` recursive)
  except the fresh temporary working directory (bind-mounted read-write), which is removed
  afterwards. Files stay *readable* (the interpreter and its libraries must be), so do not keep
  secrets in world-/user-readable files on a machine that runs untrusted code;
* **privileges**: all capabilities dropped (bounding set, effective/permitted/inheritable) and
  ``no_new_privs`` set before the program runs, so it cannot undo the mounts.

Always (both modes):

* **limits** (``setrlimit`` in the child before the program runs): ``RLIMIT_CPU``,
  ``RLIMIT_AS`` (memory), ``RLIMIT_FSIZE`` (largest file, which also caps stdout/stderr: they
  go to files, never pipes, so a flood cannot fill the parent's memory), ``RLIMIT_NPROC``,
  ``RLIMIT_NOFILE``, ``RLIMIT_CORE = 0``; a wall-clock limit enforced by the parent, which then
  kills the whole process group with ``SIGKILL``;
* **fork bombs**: a per-run ``pids`` cgroup with ``pids.max = max_processes`` where a writable
  cgroup hierarchy exists (root here), which also lets the parent kill every process of the
  run afterwards; otherwise ``RLIMIT_NPROC``, which the kernel does not apply to real root
  (kuid 0), so root without a writable pids cgroup has only the wall-time kill;
* **environment**: built from scratch (``PATH``, ``LANG``, ``HOME``/``TMPDIR`` = the working
  directory, one-thread BLAS/OpenMP settings, the run's marker ``SPRO_SANDBOX_RUN``); none of
  the parent's variables is passed on. The program text and harness settings live outside the
  working directory.

``isolation="none"`` (or ``"auto"`` where ``unshare`` does not work): no namespaces. The network
is blocked only by replacing ``socket.socket``/``socket.create_connection`` in the child (a
Python-level guard that ``ctypes`` can bypass); the file system is **not** read-only and the
program runs as the parent's user (it could write the user's files or signal the parent);
leftover processes are found through the pids cgroup if any and by scanning
``/proc/*/environ`` for the run's marker. Use it only where namespaces are unavailable.

Not defended against: a program that inspects the harness inside its own interpreter (e.g. walks
stack frames) to forge a test result; kernel exploits.
"""

from __future__ import annotations

import dataclasses
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Literal, Sequence

__all__ = [
    "SandboxLimits",
    "SandboxResult",
    "run_python",
    "run_asserts",
    "run_calls",
    "run_many",
    "isolation_report",
]

Status = Literal["ok", "error", "timeout", "memory", "output_limit", "killed", "sandbox_error"]


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Limits for one sandboxed run."""

    cpu_seconds: float = 5.0
    """CPU time (RLIMIT_CPU, rounded up to whole seconds); the kernel kills the program past it."""
    wall_seconds: float = 10.0
    """Wall-clock time; the parent kills the whole process group (and namespace) past it."""
    memory_mb: int = 1024
    """Address space per process (RLIMIT_AS), in MiB."""
    output_bytes: int = 1 << 20
    """Largest file the program may write (RLIMIT_FSIZE); stdout and stderr are files, so this
    also caps each of them. Output at the cap is reported as status ``"output_limit"``."""
    max_processes: int = 32
    """RLIMIT_NPROC (processes + threads of the sandbox user); stops fork bombs."""
    open_files: int = 64
    """RLIMIT_NOFILE."""


@dataclasses.dataclass
class SandboxResult:
    """Outcome of one run. ``status`` is one of:

    ``"ok"`` exit code 0; ``"error"`` non-zero exit (exception, failed assert, ``sys.exit(1)``);
    ``"timeout"`` wall or CPU limit hit; ``"memory"`` ``MemoryError`` (address-space limit);
    ``"output_limit"`` stdout or stderr reached ``output_bytes``; ``"killed"`` ended by a signal
    other than the above; ``"sandbox_error"`` the harness itself failed to start the run.
    """

    status: Status
    returncode: int | None
    stdout: str
    stderr: str
    wall_time: float
    isolation: str = "namespace"

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# --------------------------------------------------------------------------------------------
# The child side. Runs as `python -I -c RUNNER CONFIG_PATH` (as root until it drops privileges).
# It reads its settings and the program from a directory the program cannot read afterwards.
# Modes: "script" runs the program as __main__; "asserts" runs the program, then each test
# statement separately and prints one result line per test; "call" runs the program, then calls
# `fn_name` (a function, or a method of class Solution) on each argument list and prints the
# JSON of each return value. Result lines carry a per-run nonce so that ordinary program output
# cannot be mistaken for them.
# --------------------------------------------------------------------------------------------
RUNNER = r'''
import json, os, sys, resource


def _main():
    # Everything is local to this function, so the program cannot reach the harness's state
    # (the nonce of result lines) through sys.modules['__main__'].
    with open(sys.argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    with open(cfg["code_path"], encoding="utf-8") as f:
        code = f.read()
    if cfg.get("cgroup"):
        try:
            with open(os.path.join(cfg["cgroup"], "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError:
            pass
    if cfg.get("pid1"):
        # We are process 1 of a new pid namespace: run the program in a child with ordinary signal
        # semantics and pass on its exit status; when we exit the kernel kills whatever is left.
        _pid = os.fork()
        if _pid:
            while True:
                try:
                    _, _st = os.waitpid(_pid, 0)
                    break
                except InterruptedError:
                    continue
            if os.WIFSIGNALED(_st):
                os._exit(128 + os.WTERMSIG(_st))
            os._exit(os.WEXITSTATUS(_st) if os.WIFEXITED(_st) else 1)
    work = cfg["workdir"]
    if cfg.get("lockdown"):
        # In our own user+mount namespace: everything read-only except the working directory, then
        # drop every capability so that nothing can be remounted.
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        class _MountAttr(ctypes.Structure):
            _fields_ = [("set", ctypes.c_uint64), ("clr", ctypes.c_uint64),
                        ("prop", ctypes.c_uint64), ("userns", ctypes.c_uint64)]
        _a = _MountAttr(1, 0, 0, 0)  # MOUNT_ATTR_RDONLY
        if libc.syscall(442, -100, b"/", 0x8000, ctypes.byref(_a), ctypes.sizeof(_a)) != 0:
            sys.stderr.write("sandbox: read-only remount failed\n"); os._exit(120)
        if libc.mount(work.encode(), work.encode(), None, 4096, None) != 0 or \
           libc.mount(None, work.encode(), None, 32 | 4096, None) != 0:
            sys.stderr.write("sandbox: workdir bind failed\n"); os._exit(120)
    os.chdir(work)
    L = cfg["limits"]
    def _set(res, v):
        try:
            resource.setrlimit(res, (v, v))
        except (ValueError, OSError):
            pass
    _set(resource.RLIMIT_CORE, 0)
    _set(resource.RLIMIT_FSIZE, L["fsize"])
    _set(resource.RLIMIT_NOFILE, L["nofile"])
    _set(resource.RLIMIT_AS, L["as"])
    _set(resource.RLIMIT_NPROC, L["nproc"])
    try:
        resource.setrlimit(resource.RLIMIT_CPU, (L["cpu"], L["cpu"] + 1))
    except (ValueError, OSError):
        pass
    if cfg.get("lockdown"):
        libc.prctl(38, 1, 0, 0, 0)  # PR_SET_NO_NEW_PRIVS
        for _c in range(64):
            libc.prctl(24, _c, 0, 0, 0)  # PR_CAPBSET_DROP
        class _H(ctypes.Structure):
            _fields_ = [("v", ctypes.c_uint32), ("pid", ctypes.c_int)]
        class _D(ctypes.Structure):
            _fields_ = [("e", ctypes.c_uint32), ("p", ctypes.c_uint32), ("i", ctypes.c_uint32)]
        if libc.capset(ctypes.byref(_H(0x20080522, 0)), (_D * 2)()) != 0:
            sys.stderr.write("sandbox: capset failed\n"); os._exit(120)
        del libc, ctypes, _MountAttr, _a, _H, _D
    if cfg.get("block_socket"):
        import socket as _s
        def _blocked(*a, **k):
            raise OSError(101, "network is disabled in the spro sandbox")
        _s.socket = _blocked
        _s.create_connection = _blocked
        _s.socketpair = _blocked
        try:
            import _socket
            _socket.socket = _blocked
        except Exception:
            pass
    nonce = cfg["nonce"]
    mode = cfg["mode"]
    out = sys.stdout
    def _emit(line):
        try:
            out.write("\n" + nonce + " " + line + "\n")
            out.flush()
        except Exception:
            pass
    del f, L, _set
    if mode == "script":
        del cfg
        sys.argv = ["main.py"]
        g = {"__name__": "__main__", "__builtins__": __builtins__}
        exec(compile(code, "main.py", "exec"), g)
        sys.exit(0)
    tests = cfg["tests"]
    fn_name = cfg.get("fn_name")
    del cfg
    import traceback
    g = {"__name__": "__main__", "__builtins__": __builtins__}
    sys.stdin = open(os.devnull)
    try:
        exec(compile(code, "main.py", "exec"), g)
    except BaseException as e:
        if not isinstance(e, SystemExit):
            traceback.print_exc()
    if mode == "asserts":
        for i, t in enumerate(tests):
            try:
                exec(compile(t, "test_%d" % i, "exec"), g)
                _emit("%d PASS" % i)
            except BaseException as e:
                print("test %d failed: %s: %s" % (i, type(e).__name__, str(e)[:200]), file=sys.stderr)
                _emit("%d FAIL" % i)
    elif mode == "call":
        fn = g.get(fn_name)
        if fn is None and "Solution" in g:
            try:
                fn = getattr(g["Solution"](), fn_name)
            except Exception:
                fn = None
        for i, args in enumerate(tests):
            if fn is None:
                _emit("%d ERR" % i)
                continue
            try:
                if not isinstance(args, list):
                    args = [args]
                res = fn(*args)
                _emit("%d RET %s" % (i, json.dumps(res, default=repr)))
            except BaseException as e:
                print("call %d failed: %s: %s" % (i, type(e).__name__, str(e)[:200]), file=sys.stderr)
                _emit("%d ERR" % i)
    sys.stdout.flush()
    os._exit(0)


_main()
'''


# --------------------------------------------------------------------------------------------
# Isolation probe
# --------------------------------------------------------------------------------------------
_PROBE_LOCK = threading.Lock()
_PROBE: dict[str, Any] | None = None
_UNSHARE = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child",
            "--mount", "--mount-proc"]


def _pids_cgroup_root() -> str | None:
    """A writable cgroup directory under which per-run ``pids`` cgroups can be made, or None."""
    for root in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
        if os.path.isfile(os.path.join(root, "pids.max")) or (
            root == "/sys/fs/cgroup/pids" and os.path.isdir(root)
        ):
            test = os.path.join(root, f"spro-probe-{os.getpid()}-{secrets.token_hex(4)}")
            try:
                os.mkdir(test)
            except OSError:
                continue
            ok = os.path.isfile(os.path.join(test, "pids.max"))
            try:
                os.rmdir(test)
            except OSError:
                pass
            if ok:
                return root
    return None


def _probe() -> dict[str, Any]:
    """Check once which isolation works here (runs a tiny sandboxed program)."""
    global _PROBE
    with _PROBE_LOCK:
        if _PROBE is not None:
            return _PROBE
        report: dict[str, Any] = {"namespaces": False, "reason": "", "cgroup": _pids_cgroup_root()}
        _PROBE = report  # _run below consults it
        if shutil.which("unshare") is None:
            report["reason"] = "unshare not found"
            return report
        report["namespaces"] = True  # tentatively, for the probe run itself
        check = (
            "import socket, os\n"
            "try:\n"
            "    socket.create_connection(('1.1.1.1', 53), timeout=1); print('NET')\n"
            "except OSError:\n"
            "    print('NONET')\n"
            "try:\n"
            "    open('/probe-write', 'w'); print('RW')\n"
            "except OSError:\n"
            "    print('RO')\n"
            "open('here', 'w').write('x'); print('CWD-RW')\n"
        )
        try:
            res, _ = _run_unlocked(check, mode="script", limits=SandboxLimits(wall_seconds=30),
                                   iso="namespace")
            out = res.stdout.split()
            if res.status == "ok" and out == ["NONET", "RO", "CWD-RW"]:
                return report
            report["reason"] = f"namespace probe failed: {res.status} {out} {res.stderr.strip()[-300:]}"
        except OSError as e:  # pragma: no cover - depends on host
            report["reason"] = f"namespace probe failed: {e}"
        report["namespaces"] = False
        return report


def isolation_report(isolation: str = "auto") -> dict[str, Any]:
    """What the sandbox enforces on this machine for the given ``isolation`` setting.

    Keys: ``mode`` ("namespace" or "none"), ``network`` (how it is blocked), ``pid_namespace``,
    ``read_only_fs`` (all but the working directory), ``capabilities_dropped``,
    ``fork_limit`` (how fork bombs are stopped), ``cleanup`` (how leftover processes are
    killed), ``reason`` (why namespaces are off, if they are).
    """
    mode = _resolve_isolation(isolation)
    p = _probe()
    ns = mode == "namespace"
    if p["cgroup"]:
        fork_limit = f"pids cgroup under {p['cgroup']}"
    elif os.geteuid() != 0:
        fork_limit = "RLIMIT_NPROC"
    else:
        fork_limit = "none beyond the wall-time kill (root ignores RLIMIT_NPROC; no writable pids cgroup)"
    return {
        "mode": mode,
        "network": "net namespace (no interfaces)" if ns else "python socket patch (bypassable)",
        "pid_namespace": ns,
        "read_only_fs": ns,
        "capabilities_dropped": ns,
        "fork_limit": fork_limit,
        "cleanup": ("pid namespace" if ns else "process group + /proc marker scan")
        + (" + pids cgroup" if p["cgroup"] else ""),
        "rlimits": ["CPU", "AS", "FSIZE", "NPROC", "NOFILE", "CORE"],
        "reason": p["reason"],
    }


def _resolve_isolation(isolation: str) -> str:
    if isolation not in ("auto", "namespace", "none"):
        raise ValueError(f"isolation must be 'auto', 'namespace' or 'none', got {isolation!r}")
    if isolation == "none":
        return "none"
    ok = _probe()["namespaces"]
    if isolation == "namespace" and not ok:
        raise RuntimeError(f"namespace isolation requested but unavailable: {_probe()['reason']}")
    if not ok and not _WARNED:
        _WARNED.append(True)
        warnings.warn("spro.rewards.sandbox: Linux namespaces unavailable (" + _probe()["reason"] + "); running "
                      "model-written code with the weaker fallback isolation (see spro.rewards.sandbox docs)",
                      RuntimeWarning, stacklevel=3)
    return "namespace" if ok else "none"


_WARNED: list[bool] = []


def _base_env(marker: str, home: str) -> dict[str, str]:
    return {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "HOME": home,
        "TMPDIR": home,
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "SPRO_SANDBOX_RUN": marker,
    }


def _kill_marked(marker: str) -> int:
    """Kill every process whose initial environment holds ``SPRO_SANDBOX_RUN=marker``."""
    needle = f"SPRO_SANDBOX_RUN={marker}".encode()
    killed = 0
    for _ in range(3):
        found = False
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    env = f.read()
            except OSError:
                continue
            if needle in env.split(b"\0"):
                found = True
                try:
                    os.kill(int(pid), signal.SIGKILL)
                    killed += 1
                except OSError:
                    pass
        if not found:
            break
        time.sleep(0.02)
    return killed


def _read_capped(path: str, cap: int) -> tuple[str, bool]:
    try:
        with open(path, "rb") as f:
            data = f.read(cap + 1)
    except OSError:
        return "", False
    return data[:cap].decode("utf-8", errors="replace"), len(data) >= cap


def _run(
    code: str,
    *,
    mode: str,
    stdin: str | bytes = "",
    tests: Sequence[Any] = (),
    fn_name: str | None = None,
    limits: SandboxLimits = SandboxLimits(),
    isolation: str = "auto",
) -> tuple[SandboxResult, str]:
    iso = _resolve_isolation(isolation)
    return _run_unlocked(code, mode=mode, stdin=stdin, tests=tests, fn_name=fn_name,
                         limits=limits, iso=iso)


def _cgroup_kill(cg: str) -> None:
    for _ in range(50):
        try:
            with open(os.path.join(cg, "cgroup.procs")) as f:
                pids = [int(x) for x in f.read().split()]
        except OSError:
            return
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.01)
    try:
        os.rmdir(cg)
    except OSError:
        pass


def _run_unlocked(
    code: str,
    *,
    mode: str,
    stdin: str | bytes = "",
    tests: Sequence[Any] = (),
    fn_name: str | None = None,
    limits: SandboxLimits = SandboxLimits(),
    iso: str,
) -> tuple[SandboxResult, str]:
    probe = _PROBE or {}
    nonce = secrets.token_hex(16)
    base = tempfile.mkdtemp(prefix="spro-sbx-")
    t0 = time.perf_counter()
    proc: subprocess.Popen | None = None
    cg: str | None = None
    try:
        os.chmod(base, 0o700)
        work = os.path.join(base, "work")
        os.mkdir(work, 0o700)
        code_path = os.path.join(base, "main.py")
        with open(code_path, "w", encoding="utf-8", errors="surrogatepass") as f:
            f.write(code)
        if probe.get("cgroup"):
            cg = os.path.join(probe["cgroup"], f"spro-sbx-{nonce}")
            try:
                os.mkdir(cg)
                with open(os.path.join(cg, "pids.max"), "w") as f:
                    f.write(str(int(limits.max_processes)))
            except OSError:
                cg = None
        cfg = {
            "code_path": code_path,
            "workdir": work,
            "mode": mode,
            "nonce": nonce,
            "tests": list(tests),
            "fn_name": fn_name,
            "pid1": iso == "namespace",
            "lockdown": iso == "namespace",
            "block_socket": iso != "namespace",
            "cgroup": cg,
            "limits": {
                "cpu": max(1, int(-(-limits.cpu_seconds // 1))),
                "as": int(limits.memory_mb) << 20,
                "fsize": int(limits.output_bytes),
                "nproc": int(limits.max_processes),
                "nofile": int(limits.open_files),
            },
        }
        cfg_path = os.path.join(base, "cfg.json")
        with open(cfg_path, "w", encoding="utf-8") as f:
            json.dump(cfg, f)
        in_path = os.path.join(base, "stdin")
        with open(in_path, "wb") as f:
            f.write(stdin.encode("utf-8", errors="replace") if isinstance(stdin, str) else stdin)
        out_path, err_path = os.path.join(base, "stdout"), os.path.join(base, "stderr")
        argv = [sys.executable, "-I", "-c", RUNNER, cfg_path]
        if iso == "namespace":
            argv = _UNSHARE + argv
        with open(in_path, "rb") as fin, open(out_path, "wb") as fout, open(err_path, "wb") as ferr:
            try:
                proc = subprocess.Popen(
                    argv, stdin=fin, stdout=fout, stderr=ferr, cwd=work,
                    env=_base_env(nonce, work), start_new_session=True, close_fds=True,
                )
            except OSError as e:
                return SandboxResult("sandbox_error", None, "", f"could not start sandbox: {e}",
                                     time.perf_counter() - t0, iso), nonce
            timed_out = False
            try:
                rc = proc.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                timed_out = True
                _killpg(proc.pid)
                rc = proc.wait()
        wall = time.perf_counter() - t0
        _killpg(proc.pid)
        if cg:
            _cgroup_kill(cg)
            cg = None
        if iso != "namespace":
            _kill_marked(nonce)
        stdout, out_full = _read_capped(out_path, limits.output_bytes)
        stderr, err_full = _read_capped(err_path, limits.output_bytes)
        if rc == 120 and stderr.startswith("sandbox: "):
            status: Status = "sandbox_error"
        elif timed_out or rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU, 128 + signal.SIGKILL) and \
                wall >= limits.cpu_seconds:
            status = "timeout"
        elif out_full or err_full:
            status = "output_limit"
        elif rc == 0:
            status = "ok"
        elif "MemoryError" in stderr[-2000:]:
            status = "memory"
        elif rc < 0 or rc >= 128:
            status = "killed"
        else:
            status = "error"
        return SandboxResult(status, rc, stdout, stderr, wall, iso), nonce
    finally:
        if proc is not None and proc.poll() is None:  # pragma: no cover - defensive
            _killpg(proc.pid)
            proc.wait()
        if cg:
            _cgroup_kill(cg)
        shutil.rmtree(base, ignore_errors=True)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def run_python(
    code: str,
    *,
    stdin: str | bytes = "",
    limits: SandboxLimits = SandboxLimits(),
    isolation: Literal["auto", "namespace", "none"] = "auto",
) -> SandboxResult:
    """Run ``code`` as a script (``__name__ == "__main__"``) with ``stdin`` and the limits.

    Never raises for anything the program does; harness failures give status "sandbox_error".
    """
    return _run(code, mode="script", stdin=stdin, limits=limits, isolation=isolation)[0]


def _parse_lines(stdout: str, nonce: str) -> tuple[str, dict[int, str]]:
    """Split harness result lines (``nonce idx payload``) from the program's own output."""
    res: dict[int, str] = {}
    keep: list[str] = []
    for line in stdout.split("\n"):
        if line.startswith(nonce + " "):
            rest = line[len(nonce) + 1:]
            idx, _, payload = rest.partition(" ")
            if idx.isdigit():
                res[int(idx)] = payload
                continue
        keep.append(line)
    return "\n".join(keep), res


def run_asserts(
    code: str,
    tests: Sequence[str],
    *,
    limits: SandboxLimits = SandboxLimits(),
    isolation: Literal["auto", "namespace", "none"] = "auto",
) -> tuple[list[bool], SandboxResult]:
    """Run ``code`` once, then each test statement (e.g. ``"assert f(2) == 4"``) on its globals.

    Returns (passed per test, the run's result). Tests after a crash, timeout or kill count as
    failed. A program that exits early (``sys.exit``/``os._exit``) before the tests pass none.
    """
    result, nonce = _run(code, mode="asserts", tests=list(tests), limits=limits, isolation=isolation)
    result.stdout, lines = _parse_lines(result.stdout, nonce)
    return [lines.get(i) == "PASS" for i in range(len(tests))], result


def run_calls(
    code: str,
    fn_name: str,
    args_list: Sequence[Any],
    *,
    limits: SandboxLimits = SandboxLimits(),
    isolation: Literal["auto", "namespace", "none"] = "auto",
) -> tuple[list[tuple[bool, Any]], SandboxResult]:
    """Run ``code``, then call ``fn_name`` (a function or a ``Solution`` method) on each argument
    list. Returns per call (returned normally, JSON-decoded return value) and the run's result."""
    result, nonce = _run(code, mode="call", tests=list(args_list), fn_name=fn_name, limits=limits,
                         isolation=isolation)
    result.stdout, lines = _parse_lines(result.stdout, nonce)
    out: list[tuple[bool, Any]] = []
    for i in range(len(args_list)):
        p = lines.get(i, "ERR")
        if p.startswith("RET "):
            try:
                out.append((True, json.loads(p[4:])))
            except ValueError:
                out.append((True, p[4:]))
        else:
            out.append((False, None))
    return out, result


def run_many(
    jobs: Iterable[dict[str, Any]],
    *,
    workers: int = 1,
    limits: SandboxLimits = SandboxLimits(),
    isolation: Literal["auto", "namespace", "none"] = "auto",
) -> list[SandboxResult]:
    """Run many scripts, ``workers`` at a time (threads that each wait on one child process).

    Each job is a dict with ``code`` and optionally ``stdin``. Results are in input order.
    """
    jobs = list(jobs)
    fn = lambda j: run_python(j["code"], stdin=j.get("stdin", ""), limits=limits, isolation=isolation)  # noqa: E731
    if workers <= 1 or len(jobs) <= 1:
        return [fn(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=workers) as ex:
        return list(ex.map(fn, jobs))
