"""Markdown reports with PNG plots from run dirs (``metrics.jsonl`` / ``eval.jsonl``).

`write_report` takes ``{label: [run_dir, ...]}`` (one dir per seed; a label is an algorithm or an
ablation variant) and writes, under ``out_dir``:

- ``plots/<metric>_vs_step.png`` and ``plots/<metric>_vs_time.png`` for held-out accuracy
  (``eval/accuracy``), policy entropy (``entropy``), mean response length (``length/mean``) and
  mean reward (``reward/mean``): per label the mean across seeds (own colour, line style and marker,
  drawn above the rest), each seed as a thin light line, and a shaded 95% Student-t confidence band
  where at least 3 seeds have data, clipped to the metric's valid range (:data:`RANGES`,
  :func:`value_range`). Seeds are put on a common x grid by linear interpolation
  inside each seed's own range (no extrapolation), so the band at a point uses the seeds that have
  data there. Training metrics are smoothed per seed with a trailing moving average (the window
  is written in the plot title); held-out accuracy is not smoothed.
- ``report.md``: the setup, the compact main table (`spro.experiments.summary.main_table`), the
  paper-claims table against a baseline (`spro.experiments.claims`; ``claims=False`` leaves it
  out), the plots, then an appendix: the full summary, the comparison table against the baseline,
  the ablation table, the process-reward diagnostics and the runs; all linked by relative paths.
  Only files that were written are linked.
- ``summary.csv`` and ``summary.tex`` beside it (`spro.experiments.summary`).

Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from spro.experiments.compare import (
    CLAIM_RULES,
    Comparison,
    RunData,
    ablation_table,
    aggregate,
    claims_table,
    comparison_table,
    load_run,
    markdown_table,
    series,
    t_quantile,
)

__all__ = ["PLOTS", "DIAG_PLOTS", "Curve", "curve", "plot_metric", "summary_table", "per_seed_table", "setup_table",
           "diagnostics_table", "write_report"]

# (file stem, source file, key, axis label)
PLOTS: tuple[tuple[str, str, str, str], ...] = (
    ("eval_accuracy", "eval", "eval/accuracy", "held-out accuracy (greedy pass@1)"),
    ("entropy", "metrics", "entropy", "policy entropy (nats / token)"),
    ("response_length", "metrics", "length/mean", "mean response length (tokens)"),
    ("reward", "metrics", "reward/mean", "mean reward"),
)
# process-reward diagnostics and drift (spro.trainer.diagnostics), plotted against steps
DIAG_PLOTS: tuple[tuple[str, str, str], ...] = (
    ("kl", "kl", "KL to the reference (per token)"),
    ("zero_var_adv_share", "drift/zero_var_adv_share", "share of |advantage| from groups without outcome variance"),
    ("msa_logratio_corr", "drift/msa_logratio_corr", "corr(process term, log-ratio to the reference)"),
    ("zero_variance_frac", "groups/zero_variance_frac", "fraction of groups without outcome variance"),
    ("diag_self_reward_auroc", "diag/self_reward/first_error_auroc", "first-error AUROC of the self-guided reward"),
    ("diag_msa_auroc", "diag/msa/first_error_auroc", "first-error AUROC of the MSA"),
    ("diag_prm_auroc", "diag/prm/first_error_auroc", "first-error AUROC of PRIME's implicit reward"),
    ("diag_advantage_auroc", "diag/advantage/first_error_auroc", "first-error AUROC of the advantage"),
)
DIAG_SIGNALS = ("self_reward", "msa", "prm", "advantage")
X_LABELS = {"step": "training step", "time": "wall time (s, excluding evaluation)"}


MIN_BAND_SEEDS = 3  # fewer seeds: no band (a 2-seed t interval is 12.7 standard errors wide)
LINESTYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
# valid range of each plotted quantity: (low, high), None = unbounded, "data" = the observed per-seed min / max
RANGES: dict[str, tuple[float | None, float | None] | str] = {
    "eval/accuracy": (0.0, 1.0),
    "entropy": (0.0, None),
    "length/mean": (0.0, None),
    "reward/mean": "data",
    "kl": (0.0, None),
    "drift/zero_var_adv_share": (0.0, 1.0),
    "drift/msa_logratio_corr": (-1.0, 1.0),
    "groups/zero_variance_frac": (0.0, 1.0),
}


@dataclass
class Curve:
    """A label's curve on a common x grid: mean across seeds and a CI band (NaN where undefined), and
    each seed's own (smoothed) line."""

    x: np.ndarray
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: np.ndarray  # number of seeds with data at each x
    seeds: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)


def value_range(key: str, groups: Mapping[str, Sequence[RunData]], source: str = "metrics"
                ) -> tuple[float | None, float | None]:
    """The range a band of ``key`` is clipped to (:data:`RANGES`; AUROC and accuracy keys [0, 1]; the
    reward the observed min / max over every seed's logged values; other keys unbounded)."""
    rng = RANGES.get(key)
    if rng is None and ("auroc" in key or "accuracy" in key or key.endswith(("_frac", "/frac"))):
        rng = (0.0, 1.0)
    if rng == "data":
        vals = [series(r.metrics if source == "metrics" else r.evals, key)[1] for rs in groups.values() for r in rs]
        vals = [v for v in vals if v.size]
        if not vals:
            return (None, None)
        return (float(min(v.min() for v in vals)), float(max(v.max() for v in vals)))
    return rng if isinstance(rng, tuple) else (None, None)


def _trailing_mean(y: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values up to each index (fewer at the start)."""
    if window <= 1 or y.size == 0:
        return y
    c = np.cumsum(np.insert(y, 0, 0.0))
    idx = np.arange(1, y.size + 1)
    start = np.maximum(idx - window, 0)
    return (c[idx] - c[start]) / (idx - start)


def curve(
    runs: Sequence[RunData],
    key: str,
    *,
    source: str = "metrics",
    x: str = "step",
    smooth: int = 1,
    confidence: float = 0.95,
    n_grid: int = 200,
    min_band: int = MIN_BAND_SEEDS,
    clip: tuple[float | None, float | None] | None = None,
) -> Curve | None:
    """Mean and confidence band of ``key`` across seeds against ``x`` ("step" or "time").

    ``source``: "metrics" (metrics.jsonl rows) or "eval" (eval.jsonl rows). Against steps the grid
    is the union of the logged steps; against time, ``n_grid`` evenly spaced points over the
    logged range. The band exists where at least ``min_band`` (>= 2) seeds have data and is clipped
    to ``clip`` = (low, high) (None: that side unbounded). Returns None when no seed has data.
    """
    if min_band < 2:
        raise ValueError(f"curve: min_band must be >= 2 (one seed has no interval), got {min_band}")
    if source not in ("metrics", "eval"):
        raise ValueError(f"curve: source must be 'metrics' or 'eval', got {source!r}")
    if x not in ("step", "time"):
        raise ValueError(f"curve: x must be 'step' or 'time', got {x!r}")
    per_seed = []
    for r in runs:
        xs, ys = series(r.metrics if source == "metrics" else r.evals, key, x=x)
        if xs.size == 0:
            continue
        order = np.argsort(xs, kind="stable")
        xs, ys = xs[order], _trailing_mean(ys[order], smooth)
        per_seed.append((xs, ys))
    if not per_seed:
        return None
    if x == "step":
        grid = np.unique(np.concatenate([xs for xs, _ in per_seed]))
    else:
        lo = min(xs[0] for xs, _ in per_seed)
        hi = max(xs[-1] for xs, _ in per_seed)
        grid = np.linspace(lo, hi, n_grid) if hi > lo else np.array([lo])
    mat = np.full((len(per_seed), grid.size), np.nan)
    for i, (xs, ys) in enumerate(per_seed):
        inside = (grid >= xs[0]) & (grid <= xs[-1])
        mat[i, inside] = np.interp(grid[inside], xs, ys)
    n = np.sum(~np.isnan(mat), axis=0)
    with np.errstate(invalid="ignore"):
        mean = np.where(n > 0, np.nansum(mat, axis=0) / np.maximum(n, 1), np.nan)
        low = np.full(grid.size, np.nan)
        high = np.full(grid.size, np.nan)
        for j in np.nonzero(n >= min_band)[0]:
            col = mat[~np.isnan(mat[:, j]), j]
            hw = t_quantile(0.5 + confidence / 2, col.size - 1) * np.std(col, ddof=1) / math.sqrt(col.size)
            low[j], high[j] = mean[j] - hw, mean[j] + hw
    if clip is not None:
        lo, hi = clip
        low = np.clip(low, lo, hi) if lo is not None or hi is not None else low
        high = np.clip(high, lo, hi) if lo is not None or hi is not None else high
    return Curve(grid, mean, low, high, n, per_seed)


def plot_metric(
    groups: Mapping[str, Sequence[RunData]],
    key: str,
    path: str | Path,
    *,
    source: str = "metrics",
    x: str = "step",
    ylabel: str | None = None,
    title: str | None = None,
    smooth: int = 1,
    clip: tuple[float | None, float | None] | None = None,
) -> Path | None:
    """Plot ``key`` against ``x`` for every label into a PNG at ``path``.

    Per label: each seed's line (thin, light), the mean over seeds on top, and a shaded 95% band
    where at least :data:`MIN_BAND_SEEDS` seeds have data, clipped to ``clip`` (default: the metric's
    valid range, :func:`value_range`). Each label has its own colour, line style and marker, and the
    means are drawn above every band and seed line, so overlapping arms stay visible.
    Returns the path, or None (and writes nothing) when no run has data for ``key``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # styles follow the label order of `groups`, so a label keeps its look in every plot
    style = {label: (f"C{i % 10}", LINESTYLES[i % len(LINESTYLES)], MARKERS[i % len(MARKERS)])
             for i, label in enumerate(groups)}
    clip = value_range(key, groups, source) if clip is None else clip
    curves = {label: curve(runs, key, source=source, x=x, smooth=smooth, clip=clip) for label, runs in groups.items()}
    curves = {k: v for k, v in curves.items() if v is not None}
    if not curves:
        return None
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=110)
    try:
        n_arms = len(curves)
        for i, (label, c) in enumerate(curves.items()):
            colour, ls, marker = style[label]
            if len(c.seeds) > 1:
                for xs, ys in c.seeds:
                    ax.plot(xs, ys, color=colour, linestyle="-", linewidth=0.6, alpha=0.3, zorder=1)
            if np.any(~np.isnan(c.low)):
                ax.fill_between(c.x, c.low, c.high, color=colour, alpha=0.15, linewidth=0, zorder=2)
            ax.plot(c.x, c.mean, label=f"{label} (n={len(groups[label])})", color=colour, linestyle=ls,
                    linewidth=1.6, marker=marker, markersize=4, markevery=max(1, c.x.size // 8),
                    markeredgecolor="white", markeredgewidth=0.5,
                    zorder=3 + i / (n_arms + 1))  # the solid first arm lowest: the dashed ones let it show through
        ax.set_xlabel(X_LABELS[x])
        ax.set_ylabel(ylabel or key)
        full_title = title or f"{ylabel or key} vs {x}"
        if smooth > 1:
            full_title += f" (moving average over {smooth} steps)"
        ax.set_title(full_title, fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)
    return path


def summary_table(comp: Comparison) -> list[dict[str, str]]:
    """The per-label table: final / best held-out accuracy, final entropy, final mean length,
    mean step time, peak memory (mean ± 95% CI half-width across seeds, "± n/a" for one seed)."""
    return [
        {
            "run": label,
            "seeds": str(agg.n_seeds),
            "final held-out acc": agg.final_accuracy.fmt(3),
            "best held-out acc": agg.best_accuracy.fmt(3),
            "final entropy": agg.final_entropy.fmt(3),
            "final mean length": agg.final_length.fmt(1),
            "mean step time (s)": agg.step_time.fmt(3),
            "peak memory (MB)": agg.peak_memory_mb.fmt(0),
        }
        for label, agg in comp.algos.items()
    ]


def _run_config(run: RunData) -> dict:
    import yaml

    path = run.path / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}


def setup_table(groups: Mapping[str, Sequence[RunData]]) -> list[dict[str, str]]:
    """Per label: the algorithm, the policy-loss aggregation that ran and the algorithm's options
    that differ from their defaults (from the first seed's ``config.yaml``)."""
    import dataclasses

    from spro.algorithms import get_algorithm

    rows = []
    for label, runs in groups.items():
        algo = (_run_config(runs[0]) if runs else {}).get("algorithm", {})
        name, agg, options = algo.get("name", "?"), algo.get("loss_agg"), "-"
        try:
            cls = get_algorithm(name)
            agg = agg or f"{cls.loss_agg} (its default)"
            given = algo.get(cls.name, {}) or {}
            changed = {f.name: given[f.name] for f in dataclasses.fields(cls.Options)
                       if f.name in given and given[f.name] != f.default}
            options = ", ".join(f"{k}={v}" for k, v in changed.items()) or "defaults"
        except ValueError:
            agg = agg or "?"
        rows.append({"run": label, "algorithm": name, "loss aggregation": agg, "options": options,
                     "kl_coef": str(algo.get("kl_coef", "?"))})
    return rows


def start_note(groups: Mapping[str, Sequence[RunData]]) -> str:
    """What every run starts from (``model.name_or_path``) and its held-out accuracy at step 0; where these
    differ between runs, say so: arms compare only from the same start, and a warm start built on another CPU
    is another model (docs/results.md, section 1)."""
    starts, accs = {}, {}
    for label, runs in groups.items():
        for run in runs:
            key = f"{label}/{run.path.name}"
            starts[key] = (_run_config(run).get("model") or {}).get("name_or_path", "?")
            at0 = [e.get("eval/accuracy") for e in run.evals if e.get("step") == 0 and e.get("eval/accuracy") is not None]
            if at0:
                accs[key] = float(at0[-1])
    models = sorted(set(map(str, starts.values())))
    if not starts:
        return ""
    if len(models) > 1:
        return ("**The runs start from different models**: " + "; ".join(f"{k} `{v}`" for k, v in starts.items())
                + ". Arms compare only from the same start.")
    head = f"Every run starts from `{models[0]}`"
    if not accs:
        return head + " (no held-out evaluation at step 0)."
    values = sorted(set(round(v, 4) for v in accs.values()))
    if len(values) == 1:
        missing = "" if len(accs) == len(starts) else f"; {len(starts) - len(accs)} run(s) without one"
        return head + f" (held-out accuracy at step 0: {values[0]:.3f} in every evaluated run{missing})."
    return (head + ", but **its held-out accuracy at step 0 differs between runs** ("
            + ", ".join(f"{k} {v:.3f}" for k, v in accs.items())
            + "): they did not start from the same model (a warm start rebuilt on another CPU is another model, "
            "docs/results.md section 1), so their differences mix the start with the algorithm.")


def _mean_over(runs: Sequence[RunData], key: str, start_frac: float = 0.0) -> tuple[float | None, int]:
    """Mean over seeds of each seed's mean of ``key`` over its steps from ``start_frac`` of the run on."""
    means = []
    for r in runs:
        xs, ys = series(r.metrics, key)
        if ys.size:
            cut = xs.min() + start_frac * (xs.max() - xs.min())
            means.append(float(np.mean(ys[xs >= cut])))
    return (float(np.mean(means)) if means else None), len(means)


def diagnostics_table(groups: Mapping[str, Sequence[RunData]]) -> list[dict[str, str]]:
    """Per label: the process-reward diagnostics (first-error top-1 / AUROC of each signal, averaged over
    all steps) and the drift over the last third of training (KL, share of the advantage from groups
    without outcome variance, correlation of the process term with the log-ratio)."""
    rows = []
    for label, runs in groups.items():
        row = {"run": label}
        chance, _ = _mean_over(runs, "diag/first_error_top1_chance")
        row["top-1 chance"] = _fx(chance, 3)
        for sig in DIAG_SIGNALS:
            top1, _ = _mean_over(runs, f"diag/{sig}/first_error_top1")
            auroc, _ = _mean_over(runs, f"diag/{sig}/first_error_auroc")
            row[f"{sig} top-1 / AUROC"] = "n/a" if top1 is None else f"{_fx(top1, 3)} / {_fx(auroc, 3)}"
        for key, name in (("kl", "KL (last third)"), ("drift/zero_var_adv_share", "zero-var share of |A| (last third)"),
                          ("drift/msa_logratio_corr", "corr(MSA, log-ratio) (last third)")):
            row[name] = _fx(_mean_over(runs, key, 2 / 3)[0], 3)
        rows.append(row)
    return rows


def _fx(v: float | None, digits: int) -> str:
    return "n/a" if v is None else f"{v:.{digits}f}"


def per_seed_table(comp: Comparison, relative_to: Path | None = None) -> list[dict[str, str]]:
    """One row per run dir: label, path, steps logged, final / best held-out accuracy, steps to
    the baseline's target ("-" without a baseline, "not reached" when never reached)."""
    rows = []
    for label, agg in comp.algos.items():
        for i, s in enumerate(agg.runs):
            if comp.target_accuracy is None:
                reach = "-"
            else:
                st = agg.steps_to_target[i]
                reach = "not reached" if st is None else f"{st:g}"
            rows.append(
                {
                    "label": label,
                    "run dir": f"`{_rel(s.path, relative_to) if relative_to is not None else s.path.as_posix()}`",
                    "steps": str(s.n_steps),
                    "final acc": "n/a" if s.final_accuracy is None else f"{s.final_accuracy:.3f}",
                    "best acc": "n/a" if s.best_accuracy is None else f"{s.best_accuracy:.3f}",
                    "steps to target": reach,
                }
            )
    return rows


def _rel(p: Path, start: Path) -> str:
    try:
        return Path(os.path.relpath(p, start)).as_posix()
    except ValueError:  # different drives on Windows
        return p.as_posix()


def write_report(
    runs: Mapping[str, Sequence[str | Path]],
    out_dir: str | Path,
    *,
    title: str,
    command: str | None = None,
    notes: str | None = None,
    baseline: str | None = None,
    method: str = "spro",
    prime: str = "prime",
    ablation: bool = False,
    smooth: int | None = None,
    claims: bool = True,
) -> Path:
    """Write ``out_dir/report.md``, ``out_dir/plots/*.png``, ``summary.csv`` and ``summary.tex``; returns the
    report's path.

    runs: label -> run dirs (one per seed). command: the exact command that produced the runs
    (quoted in the report). notes: free markdown put after the title (e.g. the conclusion).
    baseline: a label (e.g. "grpo") to compare every label against; then the main table has the
    differences from it, the appendix the comparison table, and (``claims``) the paper-claims
    section is included (``method`` / ``prime`` name the SPRO / PRIME labels).
    ablation: include the ablation table (rows = labels). smooth: moving-average window for the
    training-metric plots; None picks ``max(1, round(n_steps / 25))``.
    Raises ValueError for an empty ``runs`` or a label without dirs, FileNotFoundError for a
    missing run dir.
    """
    from spro.experiments.summary import main_table, timing_notes, write_summary_csv, write_summary_tex

    if not runs:
        raise ValueError("write_report: runs is empty")
    out_dir = Path(out_dir)
    plots_dir = out_dir / "plots"
    plots_dir.mkdir(parents=True, exist_ok=True)
    groups: dict[str, list[RunData]] = {}
    for label, dirs in runs.items():
        if not dirs:
            raise ValueError(f"write_report: label {label!r} has no run dirs")
        groups[label] = [load_run(d) for d in dirs]
    comp = aggregate(groups, baseline=baseline)

    if smooth is None:
        n_steps = max((len(r.metrics) for rs in groups.values() for r in rs), default=0)
        smooth = max(1, round(n_steps / 25))

    lines = [f"# {title}", ""]
    if notes:
        lines += [notes.strip(), ""]
    if command:
        lines += ["Produced by:", "", "```bash", command.strip(), "```", ""]

    lines += ["## Setup", "", markdown_table(setup_table(groups)), ""]
    if note := start_note(groups):
        lines += [note, ""]
    lines += ["## Main results", "", markdown_table(main_table(comp)), ""]
    lines += [
        "Mean ± 95% confidence half-width across seeds (Student t; \"± n/a\" with one seed). "
        "Final held-out accuracy is the last evaluation's, best is the maximum over evaluations"
        + (f"; Δ is the difference of the final accuracy from {comp.baseline}'s with Welch's 95% interval"
           if comp.baseline is not None else "")
        + ". Final entropy and final length are means over the last 10% of training steps. Step time "
        "is the mean `time/step` without the first (warm-up) step"
        + (f"; its ratio to {comp.baseline} is given only where both arms' runs were timed under equal load "
           "(the same number of trainers at once, in the same `spro compare` run)" if comp.baseline is not None else "")
        + ". The same figures with their interval bounds: `summary.csv`; as a LaTeX table: `summary.tex`.",
        "",
    ]
    notes_t = timing_notes(comp)
    if notes_t:
        lines += ["\n".join(f"- {n}" for n in notes_t), ""]

    if comp.baseline is not None and claims:
        lines += ["## Paper claims", "", markdown_table(claims_table(comp, method=method, prime=prime)), ""]
        lines += [CLAIM_RULES, ""]

    lines += ["## Plots", "",
              "Per arm: the mean over seeds (its own colour, line style and marker), each seed as a thin light line, "
              f"and a shaded 95% confidence band where at least {MIN_BAND_SEEDS} seeds have data (none with fewer), "
              "clipped to the metric's valid range (accuracy and AUROC in [0, 1], entropy, length and KL >= 0, the "
              "reward within the observed per-seed minimum and maximum).", ""]
    missing = []
    for stem, source, key, ylabel in PLOTS:
        for x in ("step", "time"):
            path = plot_metric(
                groups,
                key,
                plots_dir / f"{stem}_vs_{x}.png",
                source=source,
                x=x,
                ylabel=ylabel,
                title=f"{ylabel} vs {'step' if x == 'step' else 'wall time'}",
                smooth=1 if source == "eval" else smooth,
            )
            if path is None:
                missing.append(f"{key} vs {x}")
            else:
                lines += [f"![{ylabel} vs {x}]({_rel(path, out_dir)})", ""]
    if missing:
        lines += ["No data logged for: " + ", ".join(missing) + ".", ""]

    lines += ["## Appendix", "", "### Summary", "", markdown_table(summary_table(comp)), "",
              "Peak memory is the maximum `memory/peak_mb`.", ""]
    if comp.baseline is not None:
        lines += [f"### Comparison with {comp.baseline}", ""]
        if comp.target_accuracy is not None:
            lines += [
                f"Target for steps / time to reach: {comp.baseline}'s mean best held-out accuracy, "
                f"{comp.target_accuracy:.3f}. Ratios are relative to {comp.baseline}; efficiency = "
                f"{comp.baseline}'s mean steps to the target / the algorithm's (unreached seeds count "
                "with their last evaluated step).",
                "",
            ]
        lines += [markdown_table(comparison_table(comp)), ""]

    if ablation:
        lines += ["### Ablation", "", markdown_table(ablation_table(comp)), ""]

    lines += ["### Process-reward diagnostics and drift", "", markdown_table(diagnostics_table(groups)), "",
              "First-error top-1 / AUROC: does the signal's lowest-scoring step find the first wrong step of a wrong "
              "response (top-1; chance in its own column), and does the first wrong step score below the earlier, "
              "correct steps (AUROC; chance 0.5)? Averaged over all steps of all seeds; n/a where not logged (PRIME's "
              "implicit reward exists only in PRIME runs, the step checker only on built-in tasks). Drift columns: "
              "means over the last third of training. Definitions: `spro.trainer.diagnostics`.", ""]
    for stem, key, ylabel in DIAG_PLOTS:
        path = plot_metric(groups, key, plots_dir / f"{stem}_vs_step.png", x="step", ylabel=ylabel,
                           title=f"{ylabel} vs step", smooth=smooth)
        if path is not None:
            lines += [f"![{ylabel}]({_rel(path, out_dir)})", ""]

    lines += ["### Runs", "", markdown_table(per_seed_table(comp, out_dir)), ""]

    write_summary_csv(comp, out_dir / "summary.csv")
    write_summary_tex(comp, out_dir / "summary.tex")
    report = out_dir / "report.md"
    report.write_text("\n".join(lines), encoding="utf-8")
    return report
