"""Shared checks for the sandbox tests: no sandbox process or per-run cgroup may outlive a test,
and the session summary says which attacks a fallback isolation mode does not contain (and why),
so that skipped cases are visible even with ``-q``."""

from __future__ import annotations

import os
import time

import pytest

SKIPPED_ATTACKS: list[str] = []


def sandbox_processes() -> list[int]:
    from spro.rewards.sandbox import sandbox_processes as find

    return find("*")


def leftover_cgroups() -> list[str]:
    from spro.rewards import sandbox

    root = sandbox._probe()["cgroup"]
    if not root:
        return []
    return [d for d in os.listdir(root) if d.startswith(f"spro-sbx-{os.getpid()}-")]


@pytest.fixture(autouse=True)
def no_leftovers():
    before = set(sandbox_processes())  # e.g. another program's sandboxes running meanwhile
    yield
    deadline = time.time() + 3.0
    left = set(sandbox_processes()) - before
    while left and time.time() < deadline:  # a killed process may take a moment to be reaped
        time.sleep(0.05)
        left = set(sandbox_processes()) - before
    assert not left, f"sandbox processes left behind: {sorted(left)}"
    assert leftover_cgroups() == []


def pytest_terminal_summary(terminalreporter):
    if SKIPPED_ATTACKS:
        terminalreporter.write_sep("-", "sandbox attacks not run: not contained by a fallback mode, or mode unavailable")
        for line in SKIPPED_ATTACKS:
            terminalreporter.write_line(line)
