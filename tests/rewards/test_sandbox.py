"""The code sandbox against hostile programs.

Each hostile program prints PWNED only if its attack worked. Through the code reward each is
a stdin/stdout test case whose expected output is PWNED, so a contained attack is a failed case
(reward 0.0). After every run no process carrying a sandbox marker may be left, and no pids
cgroup of ours may remain.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time

import pytest

from spro.rewards import sandbox
from spro.rewards.code import make_code_reward
from spro.rewards.sandbox import SandboxLimits, isolation_report, run_asserts, run_python

FAST = SandboxLimits(cpu_seconds=1, wall_seconds=2, memory_mb=512, output_bytes=64 * 1024, max_processes=16)
# Ordinary programs get a generous wall limit: the machine may be busy.
NORMAL = SandboxLimits(cpu_seconds=5, wall_seconds=30, memory_mb=512, output_bytes=64 * 1024, max_processes=16)
SECRET = "spro-test-secret-7f3a9c"

MODES = ["namespace", "none"]


def _available(mode: str) -> bool:
    return isolation_report("auto")["mode"] == "namespace" or mode == "none"


def _sandbox_processes() -> list[int]:
    """Pids of live processes whose environment holds a sandbox marker (zombies ignored)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                env = f.read()
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if b"SPRO_SANDBOX_RUN=" in env and state != "Z":
            found.append(int(pid))
    return found


def _leftover_cgroups() -> list[str]:
    root = sandbox._probe()["cgroup"]
    if not root:
        return []
    return [d for d in os.listdir(root) if d.startswith("spro-sbx-")]


@pytest.fixture(autouse=True)
def no_leftovers():
    yield
    deadline = time.time() + 2.0
    left = _sandbox_processes()
    while left and time.time() < deadline:  # a killed process may take a moment to be reaped
        time.sleep(0.05)
        left = _sandbox_processes()
    assert left == [], f"sandbox processes left behind: {left}"
    assert _leftover_cgroups() == []


@pytest.fixture
def secret_env(monkeypatch):
    monkeypatch.setenv("SPRO_PARENT_SECRET", SECRET)


class _Listener:
    """A TCP server on 127.0.0.1 in the parent that records any connection."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(5)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self._stop = False
        self.t = threading.Thread(target=self._loop, daemon=True)
        self.t.start()

    def _loop(self):
        while not self._stop:
            try:
                c, _ = self.sock.accept()
                self.connections += 1
                c.close()
            except OSError:
                pass

    def close(self):
        self._stop = True
        self.t.join()
        self.sock.close()


def hostile_programs(tmp_path, port: int) -> dict[str, str]:
    outside = tmp_path / "outside.txt"
    return {
        "infinite_loop": "while True:\n    pass\nprint('PWNED')\n",
        "fork_bomb": (
            "import os, time\n"
            "n = 0\n"
            "while True:\n"
            "    try:\n"
            "        os.fork(); n += 1\n"
            "    except OSError:\n"
            "        time.sleep(0.01)\n"
        ),
        "memory_hog": "x = [bytearray(2 * 1024 ** 3)]\nprint('PWNED')\n",
        "huge_output": "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n",
        "write_outside": (
            f"open({str(outside)!r}, 'w').write('owned')\n"
            "open('/tmp/spro-sandbox-escape', 'w').write('owned')\n"
            "print('PWNED')\n"
        ),
        "read_parent_env": (
            "import os\n"
            f"s = {SECRET!r}\n"
            "hit = s in str(os.environ)\n"
            "for p in os.listdir('/proc'):\n"
            "    try:\n"
            "        hit = hit or s.encode() in open('/proc/%s/environ' % p, 'rb').read()\n"
            "    except Exception:\n"
            "        pass\n"
            "print('PWNED' if hit else 'safe')\n"
        ),
        "network": (
            "import socket\n"
            f"socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
            "print('PWNED')\n"
        ),
        "kill_parent": (
            "import os, signal\n"
            f"os.kill({os.getpid()}, signal.SIGKILL)\n"
            "os.kill(os.getppid(), signal.SIGKILL)\n"
            "print('PWNED')\n"
        ),
        "orphan_daemon": (
            "import os, time\n"
            "if os.fork() == 0:\n"
            "    os.setsid()\n"
            "    if os.fork() == 0:\n"
            "        time.sleep(60)\n"
            "        os._exit(0)\n"
            "    os._exit(0)\n"
            "print('started')\n"
        ),
    }


# Attacks the fallback mode ("none") does not claim to stop (see spro.rewards.sandbox's docstring).
NOT_IN_FALLBACK = {"write_outside", "kill_parent"}


def _cases(mode):
    names = ["infinite_loop", "fork_bomb", "memory_hog", "huge_output", "write_outside",
             "read_parent_env", "network", "kill_parent", "orphan_daemon"]
    return [(mode, n) for n in names]


@pytest.mark.parametrize("mode,name", _cases("namespace") + [c for c in _cases("none") if c[1] not in NOT_IN_FALLBACK])
def test_hostile_program_is_contained(mode, name, tmp_path, secret_env):
    if not _available(mode):
        pytest.skip(f"{mode} isolation unavailable: {isolation_report()['reason']}")
    if name == "fork_bomb" and "none beyond" in isolation_report(mode)["fork_limit"]:
        pytest.skip("no fork limit on this machine (root without a writable pids cgroup)")
    listener = _Listener()
    try:
        code = hostile_programs(tmp_path, listener.port)[name]
        t0 = time.perf_counter()
        res = run_python(code, limits=FAST, isolation=mode)
        elapsed = time.perf_counter() - t0
        assert "PWNED" not in res.stdout
        assert elapsed < FAST.wall_seconds + 5  # the wall limit held
        if mode == "namespace":  # (once per attack: the reward path is the same in both modes)
            # Through the reward: a test case expecting the attack's success fails.
            reward = make_code_reward(limits=FAST, isolation=mode, workers=1)
            tests = json.dumps({"inputs": [""], "outputs": ["PWNED"]})
            assert reward(["p"], [f"```python\n{code}```"], tests=[tests]) == [0.0]
        assert listener.connections == 0
    finally:
        listener.close()
    expected_status = {
        "infinite_loop": {"timeout"},
        "memory_hog": {"memory", "killed"},
        "huge_output": {"output_limit"},
        "network": {"error"},
        "write_outside": {"error"},
        "fork_bomb": {"timeout"},
    }
    if name in expected_status:
        assert res.status in expected_status[name], (res.status, res.stderr[-500:])
    if name == "huge_output":
        assert len(res.stdout) <= FAST.output_bytes
    if name == "write_outside":
        assert not (tmp_path / "outside.txt").exists()
        assert not os.path.exists("/tmp/spro-sandbox-escape")
    if name == "read_parent_env":
        assert "safe" in res.stdout


def test_isolation_report_is_honest():
    rep = isolation_report("auto")
    assert rep["mode"] in ("namespace", "none")
    if rep["mode"] == "namespace":
        # Check the claims directly.
        res = run_python(
            "import os\nprint(os.getpid())\nprint(sorted(os.listdir('/proc'))[:0])\n"
            "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n",
            limits=NORMAL,
        )
        pid, _, cap_eff = res.stdout.split("\n")[:3]
        assert int(pid) <= 3 and int(cap_eff, 16) == 0
    none = isolation_report("none")
    assert none["network"].startswith("python socket patch")


@pytest.mark.parametrize("mode", MODES)
def test_ordinary_program_runs(mode):
    if not _available(mode):
        pytest.skip("namespace isolation unavailable")
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
    assert res.stdout.startswith("42 ok ")
    env_keys = eval(res.stdout.split(" ", 2)[2])
    assert "SPRO_PARENT_SECRET" not in env_keys and set(env_keys) <= {
        "PATH", "LANG", "LC_ALL", "HOME", "TMPDIR", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
        "MKL_NUM_THREADS", "SPRO_SANDBOX_RUN"}


def test_statuses_and_working_dir_removed():
    res = run_python("import os\nprint(os.getcwd())\nraise SystemExit(3)", limits=NORMAL)
    assert res.status == "error" and res.returncode == 3
    assert not os.path.exists(os.path.dirname(res.stdout.strip()))
    res = run_python("raise ValueError('boom')", limits=NORMAL)
    assert res.status == "error" and "ValueError: boom" in res.stderr


def test_asserts_are_per_test_and_unforgeable_by_printing():
    code = "def f(x):\n    return x * 2\nprint('0 PASS')\nprint('1 PASS')\n"
    passed, res = run_asserts(code, ["assert f(2) == 4", "assert f(3) == 7", "assert f(0) == 0"], limits=NORMAL)
    assert passed == [True, False, True]
    # The harness's result channel is not reachable through the __main__ module.
    probe = ("import sys\nm = vars(sys.modules['__main__'])\n"
             "assert not any(k in m for k in ('nonce', '_emit', 'cfg', 'tests'))\nok = True\n")
    passed, _ = run_asserts(probe, ["assert ok"], limits=NORMAL)
    assert passed == [True]
    # A program that exits before the tests passes none of them.
    passed, _ = run_asserts("import os\nos._exit(0)\ndef f(x): return 1", ["assert f(1) == 1"], limits=NORMAL)
    assert passed == [False]


def test_parallel_runs_keep_order():
    jobs = [{"code": "print(int(input()) ** 2)", "stdin": f"{i}\n"} for i in range(6)]
    res = sandbox.run_many(jobs, workers=3, limits=NORMAL)
    assert [r.stdout.strip() for r in res] == [str(i * i) for i in range(6)]
