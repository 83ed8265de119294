"""Statistics across seeds for `spro compare`: mean and Student-t confidence interval.

``mean +- t_{(1+confidence)/2, n-1} * sd / sqrt(n)`` with the unbiased standard deviation; one seed
has no interval. The Student-t quantile comes from scipy (``pip install 'spro[stats]'``); without
scipy, from a small table of its values (p = 0.95, 0.975, 0.995; df 1-30, 40, 60, 120, then the
normal quantile), interpolated linearly in 1/df between tabulated df (within 1e-3 of the exact
value); other p then stop with an error that says to install scipy.

The difference of two arms' means (:func:`difference`) has Welch's interval (unequal variances,
Welch-Satterthwaite degrees of freedom; without scipy the df is rounded down, a wider interval).
"""

from __future__ import annotations

import json
import math
import statistics
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

__all__ = ["Estimate", "difference", "mean_ci", "separation", "t_quantile"]

# scipy.stats.t.ppf(p, df), 6 decimals, for the table fallback
_T_DF = tuple(range(1, 31)) + (40, 60, 120)
_T_TABLE = {
    0.95: (6.313752, 2.919986, 2.353363, 2.131847, 2.015048, 1.94318, 1.894579, 1.859548, 1.833113, 1.812461,
           1.795885, 1.782288, 1.770933, 1.76131, 1.75305, 1.745884, 1.739607, 1.734064, 1.729133, 1.724718,
           1.720743, 1.717144, 1.713872, 1.710882, 1.708141, 1.705618, 1.703288, 1.701131, 1.699127, 1.697261,
           1.683851, 1.670649, 1.657651),
    0.975: (12.706205, 4.302653, 3.182446, 2.776445, 2.570582, 2.446912, 2.364624, 2.306004, 2.262157, 2.228139,
            2.200985, 2.178813, 2.160369, 2.144787, 2.13145, 2.119905, 2.109816, 2.100922, 2.093024, 2.085963,
            2.079614, 2.073873, 2.068658, 2.063899, 2.059539, 2.055529, 2.051831, 2.048407, 2.04523, 2.042272,
            2.021075, 2.000298, 1.97993),
    0.995: (63.656741, 9.924843, 5.840909, 4.604095, 4.032143, 3.707428, 3.499483, 3.355387, 3.249836, 3.169273,
            3.105807, 3.05454, 3.012276, 2.976843, 2.946713, 2.920782, 2.898231, 2.87844, 2.860935, 2.84534,
            2.83136, 2.818756, 2.807336, 2.79694, 2.787436, 2.778715, 2.770683, 2.763262, 2.756386, 2.749996,
            2.704459, 2.660283, 2.617421),
}


def _table_quantile(p: float, df: int) -> float:
    """The upper quantile ``p`` (a key of the table) from the table: exact at tabulated df, linear in 1/df
    between them and towards the normal quantile (df -> infinity)."""
    q = _T_TABLE[p]
    if df in _T_DF:
        return q[_T_DF.index(df)]
    pts = [(1.0 / d, v) for d, v in zip(_T_DF, q)] + [(0.0, statistics.NormalDist().inv_cdf(p))]
    x = 1.0 / df
    for (x0, y0), (x1, y1) in zip(pts[:-1], pts[1:]):
        if x1 <= x <= x0:
            return y1 + (y0 - y1) * (x - x1) / (x0 - x1)
    raise AssertionError("unreachable")  # pragma: no cover


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t distribution with ``df`` (a positive integer) degrees of freedom,
    e.g. ``t_quantile(0.975, 1) = 12.706``, ``t_quantile(0.975, 2) = 4.303``, ``t_quantile(0.975, 30) =
    2.042`` (scipy's ``t.ppf``; without scipy the table of the module docstring)."""
    if int(df) != df or df < 1:
        raise ValueError(f"t_quantile: df must be a positive integer, got {df!r}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"t_quantile: p must be in (0, 1), got {p!r}")
    df = int(df)
    if p == 0.5:
        return 0.0
    try:
        from scipy.stats import t
    except ImportError:
        upper = max(p, 1.0 - p)
        key = next((k for k in _T_TABLE if abs(k - upper) < 1e-12), None)
        if key is None:
            raise ValueError(f"t_quantile({p}, {df}): without scipy only p in {sorted(_T_TABLE)} (and 1 - p) are "
                             f"tabulated; install scipy (pip install 'spro[stats]')") from None
        q = _table_quantile(key, df)
        return q if p > 0.5 else -q
    return float(t.ppf(p, df))


def _json_lines(path: Path) -> list[tuple[int, Any]]:
    """(1-based line number, parsed value) of every non-blank line of a JSONL file. A last line that is not
    valid JSON (a write cut short by a kill) is skipped with a warning; invalid JSON anywhere else raises
    ValueError naming file and line."""
    lines = path.read_text(encoding="utf-8").splitlines()
    last = max((i for i, ln in enumerate(lines) if ln.strip()), default=-1)
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append((i + 1, json.loads(line)))
        except json.JSONDecodeError as e:
            if i == last:
                warnings.warn(f"{path}:{i + 1}: skipping a truncated last line ({e.msg})", stacklevel=3)
                continue
            raise ValueError(f"{path}:{i + 1}: invalid JSON: {e.msg}") from e
    return out


def _finite(x: Any) -> float | None:
    """``x`` as a float when it is a finite real number (not bool), else None."""
    if isinstance(x, bool) or x is None:
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


@dataclass(frozen=True)
class Estimate:
    """Mean of per-seed values with a two-sided Student-t confidence interval.

    ``low``/``high`` are None when fewer than two values exist (interval undefined);
    ``mean`` is None when there are none.
    """

    mean: float | None
    low: float | None
    high: float | None
    n: int
    values: tuple[float, ...] = ()
    confidence: float = 0.95

    @property
    def half_width(self) -> float | None:
        if self.mean is None or self.high is None:
            return None
        return self.high - self.mean

    @property
    def has_ci(self) -> bool:
        return self.low is not None and self.high is not None

    def fmt(self, digits: int = 3, scale: float = 1.0, suffix: str = "") -> str:
        """``"0.512 ± 0.034"`` (mean ± CI half-width), ``"0.512 ± n/a"`` for one seed, ``"n/a"``."""
        if self.mean is None:
            return "n/a"
        m = f"{self.mean * scale:.{digits}f}{suffix}"
        hw = self.half_width
        return f"{m} ± {hw * scale:.{digits}f}" if hw is not None else f"{m} ± n/a"


def mean_ci(values: Iterable[Any], confidence: float = 0.95) -> Estimate:
    """Mean and Student-t confidence interval of ``values`` (None / NaN / inf entries are dropped).

    n = 0: mean None; n = 1: mean only, interval None ("n/a"); n >= 2:
    ``mean +- t_{(1+confidence)/2, n-1} * stdev / sqrt(n)`` with the unbiased (n-1) stdev.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"mean_ci: confidence must be in (0, 1), got {confidence!r}")
    vals = tuple(v for v in (_finite(x) for x in values) if v is not None)
    n = len(vals)
    if n == 0:
        return Estimate(None, None, None, 0, (), confidence)
    mean = math.fsum(vals) / n
    if n == 1:
        return Estimate(mean, None, None, 1, vals, confidence)
    sd = statistics.stdev(vals)
    hw = t_quantile(0.5 + confidence / 2.0, n - 1) * sd / math.sqrt(n)
    return Estimate(mean, mean - hw, mean + hw, n, vals, confidence)


def separation(a: Estimate, b: Estimate) -> int | None:
    """Compare two estimates by their confidence intervals.

    Returns +1 if a's interval lies entirely above b's (a.low > b.high), -1 if entirely below
    (a.high < b.low), 0 if the intervals overlap, None if either interval is undefined
    (fewer than two seeds or no data).
    """
    if not (a.has_ci and b.has_ci):
        return None
    assert a.low is not None and a.high is not None and b.low is not None and b.high is not None
    if a.low > b.high:
        return 1
    if a.high < b.low:
        return -1
    return 0



def difference(a: Estimate, b: Estimate) -> Estimate:
    """``a - b`` of two arms' per-seed values with Welch's two-sided interval at ``a.confidence``.

    ``mean_a - mean_b +- t_{(1+confidence)/2, df} * sqrt(s_a^2/n_a + s_b^2/n_b)`` with the
    Welch-Satterthwaite ``df``. Mean None when either side has no data; interval None when either
    side has fewer than two values. ``n`` is the smaller of the two seed counts; ``values`` is empty.
    """
    if a.mean is None or b.mean is None:
        return Estimate(None, None, None, min(a.n, b.n), (), a.confidence)
    d = a.mean - b.mean
    if a.n < 2 or b.n < 2 or len(a.values) < 2 or len(b.values) < 2:
        return Estimate(d, None, None, min(a.n, b.n), (), a.confidence)
    va, vb = statistics.variance(a.values) / a.n, statistics.variance(b.values) / b.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Estimate(d, d, d, min(a.n, b.n), (), a.confidence)
    df = (va + vb) ** 2 / (va**2 / (a.n - 1) + vb**2 / (b.n - 1))
    p = 0.5 + a.confidence / 2.0
    try:
        from scipy.stats import t

        q = float(t.ppf(p, df))
    except ImportError:
        q = t_quantile(p, max(1, math.floor(df)))
    return Estimate(d, d - q * se, d + q * se, min(a.n, b.n), (), a.confidence)
