"""Reward throughput, serial vs parallel, in one run (by hand: not part of the tests).

    .venv/bin/python benchmarks/rewards.py [--math-n 300] [--sandbox-n 40] [--workers 2] [--json out.json]

* math: math-verify grading of distinct (completion, gold) pairs: in-process in the main
  thread (SIGALRM time limit) vs a pool of ``--workers`` grading processes;
* sandbox: runs of a small stdin/stdout program per second, one at a time vs ``--workers``
  at a time, for each isolation mode available here.

Timings depend on how busy the machine is; the script prints the CPU count it saw.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time
import warnings


def math_pairs(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    comps, golds = [], []
    for i in range(n):
        a, b = rng.randint(1, 999), rng.randint(2, 999)
        kind = i % 4
        if kind == 0:
            comps.append(f"So the value is \\boxed{{\\frac{{{a}}}{{{b}}}}}.")
            golds.append(f"{a}/{b}")
        elif kind == 1:
            comps.append(f"Work...\n#### {a * b}")
            golds.append(str(a * b + (i % 3 == 0)))
        elif kind == 2:
            comps.append(f"The answer is $\\sqrt{{{a * a * b}}}$.")
            golds.append(f"{a}\\sqrt{{{b}}}")
        else:
            comps.append(f"\\boxed{{x^2 + {a}x + {b}}}")
            golds.append(f"x^{{2}}+{a}x+{b}")
    return comps, golds


def bench_math(n: int, workers: int) -> dict:
    from spro.rewards.math import MathGrader

    comps, golds = math_pairs(n)
    res: dict = {"pairs": n}
    g0 = MathGrader(timeout=5.0, workers=0)
    g0.warm()  # imports + first sympy use
    t = time.perf_counter()
    serial = g0.grade(comps, golds)
    res["serial_s"] = time.perf_counter() - t
    with MathGrader(timeout=5.0, workers=workers) as gp:
        gp.warm()  # start every worker
        t = time.perf_counter()
        par = gp.grade(comps, golds)
        res["parallel_s"] = time.perf_counter() - t
    assert par == serial, "parallel grading disagrees with serial grading"
    res["correct_frac"] = sum(bool(x) for x in serial) / n
    res["serial_per_s"] = n / res["serial_s"]
    res["parallel_per_s"] = n / res["parallel_s"]
    return res


def bench_sandbox(n: int, workers: int) -> dict:
    from spro.rewards import sandbox
    from spro.rewards.sandbox import SandboxLimits

    code = "import sys\nnums = list(map(int, sys.stdin.read().split()))\nprint(sum(nums))\n"
    jobs = [{"code": code, "stdin": " ".join(str(j) for j in range(i + 1))} for i in range(n)]
    limits = SandboxLimits(cpu_seconds=5, wall_seconds=60)
    out: dict = {}
    modes = ["namespace", "none"] if sandbox.isolation_report("auto")["mode"] == "namespace" else ["none"]
    for mode in modes:
        sandbox.run_python("print(1)", isolation=mode, limits=limits)  # warm caches
        r: dict = {"runs": n}
        for label, w in (("serial", 1), ("parallel", workers)):
            t = time.perf_counter()
            res = sandbox.run_many(jobs, workers=w, limits=limits, isolation=mode)
            dt = time.perf_counter() - t
            ok = [x.stdout.strip() == str(sum(range(i + 1))) for i, x in enumerate(res)]
            assert all(ok), [x.stderr for x in res if x.status != "ok"][:2]
            r[f"{label}_s"] = dt
            r[f"{label}_per_s"] = n / dt
        out[mode] = r
    return out


def _burn(n: int) -> int:
    s = 0
    for i in range(n):
        s += i * i
    return s


def bench_reference(workers: int, n: int = 3_000_000) -> dict:
    """Pure-Python CPU work, serial vs ``workers`` processes: the best speed-up this machine
    offers right now (other jobs on a shared machine cap it)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    t = time.perf_counter()
    for _ in range(workers):
        _burn(n)
    serial = time.perf_counter() - t
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as ex:
        list(ex.map(_burn, [10] * workers))
        t = time.perf_counter()
        list(ex.map(_burn, [n] * workers))
        par = time.perf_counter() - t
    return {"serial_s": serial, "parallel_s": par, "speedup": serial / par}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--math-n", type=int, default=300)
    ap.add_argument("--sandbox-n", type=int, default=40)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from spro.rewards.sandbox import isolation_report

    result = {
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "workers": args.workers,
        "isolation": isolation_report("auto"),
        "reference": bench_reference(args.workers),
        "math": bench_math(args.math_n, args.workers),
        "sandbox": bench_sandbox(args.sandbox_n, args.workers),
    }
    m = result["math"]
    print(f"machine: {result['cpus']} CPUs, 1-min load average {result['load_avg_1m']:.2f}, workers={args.workers}")
    print(f"sandbox isolation: {result['isolation']['mode']} (fork limit: {result['isolation']['fork_limit']})")
    print(f"reference: pure-Python CPU work in {args.workers} processes runs "
          f"{result['reference']['speedup']:.2f}x faster than serially on this machine right now")
    print(f"{'benchmark':38s} {'serial /s':>10s} {'parallel /s':>12s} {'speed-up':>9s}")
    print(f"{'math-verify grading (' + str(m['pairs']) + ' pairs)':38s} {m['serial_per_s']:10.1f} "
          f"{m['parallel_per_s']:12.1f} {m['parallel_per_s'] / m['serial_per_s']:8.2f}x")
    for mode, r in result["sandbox"].items():
        print(f"{'sandbox runs, ' + mode + ' (' + str(r['runs']) + ' runs)':38s} {r['serial_per_s']:10.1f} "
              f"{r['parallel_per_s']:12.1f} {r['parallel_per_s'] / r['serial_per_s']:8.2f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
