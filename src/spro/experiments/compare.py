"""Aggregation behind `spro compare`: multi-seed statistics, efficiency, and the claims table.

A *run dir* is what `spro.trainer.train` writes: ``metrics.jsonl`` (one JSON object per training
step) and ``eval.jsonl`` (one per held-out evaluation). The keys read here are the ones fixed in
the project's shared interface (``step``, ``time``, ``entropy``, ``length/mean``,
``reward/mean``, ``time/step``, ``memory/peak_mb``; ``eval/accuracy``, ``eval/length_mean``).
Missing keys and missing files are tolerated: the quantity that needs them becomes ``None`` and is
shown as "n/a"; nothing is guessed.

Statistics across seeds (``spro.experiments.stats``): mean and a two-sided 95% Student-t
confidence interval, ``mean +- t_{0.975, n-1} * sd / sqrt(n)`` with the unbiased standard
deviation (the quantile from scipy, or a table without it). With one seed the interval is
undefined and shown as "n/a". The paper's claims are rows of data in ``spro.experiments.claims``
(re-exported here).

Per run (one seed) the summary uses these definitions (also stated in the report):

- final held-out accuracy: ``eval/accuracy`` of the last evaluation (largest step);
- best held-out accuracy: the maximum ``eval/accuracy`` over all evaluations;
- final entropy / final length / final reward: mean of ``entropy`` / ``length/mean`` /
  ``reward/mean`` over the final window, the last ``ceil(n_steps / 10)`` steps (at least one);
- entropy over training: mean over the last third of the steps, mean over the first third,
  retention = last-third mean / first-third mean, standard deviation over all steps, and the
  least-squares slope per 100 steps;
- step time: mean of ``time/step``, the first step excluded as warm-up when there are 3 or more;
- peak memory: maximum of ``memory/peak_mb``.

Steps and wall time to reach the baseline's best accuracy: the target is the baseline's mean
(over seeds) of its per-seed best held-out accuracy. For every seed of every algorithm, the first
evaluation (in step order) whose accuracy is >= the target gives its ``step`` and ``time``; a seed
that never gets there is "not reached". For the efficiency ratio a not-reached seed counts with its
last evaluated step / time (a *censored* value, a lower bound on the truth); the counts of reached
seeds are kept beside every figure so that the claims table can refuse to judge on censored data.
Efficiency ratio = baseline mean steps-to-target / algorithm mean steps-to-target (> 1: the
algorithm gets there in fewer steps).

Step times and wall times of two arms are compared only between runs timed under equal load
(``spro.experiments.timing``, re-exported here); otherwise the ratio is reported as "not comparable"
with the reason, never judged.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from spro.experiments.claims import CLAIM_RULES, DOES_NOT_HOLD, HOLDS, UNCLEAR, claims_table
from spro.experiments.stats import Estimate, _finite, _json_lines, difference, mean_ci, separation, t_quantile

from spro.experiments.timing import (EQUAL_LOAD_SHARE, LOAD_FILE, RunLoad, Timing, load_records, run_load,
                                     timing_comparable)

__all__ = [
    "HOLDS",
    "DOES_NOT_HOLD",
    "UNCLEAR",
    "CLAIM_RULES",
    "Estimate",
    "RunData",
    "RunSummary",
    "RunLoad",
    "EQUAL_LOAD_SHARE",
    "LOAD_FILE",
    "load_records",
    "run_load",
    "Timing",
    "AlgoAggregate",
    "Comparison",
    "t_quantile",
    "mean_ci",
    "load_jsonl",
    "load_run",
    "series",
    "summarize_run",
    "steps_to_reach",
    "aggregate",
    "separation",
    "difference",
    "timing_comparable",
    "claims_table",
    "comparison_table",
    "ablation_table",
    "markdown_table",
]


# ----------------------------------------------------------------------------------------------
# Reading run dirs
# ----------------------------------------------------------------------------------------------


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSONL metrics file, sorted by ``step``; [] when the file does not exist.

    Blank lines are skipped. A row without a numeric ``step`` is skipped with a warning. When a
    step occurs more than once (a resumed run re-logging steps), the last occurrence wins. A last
    line that is not valid JSON (a write cut short by a kill) is skipped with a warning; invalid
    JSON anywhere else, or a line that is not a JSON object, raises ValueError naming file and line.
    """
    path = Path(path)
    if not path.exists():
        return []
    by_step: dict[float, dict[str, Any]] = {}
    for line_no, row in _json_lines(path):
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{line_no}: expected a JSON object, got {type(row).__name__}")
        step = _finite(row.get("step"))
        if step is None:
            warnings.warn(f"{path}:{line_no}: row has no numeric 'step'; skipped", stacklevel=2)
            continue
        by_step[step] = row
    return [by_step[s] for s in sorted(by_step)]


@dataclass
class RunData:
    """The logged rows of one run (one seed); ``loads``: its launch records (``load.jsonl``)."""

    path: Path
    metrics: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    loads: list[dict[str, Any]] = field(default_factory=list)


def load_run(run_dir: str | Path) -> RunData:
    """Read ``metrics.jsonl``, ``eval.jsonl`` and ``load.jsonl`` of a run dir (each may be missing).

    Raises FileNotFoundError if ``run_dir`` is not a directory.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run dir not found: {run_dir}")
    return RunData(run_dir, load_jsonl(run_dir / "metrics.jsonl"), load_jsonl(run_dir / "eval.jsonl"),
                   load_records(run_dir / LOAD_FILE))


def series(rows: Sequence[Mapping[str, Any]], key: str, x: str = "step") -> tuple[np.ndarray, np.ndarray]:
    """(xs, ys) float arrays of ``key`` against ``x`` over the rows that have finite values of both."""
    xs, ys = [], []
    for row in rows:
        xv, yv = _finite(row.get(x)), _finite(row.get(key))
        if xv is not None and yv is not None:
            xs.append(xv)
            ys.append(yv)
    return np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)


# ----------------------------------------------------------------------------------------------
# Per-run summary
# ----------------------------------------------------------------------------------------------


@dataclass
class RunSummary:
    """Scalar summaries of one run (definitions in the module docstring). None = not logged."""

    path: Path
    n_steps: int
    last_step: float | None
    total_time: float | None
    final_accuracy: float | None
    best_accuracy: float | None
    best_accuracy_step: float | None
    final_eval_length: float | None
    final_entropy: float | None
    entropy_first_third: float | None
    entropy_last_third: float | None
    entropy_retention: float | None
    entropy_std: float | None
    entropy_slope_per_100: float | None
    final_length: float | None
    mean_length: float | None
    final_reward: float | None
    step_time: float | None
    peak_memory_mb: float | None
    eval_steps: tuple[float, ...] = ()
    eval_times: tuple[float | None, ...] = ()
    eval_accuracy: tuple[float, ...] = ()
    load: RunLoad | None = None


def _mean(a: np.ndarray) -> float | None:
    return float(np.mean(a)) if a.size else None


def summarize_run(run: RunData | str | Path) -> RunSummary:
    """Summarise one run dir (or loaded RunData) into a RunSummary."""
    if not isinstance(run, RunData):
        run = load_run(run)
    m = run.metrics
    n = len(m)
    last_step = _finite(m[-1].get("step")) if m else None
    times = [t for t in (_finite(r.get("time")) for r in m) if t is not None]
    total_time = max(times) if times else None

    # held-out accuracy
    ev_rows = [r for r in run.evals if _finite(r.get("eval/accuracy")) is not None]
    eval_steps = tuple(float(r["step"]) for r in ev_rows)
    eval_times = tuple(_finite(r.get("time")) for r in ev_rows)
    eval_acc = tuple(float(r["eval/accuracy"]) for r in ev_rows)
    final_acc = eval_acc[-1] if eval_acc else None
    if eval_acc:
        i_best = int(np.argmax(eval_acc))  # first occurrence of the maximum
        best_acc, best_step = eval_acc[i_best], eval_steps[i_best]
    else:
        best_acc = best_step = None
    _, ev_len = series(run.evals, "eval/length_mean")
    final_eval_len = float(ev_len[-1]) if ev_len.size else None

    def final_window(key: str) -> float | None:
        _, ys = series(m, key)
        if not ys.size:
            return None
        k = max(1, math.ceil(ys.size / 10))
        return float(np.mean(ys[-k:]))

    # entropy over training
    ent_x, ent = series(m, "entropy")
    if ent.size:
        third = max(1, ent.size // 3)
        first_third, last_third = float(np.mean(ent[:third])), float(np.mean(ent[-third:]))
        retention = last_third / first_third if first_third != 0 else None
        ent_std = float(np.std(ent, ddof=1)) if ent.size >= 2 else None
        slope = float(np.polyfit(ent_x, ent, 1)[0] * 100.0) if ent.size >= 2 and np.ptp(ent_x) > 0 else None
    else:
        first_third = last_third = retention = ent_std = slope = None

    _, lengths = series(m, "length/mean")
    _, step_times = series(m, "time/step")
    if step_times.size >= 3:
        step_times = step_times[1:]
    _, mem = series(m, "memory/peak_mb")

    return RunSummary(
        path=run.path,
        n_steps=n,
        last_step=last_step,
        total_time=total_time,
        final_accuracy=final_acc,
        best_accuracy=best_acc,
        best_accuracy_step=best_step,
        final_eval_length=final_eval_len,
        final_entropy=final_window("entropy"),
        entropy_first_third=first_third,
        entropy_last_third=last_third,
        entropy_retention=retention,
        entropy_std=ent_std,
        entropy_slope_per_100=slope,
        final_length=final_window("length/mean"),
        mean_length=_mean(lengths),
        final_reward=final_window("reward/mean"),
        step_time=_mean(step_times),
        peak_memory_mb=float(np.max(mem)) if mem.size else None,
        eval_steps=eval_steps,
        eval_times=eval_times,
        eval_accuracy=eval_acc,
        load=run_load(run.loads),
    )


def steps_to_reach(summary: RunSummary, target: float) -> tuple[float | None, float | None]:
    """(step, time) of the first evaluation with accuracy >= ``target``; (None, None) if never.

    ``time`` may be None when the eval row has no ``time``.
    """
    for s, t, a in zip(summary.eval_steps, summary.eval_times, summary.eval_accuracy):
        if a >= target:
            return s, t
    return None, None


# ----------------------------------------------------------------------------------------------
# Aggregation across seeds and algorithms
# ----------------------------------------------------------------------------------------------


@dataclass
class AlgoAggregate:
    """Per-seed summaries of one algorithm (label) and their across-seed estimates."""

    label: str
    runs: list[RunSummary]
    final_accuracy: Estimate
    best_accuracy: Estimate
    final_entropy: Estimate
    entropy_last_third: Estimate
    entropy_retention: Estimate
    entropy_std: Estimate
    entropy_slope_per_100: Estimate
    final_length: Estimate
    mean_length: Estimate
    final_eval_length: Estimate
    final_reward: Estimate
    step_time: Estimate
    peak_memory_mb: Estimate
    total_time: Estimate
    # filled by `aggregate` once the baseline's target is known
    steps_to_target: list[float | None] = field(default_factory=list)
    time_to_target: list[float | None] = field(default_factory=list)
    steps_to_target_censored: Estimate = field(default_factory=lambda: mean_ci([]))
    time_to_target_censored: Estimate = field(default_factory=lambda: mean_ci([]))

    @property
    def n_seeds(self) -> int:
        return len(self.runs)

    @property
    def n_reached(self) -> int:
        return sum(s is not None for s in self.steps_to_target)

    @property
    def steps_to_target_reached(self) -> Estimate:
        """Estimate over the seeds that reached the target only."""
        return mean_ci(self.steps_to_target)

    @property
    def time_to_target_reached(self) -> Estimate:
        return mean_ci(self.time_to_target)


@dataclass
class Comparison:
    """Everything `spro compare` reports: per-label aggregates and ratios to the baseline.

    ``ratios[label]`` has keys (None when not computable):
    ``efficiency_steps`` and ``efficiency_time`` (baseline mean censored steps / time to target
    divided by the label's), ``accuracy_gain_abs`` (final accuracy difference, label - baseline),
    ``accuracy_gain_rel`` (that difference / baseline's final accuracy), ``length_ratio``
    (final length, label / baseline), ``entropy_ratio`` (last-third entropy, label / baseline),
    ``step_time_ratio`` and ``peak_memory_ratio`` (label / baseline). ``timing[label]``: whether
    the label's step times may be compared with the baseline's (:func:`timing_comparable`); where not,
    ``step_time_ratio`` and ``efficiency_time`` are shown as "not comparable" and never judged.
    ``accuracy_diff[label]``: final accuracy label - baseline with Welch's interval.
    """

    baseline: str | None
    target_accuracy: float | None
    algos: dict[str, AlgoAggregate]
    ratios: dict[str, dict[str, float | None]]
    confidence: float = 0.95
    timing: dict[str, Timing] = field(default_factory=dict)
    accuracy_diff: dict[str, Estimate] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict of everything (paths as strings, estimates with their values,
        infinite ratios as the strings "inf" / "-inf"), e.g. for a ``summary.json`` beside the report."""

        def conv(x: Any) -> Any:
            if isinstance(x, Path):
                return x.as_posix()
            if isinstance(x, float) and math.isinf(x):
                return "inf" if x > 0 else "-inf"
            if isinstance(x, dict):
                return {k: conv(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return [conv(v) for v in x]
            return x

        out = conv(asdict(self))
        for label, agg in self.algos.items():
            out["algos"][label]["n_reached"] = agg.n_reached
        return out


def _ratio(num: float | None, den: float | None) -> float | None:
    if num is None or den is None:
        return None
    if den == 0:
        return math.inf if num > 0 else (None if num == 0 else -math.inf)
    return num / den


def _aggregate_label(label: str, summaries: list[RunSummary], confidence: float) -> AlgoAggregate:
    def est(attr: str) -> Estimate:
        return mean_ci([getattr(s, attr) for s in summaries], confidence)

    return AlgoAggregate(
        label=label,
        runs=summaries,
        final_accuracy=est("final_accuracy"),
        best_accuracy=est("best_accuracy"),
        final_entropy=est("final_entropy"),
        entropy_last_third=est("entropy_last_third"),
        entropy_retention=est("entropy_retention"),
        entropy_std=est("entropy_std"),
        entropy_slope_per_100=est("entropy_slope_per_100"),
        final_length=est("final_length"),
        mean_length=est("mean_length"),
        final_eval_length=est("final_eval_length"),
        final_reward=est("final_reward"),
        step_time=est("step_time"),
        peak_memory_mb=est("peak_memory_mb"),
        total_time=est("total_time"),
    )


def aggregate(
    runs: Mapping[str, Sequence[str | Path | RunData]],
    *,
    baseline: str | None = "grpo",
    confidence: float = 0.95,
) -> Comparison:
    """Aggregate run dirs per label (label -> one run dir per seed).

    ``baseline``: the label everything is compared against (its mean best accuracy is the
    efficiency target); None, or a label not in ``runs``, gives no target and no ratios.
    Raises ValueError for an empty label list.
    """
    algos: dict[str, AlgoAggregate] = {}
    for label, dirs in runs.items():
        if not dirs:
            raise ValueError(f"aggregate: label {label!r} has no run dirs")
        summaries = [summarize_run(d) for d in dirs]
        algos[label] = _aggregate_label(label, summaries, confidence)

    base = algos.get(baseline) if baseline is not None else None
    target = base.best_accuracy.mean if base is not None else None
    if target is not None:
        for agg in algos.values():
            reach = [steps_to_reach(s, target) for s in agg.runs]
            agg.steps_to_target = [r[0] for r in reach]
            agg.time_to_target = [r[1] for r in reach]
            cens_steps, cens_time = [], []
            for s, (st, tt) in zip(agg.runs, reach):
                if st is not None:
                    cens_steps.append(st)
                    cens_time.append(tt)
                else:  # censored at the last evaluation
                    cens_steps.append(s.eval_steps[-1] if s.eval_steps else None)
                    cens_time.append(s.eval_times[-1] if s.eval_times else None)
            agg.steps_to_target_censored = mean_ci(cens_steps, confidence)
            agg.time_to_target_censored = mean_ci(cens_time, confidence)

    ratios: dict[str, dict[str, float | None]] = {}
    if base is not None:
        for label, agg in algos.items():
            gain_abs = (
                agg.final_accuracy.mean - base.final_accuracy.mean
                if agg.final_accuracy.mean is not None and base.final_accuracy.mean is not None
                else None
            )
            ratios[label] = {
                "efficiency_steps": _ratio(base.steps_to_target_censored.mean, agg.steps_to_target_censored.mean),
                "efficiency_time": _ratio(base.time_to_target_censored.mean, agg.time_to_target_censored.mean),
                "accuracy_gain_abs": gain_abs,
                "accuracy_gain_rel": _ratio(gain_abs, base.final_accuracy.mean),
                "length_ratio": _ratio(agg.final_length.mean, base.final_length.mean),
                "entropy_ratio": _ratio(agg.entropy_last_third.mean, base.entropy_last_third.mean),
                "step_time_ratio": _ratio(agg.step_time.mean, base.step_time.mean),
                "peak_memory_ratio": _ratio(agg.peak_memory_mb.mean, base.peak_memory_mb.mean),
            }
    timing = {label: timing_comparable(agg, base) for label, agg in algos.items()} if base is not None else {}
    diffs = ({label: difference(agg.final_accuracy, base.final_accuracy) for label, agg in algos.items()}
             if base is not None else {})
    return Comparison(baseline if base is not None else None, target, algos, ratios, confidence, timing, diffs)


# ----------------------------------------------------------------------------------------------
# Tables
# ----------------------------------------------------------------------------------------------


def _fx(x: float | None, digits: int = 2, suffix: str = "") -> str:
    if x is None:
        return "n/a"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    return f"{x:.{digits}f}{suffix}"


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> str:
    """A GitHub-markdown table of ``rows`` (dicts); columns default to the first row's keys.

    ``|`` inside cells is escaped.
    """
    if not rows:
        return ""
    cols = list(columns) if columns is not None else list(rows[0].keys())

    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")

    out = ["| " + " | ".join(cell(c) for c in cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        out.append("| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |")
    return "\n".join(out)


def _reach_text(agg: AlgoAggregate, time: bool = False) -> str:
    if not agg.steps_to_target and agg.n_seeds:
        return "n/a"
    # the same censored figure the efficiency ratio and the claims table use
    est = agg.time_to_target_censored if time else agg.steps_to_target_censored
    digits = 1 if time else 0
    suffix = " s" if time else ""
    if agg.n_reached == 0:
        return f"not reached (0/{agg.n_seeds})"
    return f"{est.fmt(digits, suffix=suffix)} ({agg.n_reached}/{agg.n_seeds} reached)"


def comparison_table(comp: Comparison) -> list[dict[str, str]]:
    """One row per label: accuracy, time to the baseline's best accuracy, entropy, length, cost.

    Values are formatted strings, "mean ± 95% CI half-width" ("± n/a" for one seed); the step-time ratio is
    "not comparable" where the runs were not timed under equal load (the reason: ``comp.timing[label]``).
    """
    rows = []
    for label, agg in comp.algos.items():
        r = comp.ratios.get(label, {})
        rows.append(
            {
                "algorithm": label,
                "seeds": str(agg.n_seeds),
                "final acc": agg.final_accuracy.fmt(3),
                "best acc": agg.best_accuracy.fmt(3),
                "steps to target": _reach_text(agg),
                "time to target": _reach_text(agg, time=True),
                "efficiency (steps)": _fx(r.get("efficiency_steps"), 2, "x"),
                "entropy (last third)": agg.entropy_last_third.fmt(3),
                "entropy retention": agg.entropy_retention.fmt(2),
                "entropy std": agg.entropy_std.fmt(3),
                "final length": agg.final_length.fmt(1),
                "length ratio": _fx(r.get("length_ratio"), 2),
                "step time (s)": agg.step_time.fmt(3),
                "step time ratio": ("not comparable" if label != comp.baseline and label in comp.timing
                                    and not comp.timing[label].comparable else _fx(r.get("step_time_ratio"), 2)),
                "peak mem (MB)": agg.peak_memory_mb.fmt(0),
                "mem ratio": _fx(r.get("peak_memory_ratio"), 2),
            }
        )
    return rows


def ablation_table(comp: Comparison | Mapping[str, Sequence[str | Path | RunData]]) -> list[dict[str, str]]:
    """One row per variant label: final / best held-out accuracy (mean ± 95% CI), last-third
    entropy, final length, step time. Accepts a Comparison or the ``runs`` mapping of `aggregate`.
    """
    if not isinstance(comp, Comparison):
        comp = aggregate(comp, baseline=None)
    return [
        {
            "variant": label,
            "seeds": str(agg.n_seeds),
            "final acc": agg.final_accuracy.fmt(3),
            "best acc": agg.best_accuracy.fmt(3),
            "entropy (last third)": agg.entropy_last_third.fmt(3),
            "final length": agg.final_length.fmt(1),
            "step time (s)": agg.step_time.fmt(3),
        }
        for label, agg in comp.algos.items()
    ]
