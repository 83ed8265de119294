"""The report's main table, and the same figures for a paper: ``summary.csv`` and ``summary.tex``.

The main table has one row per arm: seeds, final and best held-out accuracy, the difference of the
final accuracy from the baseline's with Welch's 95% interval (`spro.experiments.stats.difference`),
final entropy, final mean length, mean step time and, where a baseline is given, the step-time
ratio to it, or "not comparable" when the runs were not timed under equal load
(`spro.experiments.timing`). Estimates are "mean ± 95% CI half-width" across seeds.

``summary.csv``: one row per arm, machine-readable: every estimate as ``<name>_mean``,
``<name>_ci_low``, ``<name>_ci_high`` (empty where undefined), the counts, the ratios to the
baseline and whether the step times were comparable (:data:`CSV_ESTIMATES`, :func:`summary_csv_rows`).
``summary.tex``: the main table as a LaTeX ``booktabs`` table (``\\usepackage{booktabs}``).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

from spro.experiments.compare import Comparison, _fx
from spro.experiments.stats import Estimate

__all__ = ["CSV_ESTIMATES", "main_table", "timing_notes", "summary_csv_rows", "write_summary_csv", "latex_table",
           "write_summary_tex"]

# (csv name, AlgoAggregate attribute) of every estimate in summary.csv
CSV_ESTIMATES: tuple[tuple[str, str], ...] = (
    ("final_accuracy", "final_accuracy"),
    ("best_accuracy", "best_accuracy"),
    ("final_entropy", "final_entropy"),
    ("entropy_last_third", "entropy_last_third"),
    ("entropy_retention", "entropy_retention"),
    ("final_length", "final_length"),
    ("final_eval_length", "final_eval_length"),
    ("final_reward", "final_reward"),
    ("step_time_s", "step_time"),
    ("peak_memory_mb", "peak_memory_mb"),
    ("total_time_s", "total_time"),
    ("steps_to_target", "steps_to_target_censored"),
    ("time_to_target_s", "time_to_target_censored"),
)


def _diff_text(d: Estimate | None, digits: int = 3) -> str:
    if d is None or d.mean is None:
        return "n/a"
    ci = f"[{d.low:+.{digits}f}, {d.high:+.{digits}f}]" if d.has_ci else "[n/a]"
    return f"{d.mean:+.{digits}f} {ci}"


def _step_ratio_text(comp: Comparison, label: str) -> str:
    if label == comp.baseline:
        return "baseline"
    t = comp.timing.get(label)
    if t is not None and not t.comparable:
        return "not comparable"
    return _fx(comp.ratios.get(label, {}).get("step_time_ratio"), 2, "x")


def main_table(comp: Comparison) -> list[dict[str, str]]:
    """One row per arm (module docstring); without a baseline, no difference and ratio columns."""
    base = comp.baseline
    rows = []
    for label, agg in comp.algos.items():
        row = {"arm": label, "seeds": str(agg.n_seeds), "final held-out acc": agg.final_accuracy.fmt(3),
               "best held-out acc": agg.best_accuracy.fmt(3)}
        if base is not None:
            row[f"Δ final acc vs {base} [95% CI]"] = (
                "baseline" if label == base else _diff_text(comp.accuracy_diff.get(label)))
        row |= {"final entropy": agg.final_entropy.fmt(3), "final length": agg.final_length.fmt(1),
                "step time (s)": agg.step_time.fmt(3)}
        if base is not None:
            row[f"step time vs {base}"] = _step_ratio_text(comp, label)
        rows.append(row)
    return rows


def timing_notes(comp: Comparison) -> list[str]:
    """One line per arm whose step times are not comparable with the baseline's, saying why."""
    return [f"Step time of {label} vs {comp.baseline}: {t.text()}."
            for label, t in comp.timing.items() if label != comp.baseline and not t.comparable]


def _num(x: float | None) -> str:
    return "" if x is None else repr(float(x))


def summary_csv_rows(comp: Comparison) -> list[dict[str, str]]:
    """The rows of ``summary.csv`` (module docstring), values as strings ("" = undefined)."""
    rows = []
    for label, agg in comp.algos.items():
        r = comp.ratios.get(label, {})
        row = {"arm": label, "seeds": str(agg.n_seeds), "baseline": comp.baseline or ""}
        for name, attr in CSV_ESTIMATES:
            est: Estimate = getattr(agg, attr)
            row |= {f"{name}_mean": _num(est.mean), f"{name}_ci_low": _num(est.low), f"{name}_ci_high": _num(est.high)}
        d = comp.accuracy_diff.get(label)
        row |= {"final_accuracy_diff_mean": _num(d.mean if d else None),
                "final_accuracy_diff_ci_low": _num(d.low if d else None),
                "final_accuracy_diff_ci_high": _num(d.high if d else None)}
        t = comp.timing.get(label)
        row |= {"target_accuracy": _num(comp.target_accuracy),
                "n_reached": str(agg.n_reached) if comp.target_accuracy is not None else "",
                "efficiency_steps": _num(r.get("efficiency_steps")),
                "step_time_ratio": _num(r.get("step_time_ratio")),
                "step_time_comparable": "" if t is None else str(t.comparable).lower(),
                "step_time_note": "" if t is None else t.why,
                "peak_memory_ratio": _num(r.get("peak_memory_ratio"))}
        rows.append(row)
    return rows


def write_summary_csv(comp: Comparison, path: str | Path) -> Path:
    """Write ``summary_csv_rows`` to ``path`` (a header row, then one row per arm)."""
    rows = summary_csv_rows(comp)
    path = Path(path)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def tex_escape(text: str) -> str:
    """``text`` with LaTeX's special characters escaped."""
    return re.sub(r"[\\&%$#_{}~^]", lambda m: _TEX_ESCAPES[m.group()], text)


def _tex_est(e: Estimate, digits: int, mark: str = "") -> str:
    if e.mean is None:
        return "n/a" + (f"${mark}$" if mark else "")
    hw = e.half_width
    return f"${e.mean:.{digits}f} \\pm {hw:.{digits}f}{mark}$" if hw is not None else f"${e.mean:.{digits}f}{mark}$"


def latex_table(comp: Comparison, *, caption: str | None = None, label: str = "tab:spro-compare") -> str:
    """The main table as a LaTeX booktabs ``table`` (mean $\\pm$ 95% CI half-width; a dagger marks a step
    time not comparable with the baseline's, explained under the table)."""
    base = comp.baseline
    head = ["Arm", "Seeds", "Final acc.", "Best acc."]
    if base is not None:
        head.append(f"$\\Delta$ final acc.\\ vs {tex_escape(base)}")
    head += ["Entropy", "Length", "Step time (s)"]
    body, daggers = [], []
    for name, agg in comp.algos.items():
        cells = [tex_escape(name), str(agg.n_seeds), _tex_est(agg.final_accuracy, 3), _tex_est(agg.best_accuracy, 3)]
        if base is not None:
            d = comp.accuracy_diff.get(name)
            if name == base:
                cells.append("--")
            elif d is None or d.mean is None:
                cells.append("n/a")
            else:
                cells.append(f"${d.mean:+.3f}$" + (f" [${d.low:+.3f}$, ${d.high:+.3f}$]" if d.has_ci else ""))
        t = comp.timing.get(name)
        mark = "^\\dagger" if base is not None and name != base and t is not None and not t.comparable else ""
        step = _tex_est(agg.step_time, 3, mark)
        if mark:
            daggers.append(name)
        cells += [_tex_est(agg.final_entropy, 3), _tex_est(agg.final_length, 1), step]
        body.append(" & ".join(cells) + r" \\")
    caption = caption or ("Mean $\\pm$ 95\\% confidence half-width across seeds (Student $t$)"
                          + (f"; $\\Delta$: difference from {tex_escape(base)} with Welch's 95\\% interval"
                             if base is not None else "") + ".")
    lines = [r"\begin{table}[t]", r"\centering", r"\small", r"\begin{tabular}{l" + "r" * (len(head) - 1) + "}",
             r"\toprule", " & ".join(head) + r" \\", r"\midrule", *body, r"\bottomrule", r"\end{tabular}"]
    if daggers:
        lines.append(r"\par\smallskip{\footnotesize $^\dagger$ not comparable with " + tex_escape(base or "")
                     + r": the runs shared the CPU unequally or their load was not recorded.}")
    lines += [r"\caption{" + caption + "}", r"\label{" + label + "}", r"\end{table}", ""]
    return "\n".join(lines)


def write_summary_tex(comp: Comparison, path: str | Path, **kwargs: Any) -> Path:
    """Write :func:`latex_table` to ``path``."""
    path = Path(path)
    path.write_text(latex_table(comp, **kwargs), encoding="utf-8")
    return path
