"""Which runs were timed under equal load: the launch records of ``<run>/load.jsonl``.

`spro.experiments.grid.run_grid` appends one record per launch of a run: the grid invocation
(``grid``), ``jobs``, ``threads``, ``cpus``, ``start`` / ``end`` (Unix time), ``from_step`` and
``concurrency_s`` (seconds the run spent with k trainers of the grid running at once, itself
included). Two arms' step times (and wall times) may be compared (:func:`timing_comparable`) only
when every run of both has records, every run spent at least :data:`EQUAL_LOAD_SHARE` of its time
at one number of trainers at once, that number is the same for all of them, and both arms ran in the
same grid invocation(s). Anything else is "not comparable" with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from spro.experiments.stats import _finite, _json_lines

__all__ = ["EQUAL_LOAD_SHARE", "LOAD_FILE", "RunLoad", "Timing", "load_records", "run_load", "timing_comparable"]

LOAD_FILE = "load.jsonl"  # = spro.experiments.grid.LOAD_FILE
EQUAL_LOAD_SHARE = 0.9


def load_records(path: str | Path) -> list[dict[str, Any]]:
    """The launch records of a ``load.jsonl`` ([] when missing). A truncated last line is skipped with a
    warning; any other bad line (not JSON, not an object, no ``grid`` or ``concurrency_s``) raises
    ValueError naming file and line."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line_no, row in _json_lines(path):
        if not isinstance(row, dict) or not isinstance(row.get("grid"), str) \
                or not isinstance(row.get("concurrency_s"), dict):
            raise ValueError(f"{path}:{line_no}: expected a load record with 'grid' and 'concurrency_s'")
        out.append(row)
    return out


@dataclass(frozen=True)
class RunLoad:
    """How a run shared the machine: the grids it ran in, the number of trainers at once for most of its
    time (``level``), the share of its time at that level, and its seconds in all."""

    grids: tuple[str, ...]
    level: int
    share: float
    seconds: float


def run_load(records: Sequence[Mapping[str, Any]]) -> RunLoad | None:
    """Summary of a run's launch records (None without records or without any time in them)."""
    if not records:
        return None
    conc: dict[int, float] = {}
    for r in records:
        for k, v in r["concurrency_s"].items():
            sec = _finite(v)
            if sec is not None and str(k).isdigit():
                conc[int(k)] = conc.get(int(k), 0.0) + sec
    total = sum(conc.values())
    if total <= 0:
        return None
    level = max(conc, key=lambda k: (conc[k], -k))
    grids = tuple(sorted({str(r["grid"]) for r in records}))
    return RunLoad(grids, level, conc[level] / total, total)


@dataclass(frozen=True)
class Timing:
    """Whether two arms' step times may be compared, and why (or why not)."""

    comparable: bool
    why: str

    def text(self) -> str:
        """"not comparable (<why>)" or the empty string."""
        return "" if self.comparable else f"not comparable ({self.why})"


def timing_comparable(a: Any, b: Any, min_share: float = EQUAL_LOAD_SHARE) -> Timing:
    """May the step times (and wall times) of arms ``a`` and ``b`` (``AlgoAggregate``s: their ``runs`` are
    ``RunSummary``s with a ``load``) be compared? Rules: module docstring."""
    runs = [*a.runs, *b.runs]
    if not runs:
        return Timing(False, "no runs")
    missing = [s for s in runs if s.load is None]
    if missing:
        return Timing(False, f"load during {len(missing)} of the {len(runs)} runs not recorded, e.g. "
                      f"{missing[0].path.as_posix()}; `spro compare` records it")
    loads = [s.load for s in runs]
    uneven = [(s, s.load) for s in runs if s.load.share < min_share]
    levels = sorted({ld.level for ld in loads})
    if uneven or len(levels) > 1:
        if uneven:
            s, ld = uneven[0]
            detail = f"{s.path.as_posix()} ran {100 * ld.share:.0f}% of its time with {ld.level} at once"
        else:
            detail = " vs ".join(str(k) for k in levels) + " trainers at once"
        return Timing(False, f"runs shared the CPU unequally: {detail}")
    grids_a = {g for s in a.runs for g in s.load.grids}
    grids_b = {g for s in b.runs for g in s.load.grids}
    if grids_a != grids_b:
        return Timing(False, "runs shared the CPU unequally: the arms were timed in different `spro compare` runs")
    return Timing(True, f"timed under equal load: {levels[0]} trainer(s) at once, in the same grid")
