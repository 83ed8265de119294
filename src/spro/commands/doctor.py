"""`spro doctor`: which sandbox isolation is active here, what stays visible to the program, and
the attack suite of :mod:`spro.rewards.attacks` run against it."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys

from spro.rewards.attacks import MATH_ATTACKS, SANDBOX_ATTACKS, Outcome, run_attack, run_math_attack

HELP = "Check the code sandbox: active isolation and an attack suite against it."


# ---------------------------------------------------------------------------------- command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--isolation", default="auto", choices=["auto", "bwrap", "namespace", "none", "all"],
                        help="Isolation mode to check (default: auto, the one code rewards use here; "
                             "all: every mode available). The attacks are spro's own programs; code "
                             "rewards run model-written code in 'none' only with isolation='unsafe-none'.")
    parser.add_argument("--attack", action="append", default=[], metavar="NAME",
                        help="Run only this attack (repeatable). Attacks: "
                             + ", ".join(list(SANDBOX_ATTACKS) + list(MATH_ATTACKS)) + ".")
    parser.add_argument("--json", metavar="FILE", help="Also write the outcomes as JSON here.")


def run(args: argparse.Namespace) -> int:
    from spro.rewards import sandbox

    names = args.attack or list(SANDBOX_ATTACKS) + list(MATH_ATTACKS)
    unknown = [n for n in names if n not in SANDBOX_ATTACKS and n not in MATH_ATTACKS]
    if unknown:
        print(f"spro doctor: unknown attack(s) {', '.join(unknown)}; known: "
              f"{', '.join(list(SANDBOX_ATTACKS) + list(MATH_ATTACKS))}", file=sys.stderr)
        return 2
    probe = sandbox._probe()
    if args.isolation == "all":
        modes = [m for m in sandbox.ISOLATION_MODES if m == "none" or probe[m]]
    else:
        try:
            modes = [sandbox.isolation_report(args.isolation)["mode"]]
        except RuntimeError as e:
            print(f"spro doctor: {e}", file=sys.stderr)
            return 2
    auto = sandbox.isolation_report("auto")
    print(f"spro doctor: code sandbox check (uid {os.geteuid()}, {os.cpu_count()} CPUs)")
    if auto["mode"] == "none":
        print("isolation used by code rewards here (auto): none available -- code rewards refuse to run "
              "model-written code unless given isolation='unsafe-none'")
    else:
        print(f"isolation used by code rewards here (auto): {auto['mode']}")
    for m in sandbox.ISOLATION_MODES:
        state = "available" if m == "none" or probe[m] else "unavailable: " + probe["reasons"].get(m, "")
        print(f"  {m:10s} {state}")
    outcomes: list[Outcome] = []
    for mode in modes:
        rep = sandbox.isolation_report(mode)
        print(f"\n[{mode}] network: {rep['network']}; files: {rep['filesystem']}")
        print(f"[{mode}] processes: {rep['fork_limit']}; cleanup: {rep['cleanup']}")
        print(f"[{mode}] visible to the program: " + "; ".join(rep["visible"]))
        print(f"{'attack':22s} {'contained':11s} {'time':>6s}  detail")
        for name in names:
            if name not in SANDBOX_ATTACKS:
                continue
            o = run_attack(name, mode)
            outcomes.append(o)
            _print(o)
    maths = [n for n in names if n in MATH_ATTACKS]
    if maths:
        print("\n[math grading] time limit and text cap, in a worker process")
        print(f"{'attack':22s} {'contained':11s} {'time':>6s}  detail")
        for name in maths:
            o = run_math_attack(name)
            outcomes.append(o)
            _print(o)
    bad = [o for o in outcomes if o.contained is not True]
    print()
    if bad:
        print(f"{len(bad)} of {len(outcomes)} attacks not contained: "
              + ", ".join(f"{o.attack} ({o.mode})" for o in bad))
    else:
        print(f"all {len(outcomes)} attacks contained")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"uid": os.geteuid(), "auto": auto["mode"],
                       "outcomes": [dataclasses.asdict(o) for o in outcomes]}, f, indent=2)
    return 1 if bad else 0


def _print(o: Outcome) -> None:
    word = {True: "yes", False: "NO", None: "no (n/a)"}[o.contained]
    print(f"{o.attack:22s} {word:11s} {o.seconds:5.1f}s  {o.detail}", flush=True)
