"""Hostile programs against the code sandbox and code reward: one test per attack and isolation
mode (the attacks are those of `spro doctor`, in spro.rewards.attacks, where each is documented).

Every attack is judged by evidence outside the sandbox (the reward, host files, connections to
listeners started here, processes left running, time). An attack that a fallback mode does not
claim to contain (``isolation_report(mode)["not_contained"]``) is skipped without being run, and
listed with the reason at the end of the session. Every test also checks that no sandbox
process and no per-run cgroup outlives it.
"""

from __future__ import annotations

import pytest

from conftest import SKIPPED_ATTACKS
from spro.rewards import attacks
from spro.rewards import sandbox
from spro.rewards.sandbox import isolation_report

MODES = ["bwrap", "namespace", "none"]


@pytest.mark.parametrize("name", list(attacks.SANDBOX_ATTACKS))
@pytest.mark.parametrize("mode", MODES)
def test_attack_is_contained(mode, name):
    p = sandbox._probe()
    if mode != "none" and not p[mode]:
        line = f"every attack [{mode}]: isolation unavailable here: {p['reasons'][mode]}"
        if line not in SKIPPED_ATTACKS:
            SKIPPED_ATTACKS.append(line)
        pytest.skip(line)
    why = isolation_report(mode)["not_contained"].get(name)
    if why:
        SKIPPED_ATTACKS.append(f"{name} [{mode}]: {why}")
        pytest.skip(f"not contained by {mode}: {why}")
    outcome = attacks.run_attack(name, mode)
    assert outcome.contained is True, outcome.detail
    assert outcome.seconds < 60


@pytest.mark.parametrize("name", list(attacks.MATH_ATTACKS))
def test_math_attack_costs_at_most_the_time_limit(name):
    outcome = attacks.run_math_attack(name)
    assert outcome.contained is True, outcome.detail


def test_doctor_prints_a_table_and_exit_status(capsys):
    from spro.cli import main

    rc = main(["doctor", "--attack", "loopback_tcp", "--attack", "math_dollar_dots"])
    out = capsys.readouterr().out
    assert "isolation used by code rewards here (auto):" in out and "visible to the program:" in out
    assert "loopback_tcp" in out and "math_dollar_dots" in out
    if isolation_report("auto")["mode"] == "none":  # no sandbox on this machine: doctor says so
        assert rc == 1 and "1 of 2 attacks not contained: loopback_tcp (none)" in out
    else:
        assert rc == 0 and "all 2 attacks contained" in out
    assert main(["doctor", "--attack", "nope"]) == 2
