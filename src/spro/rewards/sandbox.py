"""Run untrusted (model-written) Python in a separate, limited process, and bring back only data.

Threat model: the program is an adversary searching for any way to earn reward (the policy in RL
learns whatever pays). It may read everything it can reach (its own memory, file descriptors,
``/proc``, the harness source), write anywhere it can, spawn processes, open sockets, exhaust
resources or kill things. What this module guarantees, and how, is below; what it does not is
stated at the end and in the README ("Security").

**Result channel.** Nothing the program can read is secret, and no verdict is ever decided inside
the sandbox. :func:`run_python` returns the program's exit status and its (capped) output, which the
caller compares itself. :func:`run_values` evaluates expressions that *read the program* (calls of
its functions, its names and attributes) and sends back only their **values**, serialised as plain
data (:func:`encode_value`: ``None``, bools, ints, floats, strings, bytes, complex, lists, tuples,
dicts, sets, with subclasses of those, numpy values, fractions, decimals and iterators as their
plain data (see :mod:`spro.rewards.sandbox_child`); anything else arrives as an
:class:`Unrepresentable` that equals nothing). The trusted side decodes them strictly
(:func:`decode_value`) and compares them itself, so no ``__eq__`` of the program ever runs on the
trusted side and a program that exits early simply delivers no values. The expected values of a
test are never sent into the sandbox (see :mod:`spro.rewards.asserts`): a program that forges the
channel can only claim values, which is no more than returning them.

**Isolation** (``isolation=``; ``"auto"`` picks the first that works here, and
:func:`isolation_report` / ``spro doctor`` say which is active and what it enforces):

* ``"bwrap"`` (bubblewrap, the default where installed): new user, pid, network, IPC and UTS
  namespaces; the file system is a fresh read-only root holding only read-only binds of ``/usr``,
  ``/lib*``, ``/etc/ld.so.cache`` and the Python installation (prefix and virtualenv), a fresh
  ``/proc`` and a minimal read-only ``/dev``; no host ``/tmp``, ``/run``, home or sockets; the only
  writable place is a private ``/tmp`` (tmpfs of ``disk_mb``, also ``HOME`` and the working
  directory). No network interface is up (loopback and abstract Unix sockets are per namespace).
  All capabilities are dropped, ``no_new_privs`` is set, nested user namespaces are disabled, and
  the sandbox runs in its own session (``--new-session``). ``--die-with-parent`` ties it to the
  caller: when the caller dies (even ``kill -9``) bubblewrap is killed, and with it process 1 of
  the pid namespace, whereupon the kernel kills every process left in it; nothing is left on the
  host file system (input, output and results are unlinked temporary files).
* ``"namespace"`` (fallback without bubblewrap; ``unshare`` + ``setpriv`` from util-linux): user,
  pid, network and mount namespaces; the whole host file system remounted read-only and still
  *readable*; ``/tmp`` (or another free directory) replaced by a private tmpfs of ``disk_mb``;
  ``/var/tmp``, ``/run``, ``/dev/shm``, ``/home``, ``/root``, ``/mnt``, ``/media``, ``/srv`` hidden
  under empty read-only tmpfs unless the Python installation lives there; capabilities dropped;
  tied to the caller by ``setpriv --pdeathsig`` and ``unshare --kill-child``.
* ``"none"`` (last resort): rlimits only; the program runs as the caller's user in a host temporary
  directory, sees the host file system and other processes, and the network is blocked by a
  Python-level patch that ``ctypes`` bypasses. Only for machines where namespaces are impossible.

**Limits** (all modes): ``RLIMIT_CPU``, ``RLIMIT_AS`` (memory per process), ``RLIMIT_FSIZE``
(largest file; stdout, stderr and the results are files, so this caps them), ``RLIMIT_NOFILE``,
``RLIMIT_CORE = 0``, a wall-clock limit after which the parent kills everything, and a process
limit (``max_processes``): ``RLIMIT_NPROC``, which Linux >= 5.14 counts per user namespace (so per
sandbox) for a non-root caller, or, for root (whom ``RLIMIT_NPROC`` does not bind), a per-run
``pids`` cgroup where a writable cgroup hierarchy exists. Cleanup never raises: sandbox
directories are tmpfs that vanish with the namespace; the ``"none"`` mode's host directory is
removed without recursion or long paths (any depth, unreadable entries); per-run cgroups and
directories left by a caller that was killed are swept by the next process that uses the sandbox.

Not defended against: kernel exploits (no seccomp filter is installed); reading of world-readable
files inside the bound directories; total memory of a run beyond ``max_processes x memory_mb``
(there is no memory cgroup); a caller killed in the instant between starting bubblewrap (or
setpriv) and that tool setting its parent-death signal (that run is then not tied to the caller:
it ends at its CPU limit or by itself, and a sleeping program does not); in the fallback modes,
what :func:`isolation_report` lists under ``not_contained``.

Why over 600 lines: the three isolation modes, the per-run cgroups, the cleanup of hostile
directories and the probe that chooses a mode share one run loop (:func:`_execute`) and one set
of claims (:func:`isolation_report`); kept together, the whole boundary between the trainer and
model-written code can be read in one file. The program that runs inside the sandbox is its own
module, :mod:`spro.rewards.sandbox_child`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import marshal
import os
import secrets
import select
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterable, Literal, Sequence

from spro.rewards import count_event, sandbox_child

__all__ = [
    "SandboxLimits",
    "SandboxResult",
    "Unrepresentable",
    "encode_value",
    "decode_value",
    "run_python",
    "run_values",
    "run_calls",
    "run_many",
    "active_isolation",
    "UNSAFE_NONE",
    "isolation_report",
    "sandbox_processes",
    "sweep_stale",
    "ISOLATION_MODES",
]

Status = Literal["ok", "error", "timeout", "memory", "output_limit", "killed", "sandbox_error"]
Isolation = Literal["auto", "bwrap", "namespace", "none"]
ISOLATION_MODES = ("bwrap", "namespace", "none")


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Limits for one sandboxed run."""

    cpu_seconds: float = 5.0
    """CPU time (RLIMIT_CPU, rounded up to whole seconds); the kernel kills the program past it."""
    wall_seconds: float = 10.0
    """Wall-clock time; the parent kills the whole sandbox past it."""
    memory_mb: int = 1024
    """Address space per process (RLIMIT_AS), in MiB."""
    output_bytes: int = 1 << 20
    """Largest file the program may write (RLIMIT_FSIZE); stdout, stderr and the results are files,
    so this also caps each of them. Output at the cap is reported as status ``"output_limit"``."""
    max_processes: int = 32
    """Processes and threads the program may have at once (RLIMIT_NPROC or a pids cgroup)."""
    open_files: int = 64
    """RLIMIT_NOFILE."""
    disk_mb: int = 64
    """Size of the private writable ``/tmp`` (tmpfs) in the ``bwrap`` and ``namespace`` modes."""


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
    isolation: str = "bwrap"
    run_id: str = ""
    """The run's ``SPRO_SANDBOX_RUN`` value (in the program's environment; not a secret)."""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# --------------------------------------------------------------------------------------------
# Value codec and the child program: one real module, spro.rewards.sandbox_child, imported here
# for the codec and run inside the sandbox as `python -I -c <its source> JOB_FD RESULTS_FD` (its
# source is passed on the command line, so that nothing of spro's installation needs to be
# visible inside the sandbox).
# --------------------------------------------------------------------------------------------
Unrepresentable = sandbox_child.Unrepresentable
_NotPlain = sandbox_child._NotPlain
_hashes_ok = sandbox_child._hashes_ok


@functools.lru_cache(maxsize=1)
def _child_source() -> str:
    with open(sandbox_child.__file__, encoding="utf-8") as f:
        return f.read()


def encode_value(v: Any) -> Any:
    """Encode plain data for :func:`run_values` arguments (ValueError if ``v`` is not plain)."""
    try:
        return sandbox_child.encode_value(v)
    except _NotPlain as e:
        raise ValueError(f"not plain data: {e}") from None


def decode_value(o: Any) -> Any:
    """Decode what the sandbox sent; ValueError/TypeError if malformed (never runs program code)."""
    try:
        return sandbox_child.decode_value(o)
    except RecursionError:
        raise ValueError("nested too deeply") from None


# --------------------------------------------------------------------------------------------
# What each mode needs from the host
# --------------------------------------------------------------------------------------------
def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


@functools.lru_cache(maxsize=1)
def _python_paths() -> list[str]:
    """Directories the interpreter needs (prefixes, standard library, site-packages, and other
    ``site-packages``/``dist-packages`` folders on ``sys.path``, which ``.pth`` files of the
    installation may name), outermost first, outside ``/usr`` (bound anyway)."""
    cands = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.dirname(os.path.realpath(sys.executable)))}
    cands |= {p for p in sys.path if os.path.basename(p.rstrip("/")) in ("site-packages", "dist-packages")}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        p = sysconfig.get_paths().get(key)
        if p:
            cands.add(p)
    real = sorted({os.path.realpath(p) for p in cands if p} | {p for p in cands if p})
    out: list[str] = []
    for p in real:
        if not os.path.isdir(p) or p == "/" or _under(p, "/usr") or any(_under(p, q) for q in out):
            continue
        out.append(p)
    return out


_SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_ETC_FILES = ("/etc/ld.so.cache", "/etc/ld.so.conf", "/etc/localtime")
# Directories the namespace fallback hides (sockets, user files, shared scratch space).
_HIDE = ("/var/tmp", "/run", "/dev/shm", "/home", "/root", "/mnt", "/media", "/srv", "/tmp")


def _bwrap_static(disable_userns: bool) -> list[str]:
    a = [shutil.which("bwrap") or "bwrap", "--unshare-user", "--unshare-pid", "--unshare-net",
         "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if disable_userns:
        a.append("--disable-userns")
    a += ["--die-with-parent", "--new-session", "--cap-drop", "ALL", "--uid", "1000", "--gid", "1000",
          "--hostname", "sandbox"]
    return a


@functools.lru_cache(maxsize=1)
def _bwrap_mounts() -> tuple[str, ...]:
    a: list[str] = []
    for top in _SYSTEM_DIRS:
        if os.path.islink(top):
            a += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            a += ["--ro-bind", top, top]
    for f in _ETC_FILES:
        if os.path.exists(f):
            a += ["--ro-bind", f, f]
    for p in _python_paths():
        a += ["--ro-bind", p, p]
    return tuple(a + ["--proc", "/proc", "--dev", "/dev", "--remount-ro", "/dev", "--chdir", "/tmp",
                      "--remount-ro", "/", "--clearenv"])


def _bwrap_argv(limits: SandboxLimits, env: dict[str, str]) -> list[str]:
    p = _probe()
    a = _bwrap_static(p.get("bwrap_disable_userns", True))
    # The tmpfs comes first so that an interpreter living under /tmp is bound on top of it.
    a += ["--size", str(int(limits.disk_mb) << 20), "--tmpfs", "/tmp", *_bwrap_mounts()]
    for k, v in env.items():
        a += ["--setenv", k, v]
    return a + ["--"]


def _python_dirs() -> list[str]:
    """The interpreter's own folders (those of :func:`_python_paths` and the executable's)."""
    need = _python_paths() + [os.path.dirname(os.path.realpath(sys.executable))]
    return [p for p in need if not any(q != p and _under(p, q) for q in need)]


@functools.lru_cache(maxsize=1)
def _namespace_layout() -> tuple[str, list[str], list[str]]:
    """(private working directory, directories to hide, the interpreter's folders under them,
    bound back read-only) for the namespace fallback. Every directory of ``_HIDE`` is hidden,
    also where the interpreter lives under one (a virtualenv under /tmp, pyenv or conda under a
    home directory): only the interpreter's own folders are bound back."""
    free = [d for d in _HIDE if os.path.isdir(d) and not os.path.islink(d)]
    work = next((d for d in ("/tmp", "/var/tmp", "/dev/shm", "/mnt") if d in free), "")
    binds = [p for p in _python_dirs() if any(_under(p, d) for d in free)]
    return work, [d for d in free if d != work], binds


def _namespace_argv() -> list[str]:
    a = ["unshare", "--user", "--map-root-user", "--net", "--pid", "--fork", "--kill-child",
         "--mount", "--mount-proc"]
    if shutil.which("setpriv"):
        a = ["setpriv", "--pdeathsig", "KILL", "--"] + a
    return a


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
        "SPRO_SANDBOX_RUN": marker,  # not a secret: lets the "none" mode find leftover processes
    }


# --------------------------------------------------------------------------------------------
# Process limits for root: a per-run pids cgroup (RLIMIT_NPROC does not bind uid 0)
# --------------------------------------------------------------------------------------------
_CG_PREFIX = "spro-sbx-"


def _pids_cgroup_root() -> str | None:
    """A writable cgroup directory under which per-run ``pids`` cgroups can be made, or None."""
    for root in ("/sys/fs/cgroup/pids", "/sys/fs/cgroup"):
        if not os.path.isdir(root):
            continue
        test = os.path.join(root, f"{_CG_PREFIX}probe-{os.getpid()}-{secrets.token_hex(4)}")
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


def _cgroup_kill(cg: str) -> bool:
    """Kill every process in cgroup ``cg`` and remove it. True if it is gone."""
    for _ in range(200):
        try:
            with open(os.path.join(cg, "cgroup.procs")) as f:
                pids = [int(x) for x in f.read().split()]
        except OSError:
            break
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.005)
    for _ in range(100):
        try:
            os.rmdir(cg)
            return True
        except FileNotFoundError:
            return True
        except OSError:
            time.sleep(0.005)  # the last tasks are still exiting
    return False


def _owner_alive(name: str) -> bool:
    """``spro-sbx-<pid>-...``: is the process that made this entry still running?"""
    parts = name[len(_CG_PREFIX):].split("-")
    if not parts or not parts[0].isdigit():
        return False
    try:
        os.kill(int(parts[0]), 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def sweep_stale() -> list[str]:
    """Remove per-run cgroups and ``"none"``-mode directories whose owner process has died (e.g. a
    trainer killed with ``kill -9``). Returns what was removed. Called once per process."""
    removed = []
    roots = [(tempfile.gettempdir(), False)]
    cg = _PROBE.get("cgroup") if _PROBE else _pids_cgroup_root()
    if cg:
        roots.append((cg, True))
    for root, is_cg in roots:
        try:
            names = [n for n in os.listdir(root) if n.startswith(_CG_PREFIX)]
        except OSError:
            continue
        for n in names:
            if _owner_alive(n):
                continue
            path = os.path.join(root, n)
            if (_cgroup_kill(path) if is_cg else _rmtree(path)):
                removed.append(path)
    return removed


# --------------------------------------------------------------------------------------------
# Cleanup of a host directory the program may have made hostile
# --------------------------------------------------------------------------------------------
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _open_dir(name: str, dir_fd: int | None) -> int:
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
    except PermissionError:
        os.chmod(name, 0o700, dir_fd=dir_fd)
        return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)


def _rmtree(path: str) -> bool:
    """Remove ``path`` whatever the program made of it: any depth (no recursion, and every step
    is relative to one open directory, so no path grows long), directories without permissions
    (made accessible first), any number of entries. Walks back up through ``..`` and checks each
    step against the device/inode recorded on the way down, so a tree moved meanwhile is never
    followed out. True if the tree is gone."""
    try:
        fd = _open_dir(path, None)
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.unlink(path)
            return True
        except OSError:
            return False
    names: list[str] = []
    ids: list[tuple[int, int]] = []
    try:
        while True:
            os.fchmod(fd, 0o700)
            st = os.fstat(fd)
            if not ids or ids[-1] != (st.st_dev, st.st_ino):
                ids.append((st.st_dev, st.st_ino))
            sub = None
            with os.scandir(fd) as it:
                for e in it:
                    try:
                        is_dir = e.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    if is_dir:
                        sub = e.name
                        break
                    try:
                        os.unlink(e.name, dir_fd=fd)
                    except FileNotFoundError:
                        pass
            if sub is not None:
                child = _open_dir(sub, fd)
                os.close(fd)
                fd = child
                names.append(sub)
                continue
            if not names:
                os.close(fd)
                fd = -1
                os.rmdir(path)
                return True
            up = os.open("..", _DIR_FLAGS & ~os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = up
            ids.pop()
            st = os.fstat(fd)
            if (st.st_dev, st.st_ino) != ids[-1]:
                raise OSError("directory tree moved during removal")
            os.rmdir(names.pop(), dir_fd=fd)
    except OSError as e:
        count_event("sandbox/cleanup_failed")
        warnings.warn(f"spro sandbox: could not remove {path}: {e}", RuntimeWarning, stacklevel=2)
        return False
    finally:
        if fd >= 0:
            os.close(fd)


# --------------------------------------------------------------------------------------------
# Isolation probe
# --------------------------------------------------------------------------------------------
_PROBE_LOCK = threading.RLock()  # re-entered by the probe runs themselves
_PROBE: dict[str, Any] = {}
_PROBE_CHECK = (
    "import os, socket\n"
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


def _probe_mode(mode: str) -> str:
    """Run a tiny program in ``mode``; '' if it behaves as isolated, else why not."""
    try:
        res, _ = _execute({"mode": "script", "code": _PROBE_CHECK}, b"", SandboxLimits(wall_seconds=60), mode)
    except OSError as e:  # pragma: no cover - depends on host
        return f"{mode} probe failed: {e}"
    out = res.stdout.split()
    if res.status == "ok" and out == ["NONET", "RO", "CWD-RW"]:
        return ""
    return f"{mode} probe failed: {res.status} {out} {res.stderr.strip()[-300:]}"


def _probe() -> dict[str, Any]:
    """Check once which isolation works here (runs a tiny sandboxed program per mode tried)."""
    with _PROBE_LOCK:
        if _PROBE:
            return _PROBE
        _PROBE.update(cgroup=_pids_cgroup_root() if os.geteuid() == 0 else None,
                      bwrap=False, namespace=False, bwrap_disable_userns=True, reasons={})
        sweep_stale()
        reasons = _PROBE["reasons"]
        if shutil.which("bwrap") is None:
            reasons["bwrap"] = "bubblewrap (bwrap) not installed (Debian/Ubuntu: apt-get install bubblewrap)"
        else:
            _PROBE["bwrap"] = True  # tentatively, for the probe run itself
            why = _probe_mode("bwrap")
            if why and ("disable-userns" in why or "max_user_namespaces" in why):
                _PROBE["bwrap_disable_userns"] = False
                why = _probe_mode("bwrap")
            _PROBE["bwrap"] = not why
            if why:
                reasons["bwrap"] = why
        if shutil.which("unshare") is None:
            reasons["namespace"] = "unshare (util-linux) not found"
        elif not _namespace_layout()[0]:
            reasons["namespace"] = "no directory free for the private working directory"
        else:
            _PROBE["namespace"] = True
            why = _probe_mode("namespace")
            _PROBE["namespace"] = not why
            if why:
                reasons["namespace"] = why
        return _PROBE


_WARNED: set[str] = set()


UNSAFE_NONE = "unsafe-none"
"""The ``isolation`` value that selects the ``"none"`` mode: model-written code then runs as the
caller's user with rlimits only. Never chosen by ``"auto"``; ``"none"`` itself is refused."""


def _warn_weak(mode: str, why: str) -> None:
    if mode not in _WARNED:
        _WARNED.add(mode)
        warnings.warn(f"spro.rewards.sandbox: running model-written code with the weaker {mode!r} isolation "
                      f"({why}); `spro doctor` lists what stays visible, see the README's Security section",
                      RuntimeWarning, stacklevel=4)


def _resolve_isolation(isolation: str) -> str:
    if isolation == "none":
        raise ValueError(f"isolation='none' would run model-written code unsandboxed (as your user, with rlimits "
                         f"only); to accept that, say so explicitly with isolation={UNSAFE_NONE!r}")
    if isolation not in ("auto", "bwrap", "namespace", UNSAFE_NONE):
        raise ValueError(f"isolation must be 'auto', 'bwrap', 'namespace' or {UNSAFE_NONE!r}, got {isolation!r}")
    if isolation == UNSAFE_NONE:
        _warn_weak("none", f"chosen with isolation={UNSAFE_NONE!r}")
        return "none"
    p = _probe()
    if isolation != "auto":
        if not p[isolation]:
            raise RuntimeError(f"{isolation} isolation requested but unavailable: {p['reasons'][isolation]}")
        mode = isolation
    elif p["bwrap"]:
        mode = "bwrap"
    elif p["namespace"]:
        mode = "namespace"
    else:
        why = "; ".join(f"{k}: {v}" for k, v in p["reasons"].items())
        raise RuntimeError(f"no sandbox for model-written code is available here ({why}); install bubblewrap, "
                           f"or accept running it unsandboxed with isolation={UNSAFE_NONE!r}")
    if mode != "bwrap":
        _warn_weak(mode, "; ".join(f"{k}: {v}" for k, v in p["reasons"].items() if k == "bwrap")
                   or "chosen explicitly")
    return mode


def active_isolation(isolation: str = "auto") -> str:
    """The mode that code rewards with this ``isolation`` setting run in here (``"bwrap"``,
    ``"namespace"`` or ``"none"``); raises as they would where none is available. For run
    records and start-of-training warnings (a non-bwrap mode warns once per process)."""
    return _resolve_isolation(isolation)


# Attacks (names as in `spro doctor`) that a mode does not contain, and why.
_NOT_CONTAINED = {
    "namespace": {
        "unix_socket": "sockets in host directories that stay visible (all but the hidden ones) are reachable",
    },
    "none": {
        "read_parent_env": "the program runs as the caller's user and can read /proc/<pid>/environ (and memory) of "
                           "its processes",
        "unix_socket": "only a Python-level socket patch, which ctypes bypasses",
        "loopback_tcp": "only a Python-level socket patch, which ctypes bypasses",
        "write_outside": "the host file system is writable wherever the caller's user may write (the Python "
                         "installation too: a .pth file there runs in every later run)",
        "fill_disk": "no disk quota: only the size of each file is capped",
        "kill_parent": "the program can signal every process of the caller's user (the trainer, the sibling "
                       "programs of its group)",
        "daemon": "a grandchild that leaves its session and environment marker is not found without a pids cgroup",
        "kill9_caller": "grandchildren outlive a killed caller (only the direct child has a parent-death signal)",
    },
}


def isolation_report(isolation: str = "auto") -> dict[str, Any]:
    """What the sandbox enforces on this machine for the given ``isolation`` setting.

    Keys: ``mode`` (``"bwrap"``, ``"namespace"`` or ``"none"``), ``network``, ``filesystem``,
    ``visible`` (the host paths the program can read),
    ``pid_namespace``, ``read_only_fs``, ``private_tmp``, ``capabilities_dropped``, ``fork_limit``
    (how fork bombs are stopped, or that they are not), ``cleanup``, ``rlimits``, ``user`` (the
    caller's uid), ``reason`` (why stronger modes are unavailable) and ``not_contained`` (attack
    name -> why this mode does not stop it; the attacks are those of ``spro doctor``).
    """
    mode = "none" if isolation in ("none", UNSAFE_NONE) else \
        _resolve_isolation(isolation) if isolation != "auto" else _resolve_quiet()
    p = _probe()
    ns = mode != "none"
    uid = os.geteuid()
    not_contained = dict(_NOT_CONTAINED.get(mode, {}))
    if mode == "none" and uid == 0 and p["cgroup"]:
        del not_contained["daemon"]  # the run's pids cgroup finds it
    if uid == 0 and p["cgroup"]:
        fork_limit = f"pids cgroup per run under {p['cgroup']}"
    elif uid != 0:
        fork_limit = ("RLIMIT_NPROC, counted per sandbox (its own user namespace)" if ns
                      else "RLIMIT_NPROC, counted over all of the caller's processes")
    else:
        fork_limit = "none (root ignores RLIMIT_NPROC and no pids cgroup is writable)"
        not_contained["fork_bomb"] = "no process limit for root without a writable pids cgroup"
    if mode == "namespace" and not shutil.which("setpriv"):
        not_contained["kill9_caller"] = "setpriv (util-linux) not found: nothing kills the sandbox with its caller"
    filesystem = {
        "bwrap": "read-only binds of /usr, /lib*, ld.so.cache and the Python installation; private /tmp",
        "namespace": "host file system read-only (still readable); private /tmp; "
                     f"hidden: {', '.join(_namespace_layout()[1]) or 'nothing'}"
                     + (f"; bound back read-only: {', '.join(_namespace_layout()[2])}" if _namespace_layout()[2] else ""),
        "none": "host file system as the caller's user; a host temporary working directory",
    }[mode]
    return {
        "mode": mode,
        "user": uid,
        "network": {"bwrap": "new network namespace (no interfaces)",
                    "namespace": "new network namespace (no interfaces)",
                    "none": "python socket patch (bypassable)"}[mode],
        "filesystem": filesystem,
        "pid_namespace": ns,
        "read_only_fs": ns,
        "private_tmp": ns,
        "capabilities_dropped": ns,
        "fork_limit": fork_limit,
        "cleanup": {"bwrap": "pid namespace dies with bubblewrap; tmpfs",
                    "namespace": "pid namespace dies with unshare; tmpfs",
                    "none": "process group + environment-marker scan; host directory removed"}[mode]
        + (" + pids cgroup" if uid == 0 and p["cgroup"] else ""),
        "rlimits": ["CPU", "AS", "FSIZE", "NPROC", "NOFILE", "CORE"],
        "visible": _visible(mode),
        "reason": "; ".join(f"{k}: {v}" for k, v in p["reasons"].items() if k != mode),
        "not_contained": not_contained,
    }


def _visible(mode: str) -> list[str]:
    """Host paths the program can read in ``mode`` (read-only unless said otherwise)."""
    if mode == "bwrap":
        m = _bwrap_mounts()
        return sorted({m[i + 1] for i, a in enumerate(m) if a == "--ro-bind"})
    if mode == "namespace":
        _, hide, binds = _namespace_layout()
        return ["/ (the whole host file system) except " + ", ".join(hide + ["/tmp"])] + \
            [f"{p} (the interpreter's, bound back)" for p in binds]
    return ["/ (the whole host file system, writable where the caller's user may write)",
            "/proc of every process of the caller's user"]


def _resolve_quiet() -> str:
    p = _probe()
    return "bwrap" if p["bwrap"] else "namespace" if p["namespace"] else "none"


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------
def sandbox_processes(run_id: str = "", token: str = "") -> list[int]:
    """Live processes (zombies excluded, this one too) that carry a sandbox run's environment
    marker, ``SPRO_SANDBOX_RUN=run_id`` (``run_id="*"``: any run), or ``token`` in their command
    line. Only processes this user may inspect are seen."""
    me = os.getpid()
    needle = f"SPRO_SANDBOX_RUN={run_id}".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == me:
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                if f.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                    continue
            hit = False
            if token:
                with open(f"/proc/{name}/cmdline", "rb") as f:
                    hit = token.encode() in f.read()
            if not hit and run_id:
                with open(f"/proc/{name}/environ", "rb") as f:
                    env = f.read().split(b"\0")
                hit = any(e.startswith(b"SPRO_SANDBOX_RUN=") for e in env) if run_id == "*" else needle in env
        except OSError:
            continue
        if hit:
            found.append(int(name))
    return found


def _kill_marked(marker: str) -> None:
    """Kill every process of the run ``marker`` (by its environment marker)."""
    for _ in range(3):
        pids = sandbox_processes(marker)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.02)


def _read_capped(f: Any, cap: int) -> tuple[bytes, bool]:
    try:
        f.seek(0)
        data = f.read(cap + 1)
    except OSError:
        return b"", False
    return data[:cap], len(data) >= cap


def _wait_exit(proc: subprocess.Popen, timeout: float) -> bool:
    """Wait until ``proc`` exits (True) or ``timeout`` seconds pass (False). A pidfd wakes us the
    moment it exits; ``Popen.wait(timeout=)`` polls with sleeps of up to 50 ms, a large share of
    a sandboxed run."""
    try:
        fd = os.pidfd_open(proc.pid)
    except (AttributeError, OSError):  # pragma: no cover - Linux < 5.3
        try:
            proc.wait(timeout=timeout)
            return True
        except subprocess.TimeoutExpired:
            return False
    try:
        return bool(select.select([fd], [], [], timeout)[0])
    finally:
        os.close(fd)


def _killpg(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _status(rc: int, timed_out: bool, wall: float, limits: SandboxLimits, stderr: str, full: bool,
            wrapped: bool) -> Status:
    if (rc == 120 and stderr.startswith("sandbox: ")) or (wrapped and rc == 121) or \
            (rc == 1 and stderr.startswith("bwrap: ")):
        return "sandbox_error"
    if timed_out or rc in (-signal.SIGXCPU, 128 + signal.SIGXCPU, 128 + signal.SIGKILL) and \
            wall >= limits.cpu_seconds:
        return "timeout"
    if full:
        return "output_limit"
    if rc == 0:
        return "ok"
    if "MemoryError" in stderr[-2000:]:
        return "memory"
    if rc < 0 or rc >= 128:
        return "killed"
    return "error"


# Processes of each mode that are not the program but count against its limit: for RLIMIT_NPROC,
# those inside the sandbox's user namespace (bubblewrap's init; unshare and the pid-1 runner);
# for the pids cgroup, also the outer bubblewrap process.
_NPROC_OVERHEAD = {"bwrap": 1, "namespace": 2, "none": 0}
_CGROUP_OVERHEAD = {"bwrap": 2, "namespace": 2, "none": 0}


def _execute(job: dict[str, Any], stdin: bytes, limits: SandboxLimits, iso: str) -> tuple[SandboxResult, bytes]:
    """Run one job; never raises for anything the program does. Returns the result and the raw
    bytes of the results file ("values" mode)."""
    t0 = time.perf_counter()
    marker = secrets.token_hex(8)
    files: list[Any] = []
    base: str | None = None
    cg: str | None = None
    proc: subprocess.Popen | None = None
    if iso != "bwrap":
        count_event(f"sandbox/runs_{iso}")  # the isolation of the run, in the metrics
    try:
        nproc = int(limits.max_processes) + _NPROC_OVERHEAD[iso]
        job = dict(job, limits={
            "cpu": max(1, int(-(-limits.cpu_seconds // 1))),
            "as": int(limits.memory_mb) << 20,
            "fsize": int(limits.output_bytes),
            "nproc": nproc,
            "nofile": int(limits.open_files),
        })
        if iso == "none":
            base = tempfile.mkdtemp(prefix=f"{_CG_PREFIX}{os.getpid()}-")
            job.update(workdir=base, block_socket=True, parent_pid=os.getpid())
        elif iso == "namespace":
            work, hide, binds = _namespace_layout()
            job.update(workdir=work, pid1=True,
                       lockdown={"size": int(limits.disk_mb) << 20, "hide": hide, "binds": binds})
        else:
            job.update(workdir="/tmp")
        env = _base_env(marker, job["workdir"])
        for _ in range(5):
            files.append(tempfile.TemporaryFile())
        jobf, resf, inf, outf, errf = files
        jobf.write(marshal.dumps(job))
        jobf.seek(0)
        inf.write(stdin)
        inf.seek(0)
        cmd = [sys.executable, "-I", "-c", _child_source(), str(jobf.fileno()), str(resf.fileno())]
        popen_env = env
        if iso == "bwrap":
            cmd = _bwrap_argv(limits, env) + cmd
            popen_env = {"PATH": env["PATH"]}
        elif iso == "namespace":
            cmd = _namespace_argv() + cmd
        cgroot = (_PROBE or {}).get("cgroup")
        if cgroot:
            cg = os.path.join(cgroot, f"{_CG_PREFIX}{os.getpid()}-{secrets.token_hex(6)}")
            try:
                os.mkdir(cg)
                with open(os.path.join(cg, "pids.max"), "w") as f:
                    # (the wrapper shell execs, so it is not an extra process)
                    f.write(str(int(limits.max_processes) + _CGROUP_OVERHEAD[iso]))
                cmd = ["/bin/sh", "-c", 'echo $$ > "$0" || exit 121; exec "$@"',
                       os.path.join(cg, "cgroup.procs")] + cmd
            except OSError:
                _cgroup_kill(cg)
                cg = None
        try:
            proc = subprocess.Popen(
                cmd, stdin=inf, stdout=outf, stderr=errf, cwd=base or "/", env=popen_env,
                start_new_session=True, close_fds=True, pass_fds=(jobf.fileno(), resf.fileno()),
            )
        except OSError as e:
            return SandboxResult("sandbox_error", None, "", f"could not start sandbox: {e}",
                                 time.perf_counter() - t0, iso, marker), b""
        timed_out = not _wait_exit(proc, limits.wall_seconds)
        if timed_out:
            _killpg(proc.pid)
        rc = proc.wait()
        wall = time.perf_counter() - t0
        _killpg(proc.pid)
        if iso == "none":
            _kill_marked(marker)
        out, out_full = _read_capped(outf, limits.output_bytes)
        err, err_full = _read_capped(errf, limits.output_bytes)
        results, _ = _read_capped(resf, limits.output_bytes)
        stdout = out.decode("utf-8", errors="replace")
        stderr = err.decode("utf-8", errors="replace")
        status = _status(rc, timed_out, wall, limits, stderr, out_full or err_full, cg is not None)
        return SandboxResult(status, rc, stdout, stderr, wall, iso, marker), results
    except Exception as e:  # a failure of the harness itself: report it, never raise
        count_event("sandbox/harness_error")
        return SandboxResult("sandbox_error", None, "", f"sandbox: {type(e).__name__}: {e}",
                             time.perf_counter() - t0, iso, marker), b""
    finally:
        if proc is not None and proc.poll() is None:
            _killpg(proc.pid)
            proc.wait()
        if cg:
            _cgroup_kill(cg)
        for f in files:
            f.close()
        if base:
            _rmtree(base)


def _parse_results(data: bytes, n: int) -> list[tuple[str, Any]]:
    """Per request: ("ok", value), ("error", message) or ("missing", None). A request answered
    twice counts as an error (the runner never does that)."""
    out: list[tuple[str, Any]] = [("missing", None)] * n
    seen: set[int] = set()
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            item = json.loads(line.decode("utf-8", errors="surrogatepass"))
        except (ValueError, RecursionError):
            continue
        if type(item) is not list or len(item) != 2 or type(item[0]) is not int or not 0 <= item[0] < n:
            continue
        i, enc = item
        if i in seen:
            out[i] = ("error", "answered twice")
            continue
        seen.add(i)
        if type(enc) is dict and len(enc) == 1 and type(enc.get("e")) is str:
            out[i] = ("error", enc["e"][:300])
            continue
        try:
            out[i] = ("ok", decode_value(enc))
        except (ValueError, TypeError, OverflowError, MemoryError) as e:
            out[i] = ("error", f"undecodable result: {e}"[:300])
    return out


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------
def run_python(
    code: str,
    *,
    stdin: str | bytes = "",
    limits: SandboxLimits = SandboxLimits(),
    isolation: Isolation = "auto",
) -> SandboxResult:
    """Run ``code`` as a script (``__name__ == "__main__"``) with ``stdin`` and the limits.

    Never raises for anything the program does; harness failures give status "sandbox_error".
    """
    iso = _resolve_isolation(isolation)
    data = stdin.encode("utf-8", errors="replace") if isinstance(stdin, str) else bytes(stdin)
    return _execute({"mode": "script", "code": code}, data, limits, iso)[0]


def run_values(
    code: str,
    requests: Sequence[dict[str, Any]],
    *,
    limits: SandboxLimits = SandboxLimits(),
    isolation: Isolation = "auto",
) -> tuple[list[tuple[str, Any]], SandboxResult]:
    """Run ``code`` (stdin empty), then evaluate each request on its globals, in order, and return
    their values: ``("ok", value)``, ``("error", message)`` (it raised) or ``("missing", None)``
    (the program ended, crashed or timed out before it).

    Requests (described in :mod:`spro.rewards.sandbox_child`) name the program's functions and
    objects and carry argument values only; never expected values or test code.
    """
    iso = _resolve_isolation(isolation)
    result, raw = _execute({"mode": "values", "code": code, "requests": list(requests)}, b"", limits, iso)
    return _parse_results(raw, len(requests)), result


def run_calls(
    code: str,
    fn_name: str,
    args_list: Sequence[Any],
    *,
    limits: SandboxLimits = SandboxLimits(),
    isolation: Isolation = "auto",
) -> tuple[list[tuple[bool, Any]], SandboxResult]:
    """Run ``code``, then call ``fn_name`` (a function or a ``Solution`` method) on each argument
    list. Returns per call (returned normally, decoded return value: plain data or an
    :class:`Unrepresentable`) and the run's result."""
    reqs = [{"call": fn_name, "args": encode_value(a if isinstance(a, list) else [a])} for a in args_list]
    values, result = run_values(code, reqs, limits=limits, isolation=isolation)
    return [(kind == "ok", v if kind == "ok" else None) for kind, v in values], result


def run_many(
    jobs: Iterable[dict[str, Any]],
    *,
    workers: int = 1,
    limits: SandboxLimits = SandboxLimits(),
    isolation: Isolation = "auto",
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



def __getattr__(name: str):
    if name == "run_asserts":  # judged on the trusted side: it lives with the judge
        raise AttributeError("spro.rewards.sandbox.run_asserts moved to spro.rewards.asserts.run_asserts")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
