"""Behaviour-preservation check, run by hand around a refactor: fixed-seed runs of every built-in
algorithm, then their metrics compared field by field with those of another source tree.

    python benchmarks/fixed_seed.py run  --out /tmp/after                       # this checkout
    python benchmarks/fixed_seed.py run  --out /tmp/before --src /path/to/old/checkout
    python benchmarks/fixed_seed.py diff /tmp/before /tmp/after

``run`` trains grpo, dr_grpo, rloo, spro and prime for ``--steps`` (20) steps on ``--preset
tiny-arithmetic`` with seed 0 (one torch thread each, evaluation every 10 steps) from the sources of
``--src`` (default: this checkout). ``diff`` compares ``metrics.jsonl`` and ``eval.jsonl`` row by row,
ignoring what depends on the machine's speed or memory (time, throughput, peak memory), prints one
line per file and exits 1 on any difference. Runs are deterministic on one machine, so a refactor
that means to change nothing must print "identical" everywhere.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path

ALGORITHMS = ("grpo", "dr_grpo", "rloo", "spro", "prime")
MACHINE_DEPENDENT = ("time", "perf/", "memory/")  # key prefixes left out of the comparison


def run(out: Path, src: Path, steps: int, preset: str) -> int:
    env = {**os.environ, "PYTHONPATH": str(src / "src"), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    failed = 0
    for algo in ALGORITHMS:
        folder = out / f"run_{algo}"
        if folder.exists():
            print(f"{algo}: {folder} exists; give another --out", file=sys.stderr)
            return 2
        cmd = [sys.executable, "-m", "spro", "train", "--preset", preset, f"algorithm.name={algo}", "seed=0",
               f"total_steps={steps}", "eval_every=10", "save_every=0", f"output_dir={folder}",
               "logging.tensorboard=false", "logging.progress_bar=false"]
        out.mkdir(parents=True, exist_ok=True)
        with open(out / f"{algo}.log", "w") as log:
            rc = subprocess.call(cmd, cwd=src, env=env, stdout=log, stderr=subprocess.STDOUT)
        print(f"{algo}: exit {rc} ({out / f'{algo}.log'})")
        failed += rc != 0
    return 1 if failed else 0


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _same(a, b) -> bool:
    return a == b or (isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b))


def diff(a: Path, b: Path) -> int:
    bad = 0
    for algo in ALGORITHMS:
        for name in ("metrics.jsonl", "eval.jsonl"):
            pa, pb = a / f"run_{algo}" / name, b / f"run_{algo}" / name
            if not (pa.is_file() and pb.is_file()):
                print(f"{algo:8s} {name:14s} missing: {pa if not pa.is_file() else pb}")
                bad += 1
                continue
            ra, rb = _rows(pa), _rows(pb)
            keys = set()
            for x, y in zip(ra, rb):
                for k in set(x) | set(y):
                    if not k.startswith(MACHINE_DEPENDENT) and (k not in x or k not in y or not _same(x[k], y[k])):
                        keys.add(k)
            same = not keys and len(ra) == len(rb)
            print(f"{algo:8s} {name:14s} rows {len(ra)}/{len(rb)} "
                  f"{'identical' if same else 'DIFFERENT: ' + ', '.join(sorted(keys)[:12])}")
            bad += not same
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="fixed-seed runs of every algorithm")
    r.add_argument("--out", type=Path, required=True)
    r.add_argument("--src", type=Path, default=Path(__file__).resolve().parents[1], help="a checkout of spro")
    r.add_argument("--steps", type=int, default=20)
    r.add_argument("--preset", default="tiny-arithmetic")
    d = sub.add_parser("diff", help="compare two `run` folders")
    d.add_argument("a", type=Path)
    d.add_argument("b", type=Path)
    args = p.parse_args()
    if args.cmd == "run":
        return run(args.out.resolve(), args.src.resolve(), args.steps, args.preset)
    return diff(args.a, args.b)


if __name__ == "__main__":
    sys.exit(main())
