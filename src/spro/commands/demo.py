"""`spro demo` (what `make demo` runs): SPRO against GRPO on the built-in task, offline, on a CPU.

1. build (or reuse from the cache) the weak supervised warm start of the tiny model;
2. train GRPO and SPRO from it with the same budget, seed and settings (preset ``demo``), side by
   side: one process per run (up to one per CPU core), one torch thread each;
3. evaluate the warm start and both final policies greedily on the held-out test split;
4. write ``<out>/report.md`` with PNG plots (accuracy, entropy, response length and reward
   against step and wall time) and the tables.

Runs are resumable: run the same command again after an interruption.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

HELP = "The offline demo: SPRO against GRPO on the built-in task."

# Seconds on idle CPU cores, used only for the estimate printed before the demo starts. EST_STEP_S is one
# training step of one run on one torch thread (a quiet `make demo` with the runs one after the other took
# 141 s per 400-step run, issue 23); the runs go side by side, one per core, so the training takes
# ceil(runs / cores) run lengths.
EST_WARM_START_S = 45
EST_STEP_S = 0.35
EST_EVAL_PER_PROBLEM_S = 0.005


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="runs/demo", help="Output folder (default: runs/demo).")
    parser.add_argument("--algos", default="grpo,spro", help="Algorithms to train (default: grpo,spro).")
    parser.add_argument("--seed", type=int, default=0, help="Seed shared by every run (default: 0).")
    parser.add_argument("--test-n", type=int, default=2000,
                        help="Held-out test problems for the final evaluation (default: 2000; fewer widens the report's intervals: 1000 or more is advised).")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="Config overrides on top of the demo preset, e.g. total_steps=50.")


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson 95% interval for a binomial proportion k/n."""
    if n == 0:
        return float("nan"), float("nan")
    p = k / n
    d = 1 + z * z / n
    c = (p + z * z / (2 * n)) / d
    h = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / d
    return c - h, c + h


def final_eval(model_dir: Path, test_ds, max_new_tokens: int) -> dict:
    """Greedy pass@1 and mean length of one model on the test split."""
    from spro.experiments.evaluation import evaluate
    from spro.models.loading import load_model_and_tokenizer
    from spro.data.tasks.arithmetic import arithmetic_reward, first_wrong_step

    model, tok = load_model_and_tokenizer(model_dir)
    model.eval()
    res = evaluate(model, tok, test_ds, arithmetic_reward, k=0, max_new_tokens=max_new_tokens,
                   step_checker=first_wrong_step, keep_samples=3)
    return res


def run(args: argparse.Namespace) -> int:
    import torch

    from spro.trainer.checkpoint import find_checkpoint
    from spro.config import ConfigError
    from spro.experiments.grid import GridInterrupted, build_config, default_jobs, parse_variant, run_grid
    from spro.experiments.report import write_report
    from spro.data.loader import load_task
    from spro.trainer.warmstart import default_cache_dir, cache_key, warm_start

    out = Path(args.out)
    try:
        variants = [parse_variant(a) for a in args.algos.split(",") if a.strip()]
        cfg = build_config(config=None, preset="demo", overrides=args.overrides, variant=variants[0],
                           seed=args.seed, run_dir=out / variants[0].label / f"seed{args.seed}")
    except (ValueError, ConfigError) as e:
        print(f"spro demo: error: {e}", file=sys.stderr)
        return 2
    if args.test_n < 1:
        print("spro demo: error: --test-n must be >= 1", file=sys.stderr)
        return 2

    cached = (default_cache_dir() / f"weak-{cache_key('weak')}" / "config.json").is_file()
    cores = default_jobs()
    jobs = min(len(variants), cores)
    est = (0 if cached else EST_WARM_START_S) + math.ceil(len(variants) / jobs) * cfg.total_steps * EST_STEP_S
    est += (len(variants) + 1) * args.test_n * EST_EVAL_PER_PROBLEM_S
    minutes = math.ceil(est / 60)
    print(
        f"spro demo: {', '.join(v.label for v in variants)} for {cfg.total_steps} steps each "
        f"({cfg.rollout.prompts_per_step} prompts x {cfg.rollout.num_generations} samples per step), "
        f"then greedy evaluation on {args.test_n} held-out test problems.\n"
        f"The training runs go side by side, {jobs} at once with one torch thread each (their logs: "
        f"{out}/<algo>/seed{args.seed}/output.log).\n"
        f"Estimated time on {cores} idle CPU core{'s' if cores > 1 else ''}: about {minutes} minute{'s' if minutes > 1 else ''}"
        f"{'' if cached else ' (includes building the warm start once, under a minute)'}.",
        flush=True,
    )
    t_start = time.time()
    ws = warm_start("weak")
    print(f"warm start: {ws}", flush=True)

    try:
        runs = run_grid(variants, [args.seed], root=out, preset="demo", overrides=args.overrides, jobs=jobs,
                        threads=1, log=lambda m: print(m, flush=True))
    except GridInterrupted:  # Ctrl-C: its one line is printed, the trainers saved checkpoints
        return 130

    task = load_task(cfg.data)
    test_ds = task.split("test", n=args.test_n)
    torch.manual_seed(args.seed)
    models = {"warm start (step 0)": ws}
    for label, dirs in runs.items():
        models[label] = find_checkpoint(dirs[0])  # the newest checkpoint that verifies
    finals = {}
    cache_file = out / "final_eval.json"
    if cache_file.is_file():
        finals = json.loads(cache_file.read_text())
    for name, path in models.items():
        key = f"{name}|{path}|{args.test_n}"
        if key in finals:
            continue
        print(f"evaluating {name} on {args.test_n} test problems ...", flush=True)
        res = final_eval(Path(path), test_ds, cfg.rollout.max_new_tokens)
        finals[key] = {"name": name, "path": str(path), "accuracy": res["pass@1"], "n": res["n"],
                       "length_mean": res["length_mean"], "step_checker": res.get("step_checker")}
        cache_file.write_text(json.dumps(finals, indent=1))

    rows = [v for k, v in finals.items() if k.split("|")[1] in {str(p) for p in models.values()}
            and k.endswith(f"|{args.test_n}")]
    lines = ["## Final evaluation on held-out test problems (greedy pass@1)", "",
             "| model | accuracy | 95% CI (Wilson) | mean response length (tokens) | n |", "|---|---|---|---|---|"]
    for r in rows:
        k = round(r["accuracy"] * r["n"])
        lo, hi = wilson(k, r["n"])
        lines.append(f"| {r['name']} | {r['accuracy']:.3f} | [{lo:.3f}, {hi:.3f}] | {r['length_mean']:.1f} | {r['n']} |")
    by = {r["name"]: r for r in rows}
    if "grpo" in by and "spro" in by:
        a, b = by["spro"], by["grpo"]
        diff = a["accuracy"] - b["accuracy"]
        se = math.sqrt(a["accuracy"] * (1 - a["accuracy"]) / a["n"] + b["accuracy"] * (1 - b["accuracy"]) / b["n"])
        verdict = ("SPRO is ahead of GRPO" if diff - 1.96 * se > 0 else
                   "GRPO is ahead of SPRO" if diff + 1.96 * se < 0 else
                   "the difference is within noise")
        lines += ["", f"SPRO - GRPO = {diff:+.3f} (95% CI [{diff - 1.96 * se:+.3f}, {diff + 1.96 * se:+.3f}], "
                  f"normal approximation, one training seed): {verdict}. One seed says nothing about the "
                  "spread between training runs; `spro compare --seeds 3` measures that."]
    minutes = (time.time() - t_start) / 60
    notes = "\n".join(lines) + f"\n\nThis run of the demo took {minutes:.1f} minutes (wall clock, including cached steps).\n"
    report = write_report(runs, out, title="spro demo: SPRO vs GRPO on the built-in arithmetic task",
                          command="make demo   # = spro demo " + " ".join(sys.argv[2:]), notes=notes,
                          baseline="grpo" if "grpo" in runs else None)
    print("\n".join(lines))
    print(f"\nreport: {report}  ({minutes:.1f} min)")
    return 0
