"""Reward throughput, in one run (by hand: not part of the tests).

    .venv/bin/python benchmarks/rewards.py [--math-n 300] [--code-n 40] [--workers 2]
        [--compare OTHER/src --reps 5] [--json out.json]

* math: math-verify grading of distinct (completion, gold) pairs: in-process in the main
  thread (SIGALRM time limit) vs a pool of ``--workers`` grading processes;
* code: sandboxed programs per second through the code reward (``make_code_reward``, default
  isolation, ``--workers`` rows at a time), for assert-style rows (one program run per row, three
  asserts) and stdin/stdout rows (one run per row); and the time of a batch of all-hanging
  stdin/stdout rows (``--hang-n`` rows of 5 cases whose program never ends, limits of 1 s CPU and
  2 s wall per run) against a batch of correct rows of the same shape. Each measurement runs in a
  fresh interpreter. With ``--compare SRC`` (the ``src`` folder of another checkout, e.g. a
  ``git worktree`` of an older commit) the same measurements of that code are interleaved with
  this code's, ``--reps`` times, alternating which goes first, so that load from other jobs
  falls on both alike; medians and the ratio (this / other) are printed.

Timings depend on how busy the machine is; the script prints the CPU count and load it saw.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
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


# Runs in a fresh interpreter with PYTHONPATH set to the code under test; only the public API
# that every version has (make_code_reward, SandboxLimits) is used.
CODE_BENCH = r"""
import json, sys, time, warnings
warnings.simplefilter("ignore")
from spro.rewards.code import make_code_reward
from spro.rewards.sandbox import SandboxLimits, isolation_report
n, workers, kind = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
if kind in ("hang", "stdio5"):
    fn = make_code_reward(limits=SandboxLimits(cpu_seconds=1, wall_seconds=2), workers=workers)
else:
    fn = make_code_reward(limits=SandboxLimits(cpu_seconds=5, wall_seconds=60), workers=workers)
if kind in ("hang", "stdio5"):
    prog = "while True:\n    pass" if kind == "hang" else "a, b = map(int, input().split())\nprint(a + b)"
    comps = ["```python\n%s\n```" % prog] * n
    tests = [json.dumps({"inputs": ["%d 1\n" % (i + k) for k in range(5)],
                         "outputs": ["%d\n" % (i + k + 1) for k in range(5)]}) for i in range(n)]
    expect = 0.0 if kind == "hang" else 1.0
elif kind == "asserts":
    comps = ["```python\ndef add(a, b):\n    return a + b\n```"] * n
    tests = [["assert add(%d, 1) == %d" % (i, i + 1), "assert add(-1, 1) == 0", "assert add(2, 2) == 5"]
             for i in range(n)]
    expect = 2 / 3
else:
    comps = ["```python\na, b = map(int, input().split())\nprint(a + b)\n```"] * n
    tests = [json.dumps({"inputs": ["%d 1\n" % i], "outputs": ["%d\n" % (i + 1)]}) for i in range(n)]
    expect = 1.0
fn(["p"], comps[:1], tests=tests[:1])  # the isolation probe and first start are not timed
t = time.perf_counter()
out = fn(["p"] * n, comps, tests=tests)
dt = time.perf_counter() - t
assert all(abs(x - expect) < 1e-9 for x in out), out[:3]
print(json.dumps({"programs_per_s": n / dt, "seconds": dt, "isolation": isolation_report("auto")["mode"]}))
"""


def _code_once(src: str, kind: str, n: int, workers: int) -> dict:
    env = dict(os.environ, PYTHONPATH=src, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", CODE_BENCH, str(n), str(workers), kind], env=env,
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"code benchmark failed for {src} ({kind}): {out.stderr[-1000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def bench_hang(n: int, workers: int, compare: str | None) -> dict:
    """Seconds for ``n`` all-hanging stdio rows (5 cases each) and for ``n`` correct ones."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    sides = {"this": here} if not compare else {"this": here, "other": os.path.abspath(compare)}
    out: dict = {"rows": n, "src": sides, "seconds": {}}
    for side, src in sides.items():
        ok = _code_once(src, "stdio5", n, workers)["seconds"]
        hang = _code_once(src, "hang", n, workers)["seconds"]
        out["seconds"][side] = {"correct": ok, "hanging": hang, "hanging_over_correct": hang / ok}
    return out


def bench_code(n: int, workers: int, compare: str | None, reps: int) -> dict:
    """Programs per second through the code reward; with ``compare``, interleaved with that code."""
    here = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "src")
    sides = {"this": here} if not compare else {"this": here, "other": os.path.abspath(compare)}
    runs: dict = {side: {"asserts": [], "stdio": []} for side in sides}
    isolation = {}
    for r in range(reps if compare else 1):
        order = list(sides) if r % 2 == 0 else list(reversed(list(sides)))
        for side in order:
            for kind in ("asserts", "stdio"):
                res = _code_once(sides[side], kind, n, workers)
                runs[side][kind].append(res["programs_per_s"])
                isolation[side] = res["isolation"]
    out: dict = {"programs": n, "workers": workers, "reps": reps if compare else 1, "src": sides,
                 "isolation": isolation, "runs": runs}
    out["median"] = {side: {k: statistics.median(v) for k, v in kinds.items()} for side, kinds in runs.items()}
    if compare:
        out["ratio"] = {k: out["median"]["this"][k] / out["median"]["other"][k] for k in ("asserts", "stdio")}
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
    ap.add_argument("--math-n", type=int, default=300, help="math pairs (0: skip the math benchmark)")
    ap.add_argument("--code-n", type=int, default=40, help="programs per code measurement (0: skip)")
    ap.add_argument("--hang-n", type=int, default=8, help="rows per hanging/correct batch (0: skip)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--compare", metavar="SRC", default=None,
                    help="the src folder of another checkout to measure the code reward against")
    ap.add_argument("--reps", type=int, default=5, help="interleaved repetitions with --compare")
    ap.add_argument("--json", default=None, help="also write the results here")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    from spro.rewards.sandbox import isolation_report

    result: dict = {
        "cpus": os.cpu_count(),
        "load_avg_1m_start": os.getloadavg()[0],
        "workers": args.workers,
        "isolation": isolation_report("auto"),
        "reference": bench_reference(args.workers),
    }
    if args.math_n:
        result["math"] = bench_math(args.math_n, args.workers)
    if args.code_n:
        result["code"] = bench_code(args.code_n, args.workers, args.compare, args.reps)
    if args.hang_n:
        result["hang"] = bench_hang(args.hang_n, args.workers, args.compare)
    result["load_avg_1m_end"] = os.getloadavg()[0]
    print(f"machine: {result['cpus']} CPUs, 1-min load average {result['load_avg_1m_start']:.2f} at the start, "
          f"{result['load_avg_1m_end']:.2f} at the end, workers={args.workers}")
    print(f"sandbox isolation: {result['isolation']['mode']} (fork limit: {result['isolation']['fork_limit']})")
    print(f"reference: pure-Python CPU work in {args.workers} processes runs "
          f"{result['reference']['speedup']:.2f}x faster than serially on this machine right now")
    if "math" in result:
        m = result["math"]
        print(f"{'benchmark':38s} {'serial /s':>10s} {'parallel /s':>12s} {'speed-up':>9s}")
        print(f"{'math-verify grading (' + str(m['pairs']) + ' pairs)':38s} {m['serial_per_s']:10.1f} "
              f"{m['parallel_per_s']:12.1f} {m['parallel_per_s'] / m['serial_per_s']:8.2f}x")
    if "code" in result:
        c = result["code"]
        print(f"code reward, programs/s ({c['programs']} programs per measurement, {c['workers']} rows at a time, "
              f"median of {c['reps']}):")
        for side, src in c["src"].items():
            med = c["median"][side]
            print(f"  {side:5s} {src} [{c['isolation'][side]}]: assert-style {med['asserts']:.1f}/s, "
                  f"stdio {med['stdio']:.1f}/s")
            print(f"        runs: asserts {', '.join(f'{x:.1f}' for x in c['runs'][side]['asserts'])}; "
                  f"stdio {', '.join(f'{x:.1f}' for x in c['runs'][side]['stdio'])}")
        if "ratio" in c:
            print(f"  ratio this/other: assert-style {c['ratio']['asserts']:.2f}x, stdio {c['ratio']['stdio']:.2f}x")
    if "hang" in result:
        h = result["hang"]
        print(f"all-hanging batch vs correct batch ({h['rows']} stdio rows of 5 cases, 1 s CPU / 2 s wall per run):")
        for side, sec in h["seconds"].items():
            print(f"  {side:5s} correct {sec['correct']:.1f} s, all hanging {sec['hanging']:.1f} s "
                  f"({sec['hanging_over_correct']:.1f}x the correct batch)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
