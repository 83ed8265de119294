"""`spro compare`: train several algorithms (or variants) over several seeds and report.

Every run gets the same base config and budget; only the variant's overrides and the seed differ.
Runs live in ``<out>/<label>/seed<k>``; re-running the same command skips finished runs and resumes
interrupted ones. Warm starts (``warmstart:NAME``) are built before the first run starts, runs start
interleaved across arms, and each run records how many runs shared the machine while it ran, so
step times are compared only between runs timed under equal load ("not comparable" otherwise).
The report (``<out>/report.md``: a compact main table, the paper-claims table unless
``--claims off``, PNG plots, an appendix with the full tables; ``summary.csv``, ``summary.tex``,
``summary.json`` beside it) gives means with 95% confidence intervals across seeds, the difference
from the baseline, and the efficiency ratio.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys

HELP = "Multi-seed comparison of algorithms with a claims report."

EPILOG = """\
examples:
  spro compare --algos grpo,spro,prime --seeds 3
  spro compare --algos grpo,spro --seeds 2 total_steps=100 --out runs/cmp
  spro compare --algos grpo --variant spro:algorithm.name=spro \\
      --variant beta0.01:algorithm.name=spro,algorithm.spro.beta=0.01 \\
      --variant per_token:algorithm.name=spro,algorithm.spro.process_reward=per_token --ablation
  spro compare --report-only --out runs/cmp      # re-aggregate finished runs
  spro compare --report-only --out runs/cmp --claims off   # ... without the paper-claims section
  spro compare --algos grpo,spro,prime --loss-agg token-mean   # every arm with one loss aggregation

A variant is LABEL:key=value[,key=value...]; a bare algorithm name X means X:algorithm.name=X.
key=value arguments after the options apply to every run (see `spro train --help` for the keys).
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("--algos", default="grpo,spro", help="Comma-separated algorithms to compare (default: grpo,spro).")
    parser.add_argument("--variant", action="append", default=[], metavar="LABEL:k=v,...",
                        help="An extra arm with its own overrides (repeatable).")
    parser.add_argument("--seeds", type=int, default=3, help="Number of seeds (0 .. N-1) per arm (default: 3).")
    parser.add_argument("--seed-offset", type=int, default=0, help="First seed (default: 0).")
    parser.add_argument("--config", metavar="FILE", help="Base YAML config for every run.")
    parser.add_argument("--preset", default=None, metavar="NAME",
                        help="Base preset (default: tiny-arithmetic when no --config is given).")
    parser.add_argument("--task", default=None, help="Shortcut for data.task=TASK.")
    parser.add_argument("--out", default="runs/compare", help="Folder for the runs and the report (default: runs/compare).")
    parser.add_argument("--baseline", default="grpo", help="Label the others are compared with (default: grpo).")
    parser.add_argument("--method", default="spro", help="Label judged against the paper's claims (default: spro).")
    parser.add_argument("--ablation", action="store_true", help="Add the ablation table (one row per arm).")
    parser.add_argument("--claims", choices=("on", "off"), default="on",
                        help="The section that puts the SPRO paper's claims beside the measured figures (default: on; "
                        "needs the baseline among the arms).")
    parser.add_argument("--title", default=None, help="Report title.")
    parser.add_argument("--report-only", action="store_true",
                        help="Do not train; aggregate the finished runs in --out (missing or partial runs are left "
                        "out, each named).")
    parser.add_argument("--jobs", type=int, default=None,
                        help="Runs at once, each in its own process with one torch thread (default: one per CPU "
                        "core; with more than one, each run's output goes to <run>/output.log). Step times are "
                        "compared only between arms whose runs had the same number of runs at once.")
    parser.add_argument("--loss-agg", default=None, metavar="MODE",
                        help="Run every arm with this policy-loss aggregation (algorithm.loss_agg); by default each "
                        "algorithm uses its own (PRIME: token-mean, Dr. GRPO: seq-mean-token-sum-norm, the others: "
                        "seq-mean-token-mean). The report states per arm which one ran.")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="Config overrides for every run.")


def run(args: argparse.Namespace) -> int:
    from spro.trainer.checkpoint import CheckpointError
    from spro.config import ConfigError
    from spro.experiments.grid import GridInterrupted, parse_variant, run_grid

    try:
        variants = [parse_variant(a) for a in args.algos.split(",") if a.strip()] if args.algos else []
        variants += [parse_variant(v) for v in args.variant]
        if not variants:
            raise ValueError("nothing to compare: give --algos and/or --variant")
        if args.seeds < 1:
            raise ValueError(f"--seeds must be >= 1, got {args.seeds}")
        seeds = list(range(args.seed_offset, args.seed_offset + args.seeds))
        overrides = list(args.overrides) + ([f"data.task={args.task}"] if args.task else [])
        overrides += [f"algorithm.loss_agg={args.loss_agg}"] if args.loss_agg else []
        preset = args.preset or (None if args.config else "tiny-arithmetic")
        if args.report_only:
            from spro.experiments.grid import finished_runs

            runs = finished_runs(variants, seeds, root=args.out, config=args.config, preset=preset,
                                 overrides=overrides, log=lambda m: print(m, flush=True))
        else:
            from spro.experiments.grid import default_jobs

            runs = run_grid(variants, seeds, root=args.out, config=args.config, preset=preset, overrides=overrides,
                            jobs=args.jobs or default_jobs(), log=lambda m: print(m, flush=True))
    except GridInterrupted:  # Ctrl-C: its one line is printed, the trainers saved checkpoints
        return 130
    except (ValueError, ConfigError, CheckpointError, RuntimeError) as e:
        print(f"spro compare: error: {e}", file=sys.stderr)
        return 2

    from spro.experiments.compare import aggregate
    from spro.experiments.report import write_report

    labels = list(runs)
    baseline = args.baseline if args.baseline in labels else None
    command = "spro compare " + " ".join(shlex.quote(a) for a in sys.argv[2:]) if len(sys.argv) > 2 else None
    title = args.title or f"spro compare: {', '.join(labels)} over {len(seeds)} seed(s)"
    report = write_report(runs, args.out, title=title, command=command, baseline=baseline,
                          method=args.method, ablation=args.ablation, claims=args.claims == "on")
    comp = aggregate(runs, baseline=baseline or labels[0])
    (report.parent / "summary.json").write_text(json.dumps(comp.to_dict(), indent=1, default=str))
    print(f"report: {report}")
    return 0
