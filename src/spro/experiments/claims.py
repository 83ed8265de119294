"""The paper's claims as rows of data, judged on a `spro compare` aggregation.

Each claim of the SPRO paper (``/work/shared/spro-method.md``, "Claims to test") is one
:class:`Claim` row of :data:`PAPER_CLAIMS`: its text, the paper's figure, the quantity compared (an
estimate of ``spro.experiments.compare.AlgoAggregate``), the direction and magnitude the paper
claims, and the rule that judges it (one of a few shared rules: a directional comparison of two
intervals, the efficiency ratio, a band, a compute tolerance). :func:`claims_table` applies every
row; ``CLAIM_RULES`` states the rules for the report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from spro.experiments.stats import separation

__all__ = ["HOLDS", "DOES_NOT_HOLD", "UNCLEAR", "CLAIM_RULES", "Claim", "PAPER_CLAIMS", "claims_table"]

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
UNCLEAR = "unclear"

# Paper magnitudes used by the rules (see spro-method.md, "Claims to test").
PAPER_EFFICIENCY = 3.4
PAPER_ACCURACY_GAIN_REL = 0.175
PAPER_LENGTH_RATIO_MAX = 0.75  # "about 1/3 shorter": judged as at least 25% shorter
ENTROPY_STABLE_BAND = (0.8, 1.25)  # last-third / first-third entropy
COMPUTE_TOLERANCE = 1.05  # "no extra compute": ratio to GRPO at most 1.05

CLAIM_RULES = f"""\
How the verdicts are decided (95% Student-t intervals across seeds; one seed has no interval):

- A claim comparing two algorithms is **unclear** when either side has fewer than two seeds with
  data, when data is missing, or when the two confidence intervals overlap. When they do not
  overlap, the claim **holds** if the difference is in the claimed direction *and* the point
  estimate reaches the paper's magnitude; otherwise it **does not hold** (the note then says
  whether the direction alone was significant).
- Efficiency: steps to reach the baseline's mean best held-out accuracy (first evaluation at or
  above it). Unreached seeds count with their last evaluated step (a lower bound). If any SPRO seed
  never reaches the target the verdict is unclear, and if none does it does not hold. Magnitude:
  ratio >= {PAPER_EFFICIENCY}x.
- Accuracy: final held-out accuracy. The paper's "+17.5%" is undefined; it is read as a relative
  gain (the more lenient reading; absolute points are shown too): gain / GRPO's accuracy >=
  {PAPER_ACCURACY_GAIN_REL:.3f}.
- Entropy higher: mean policy entropy over the last third of training steps, SPRO above GRPO.
- Entropy stable: SPRO's retention (last-third mean / first-third mean) has its whole interval
  inside [{ENTROPY_STABLE_BAND[0]}, {ENTROPY_STABLE_BAND[1]}] (holds), entirely outside it
  (does not hold), otherwise unclear.
- Length: final mean response length (mean of the last 10% of steps), SPRO shorter than GRPO by
  at least 25% (ratio <= {PAPER_LENGTH_RATIO_MAX}), reading "about 1/3 shorter" with tolerance.
- No extra compute: mean step time and peak memory, SPRO / GRPO <= {COMPUTE_TOLERANCE} holds;
  above that with separated intervals does not hold; above that with overlapping or undefined
  intervals unclear.
- PRIME costs more: PRIME's mean step time (and peak memory) above SPRO's (GRPO's when there is no
  SPRO run) with separated intervals holds, below with separated intervals does not hold,
  otherwise unclear.
- Step time and wall time are judged only between runs timed under equal load (each run records
  how many trainers shared the machine while it ran; the arms' runs must have had the same number
  for at least 90% of their time, in the same `spro compare` run). Otherwise the ratio is shown
  as "not comparable" and the verdict is unclear.
"""


@dataclass(frozen=True)
class Claim:
    """One claim of the paper and how it is judged.

    ``text`` / ``paper``: the table's "claim" and "paper" columns (``{ref}``: the label the claim
    compares against). ``rule``: the function that judges it (``rule(claim, ctx) -> row``). ``attr``:
    the ``AlgoAggregate`` estimate compared; ``ratio``: its key in ``Comparison.ratios[method]``;
    ``direction``: +1 the method should be above the baseline, -1 below; ``bound``: the paper's
    magnitude on the ratio (``>= bound`` for direction +1, ``<= bound`` for -1; None: no magnitude);
    ``digits`` / ``unit``: how the estimates are printed; ``what``: a short name of the quantity;
    ``timed``: the quantity is a time, judged only between runs timed under equal load
    (`spro.experiments.compare.timing_comparable`).
    """

    text: str
    paper: str
    rule: Callable[[Claim, _Context], dict[str, str]]
    attr: str = ""
    ratio: str = ""
    direction: int = +1
    bound: float | None = None
    digits: int = 3
    unit: str = ""
    what: str = ""
    timed: bool = False


@dataclass
class _Context:
    comp: Any  # spro.experiments.compare.Comparison
    method: str
    prime: str

    @property
    def base(self) -> Any:
        return self.comp.algos.get(self.comp.baseline) if self.comp.baseline else None

    @property
    def algo(self) -> Any:
        return self.comp.algos.get(self.method)

    @property
    def ratios(self) -> dict[str, Any]:
        return self.comp.ratios.get(self.method, {})

    def timing(self, a: Any, b: Any) -> str:
        """"" when the times of aggregates ``a`` and ``b`` may be compared, else "not comparable (why)"."""
        from spro.experiments.compare import timing_comparable

        return timing_comparable(a, b).text()


def _fx(x: float | None, digits: int = 2, suffix: str = "") -> str:
    from spro.experiments.compare import _fx as fx

    return fx(x, digits, suffix)


def _row(claim: str, paper: str, measured: str, verdict: str, note: str) -> dict[str, str]:
    return {"claim": claim, "paper": paper, "measured": measured, "verdict": verdict, "note": note}


def _directional(
    sep: int | None, want: int, magnitude_ok: bool | None, what: str, magnitude_text: str
) -> tuple[str, str]:
    """Verdict and note for 'a differs from b in direction `want` by the paper's magnitude'."""
    if sep is None:
        return UNCLEAR, "fewer than two seeds with data on one side: no interval"
    if sep == 0:
        return UNCLEAR, "confidence intervals overlap"
    if sep != want:
        return DOES_NOT_HOLD, f"significant, but opposite to the claim ({what})"
    if magnitude_ok is None:
        return UNCLEAR, f"direction significant ({what}); magnitude not computable"
    if magnitude_ok:
        return HOLDS, f"significant ({what}); {magnitude_text}"
    return DOES_NOT_HOLD, f"direction significant ({what}), but {magnitude_text}"


# ------------------------------------------------------------------------------------------ rules


def efficiency_rule(c: Claim, ctx: _Context) -> dict[str, str]:
    """Steps (``attr="steps"``) or wall time (``attr="time"``) to reach the baseline's best accuracy."""
    comp, base, algo, method = ctx.comp, ctx.base, ctx.algo, ctx.method
    time = c.attr == "time"
    if base is None or algo is None or comp.target_accuracy is None:
        return _row(c.text, c.paper, "n/a", UNCLEAR, "missing runs or evaluations")
    ratio = ctx.ratios.get(c.ratio)
    b_est = base.time_to_target_censored if time else base.steps_to_target_censored
    a_est = algo.time_to_target_censored if time else algo.steps_to_target_censored
    measured = (
        f"{_fx(ratio, 2, 'x')} (GRPO {b_est.fmt(c.digits, suffix=c.unit)}, "
        f"{base.n_reached}/{base.n_seeds} reached; {method} {a_est.fmt(c.digits, suffix=c.unit)}, "
        f"{algo.n_reached}/{algo.n_seeds} reached; target {comp.target_accuracy:.3f})"
    )
    if algo.n_seeds and algo.n_reached == 0:
        return _row(c.text, c.paper, measured, DOES_NOT_HOLD, f"{method} never reached GRPO's mean best accuracy")
    if algo.n_reached < algo.n_seeds:
        return _row(c.text, c.paper, measured, UNCLEAR,
                    f"{method} reached the target in only {algo.n_reached}/{algo.n_seeds} seeds")
    if time and any(t is None for t in algo.time_to_target):
        return _row(c.text, c.paper, measured, UNCLEAR, "evaluation rows have no 'time'")
    if c.timed and (nc := ctx.timing(algo, base)):
        return _row(c.text, c.paper, "not comparable" + measured[len(_fx(ratio, 2, "x")):], UNCLEAR, nc)
    sep = separation(b_est, a_est)  # +1: GRPO needs more -> method faster
    ok = None if ratio is None else ratio >= c.bound
    verdict, note = _directional(
        sep, +1, ok, f"{method} faster", f"ratio {_fx(ratio, 2, 'x')} {'>=' if ok else '<'} {c.bound}x"
    )
    if base.n_reached < base.n_seeds:
        note += f"; GRPO censored in {base.n_seeds - base.n_reached} seed(s), so the ratio is a lower bound"
    return _row(c.text, c.paper, measured, verdict, note)


def accuracy_rule(c: Claim, ctx: _Context) -> dict[str, str]:
    """Final held-out accuracy, the method above the baseline by a relative gain >= ``bound``."""
    base, algo, method, r = ctx.base, ctx.algo, ctx.method, ctx.ratios
    if base is None or algo is None:
        return _row(c.text, c.paper, "n/a", UNCLEAR, "missing runs")
    gain_abs, gain_rel = r.get("accuracy_gain_abs"), r.get(c.ratio)
    rel = _fx(None if gain_rel is None else 100 * gain_rel, 1, "%")
    measured = (
        f"{method} {getattr(algo, c.attr).fmt(c.digits)} vs GRPO {getattr(base, c.attr).fmt(c.digits)}: "
        f"{_fx(None if gain_abs is None else 100 * gain_abs, 1)} points, {rel} relative"
    )
    ok = None if gain_rel is None else gain_rel >= c.bound
    v, note = _directional(separation(getattr(algo, c.attr), getattr(base, c.attr)), c.direction, ok,
                           f"{method} {c.what}", f"relative gain {rel} {'>=' if ok else '<'} {c.paper[1:]}")
    return _row(c.text, c.paper, measured, v, note)


def directional_rule(c: Claim, ctx: _Context) -> dict[str, str]:
    """``attr`` of the method vs the baseline in ``direction``, with the ratio within ``bound`` (if any)."""
    base, algo, method = ctx.base, ctx.algo, ctx.method
    if base is None or algo is None:
        return _row(c.text, c.paper, "n/a", UNCLEAR, "missing runs")
    a_est, b_est = getattr(algo, c.attr), getattr(base, c.attr)
    ratio = ctx.ratios.get(c.ratio)
    measured = (f"{method} {a_est.fmt(c.digits, suffix=c.unit)} vs GRPO {b_est.fmt(c.digits, suffix=c.unit)} "
                f"(ratio {_fx(ratio, 2)})")
    if c.bound is None:
        ok, magnitude = True, "no magnitude claimed"
    else:
        ok = None if ratio is None else (ratio >= c.bound if c.direction > 0 else ratio <= c.bound)
        sign = (">=" if ok else "<") if c.direction > 0 else ("<=" if ok else ">")
        magnitude = f"ratio {_fx(ratio, 2)} {sign} {c.bound}"
    v, note = _directional(separation(a_est, b_est), c.direction, ok, f"{method} {c.what}", magnitude)
    return _row(c.text, c.paper, measured, v, note)


def band_rule(c: Claim, ctx: _Context) -> dict[str, str]:
    """The method's entropy retention interval inside ``ENTROPY_STABLE_BAND`` (holds) or outside it."""
    algo, base, method = ctx.algo, ctx.base, ctx.method
    if algo is None or getattr(algo, c.attr).mean is None:
        return _row(c.text, c.paper, "n/a", UNCLEAR, "missing runs or entropy not logged")
    ret = getattr(algo, c.attr)
    measured = (
        f"{method} retention {ret.fmt(2)}, std over training {algo.entropy_std.fmt(3)}, "
        f"slope {algo.entropy_slope_per_100.fmt(3)} per 100 steps"
    )
    if base is not None:
        measured += f"; GRPO retention {getattr(base, c.attr).fmt(2)}"
    lo_b, hi_b = ENTROPY_STABLE_BAND
    if not ret.has_ci:
        v, note = UNCLEAR, "one seed: no interval"
    elif lo_b <= ret.low and ret.high <= hi_b:
        v, note = HOLDS, f"interval inside [{lo_b}, {hi_b}]"
    elif ret.high < lo_b or ret.low > hi_b:
        v, note = DOES_NOT_HOLD, f"interval outside [{lo_b}, {hi_b}]"
    else:
        v, note = UNCLEAR, f"interval straddles the band [{lo_b}, {hi_b}]"
    return _row(c.text, c.paper, measured, v, note)


def compute_rule(c: Claim, ctx: _Context) -> dict[str, str]:
    """The method's ``attr`` / the baseline's at most ``bound`` (holds); above with separated intervals
    does not hold."""
    base, algo, method = ctx.base, ctx.algo, ctx.method
    if base is None or algo is None:
        return _row(c.text, c.paper, "n/a", UNCLEAR, "missing runs")
    ratio = ctx.ratios.get(c.ratio)
    a_est, b_est = getattr(algo, c.attr), getattr(base, c.attr)
    nc = ctx.timing(algo, base) if c.timed else ""
    measured = (f"{method} {a_est.fmt(c.digits, suffix=c.unit)} vs GRPO {b_est.fmt(c.digits, suffix=c.unit)} "
                f"(ratio {'not comparable' if nc else _fx(ratio, 2)})")
    if ratio is None:
        v, note = UNCLEAR, f"{c.what} not logged"
    elif nc:
        v, note = UNCLEAR, nc
    elif ratio <= c.bound:
        v, note = HOLDS, f"ratio <= {c.bound}"
    elif separation(a_est, b_est) == 1:
        v, note = DOES_NOT_HOLD, f"ratio > {c.bound} with separated intervals"
    else:
        v, note = UNCLEAR, f"ratio > {c.bound} but intervals overlap or are undefined"
    return _row(c.text, c.paper, measured, v, note)


def prime_cost_rule(c: Claim, ctx: _Context) -> dict[str, str]:
    """PRIME's ``attr`` above the method's (the baseline's when there is no method run)."""
    from spro.experiments.compare import _ratio

    pr, prime = ctx.comp.algos.get(ctx.prime), ctx.prime
    ref_label, ref = (ctx.method, ctx.algo) if ctx.algo is not None else (ctx.comp.baseline or "grpo", ctx.base)
    text = c.text.format(ref=ref_label)
    if pr is None or ref is None:
        return _row(text, c.paper, "n/a", UNCLEAR, "missing runs")
    p_est, r_est = getattr(pr, c.attr), getattr(ref, c.attr)
    ratio = _ratio(p_est.mean, r_est.mean)
    nc = ctx.timing(pr, ref) if c.timed else ""
    measured = (f"{prime} {p_est.fmt(c.digits, suffix=c.unit)} vs {ref_label} {r_est.fmt(c.digits, suffix=c.unit)} "
                f"(ratio {'not comparable' if nc else _fx(ratio, 2)})")
    if nc and p_est.mean is not None and r_est.mean is not None:
        return _row(text, c.paper, measured, UNCLEAR, nc)
    v, note = _directional(separation(p_est, r_est), +1, True, f"{prime} costlier", "the paper gives only an upper figure")
    return _row(text, c.paper, measured, v, note)


# ------------------------------------------------------------------------------------------ the claims

_EFF = f"{PAPER_EFFICIENCY}x training efficiency vs GRPO"
PAPER_CLAIMS: list[Claim] = [
    Claim(f"{_EFF} (steps to reach GRPO's best accuracy)", f"{PAPER_EFFICIENCY}x", efficiency_rule, attr="steps",
          ratio="efficiency_steps", bound=PAPER_EFFICIENCY, digits=0),
    Claim(f"{_EFF} (wall time to reach GRPO's best accuracy)", f"{PAPER_EFFICIENCY}x", efficiency_rule, attr="time",
          ratio="efficiency_time", bound=PAPER_EFFICIENCY, digits=1, unit=" s", timed=True),
    Claim("+17.5% test accuracy vs GRPO (final held-out accuracy)", "+17.5%", accuracy_rule, attr="final_accuracy",
          ratio="accuracy_gain_rel", bound=PAPER_ACCURACY_GAIN_REL, what="more accurate"),
    Claim("Policy entropy higher than GRPO's (mean over the last third of steps)", "higher", directional_rule,
          attr="entropy_last_third", ratio="entropy_ratio", what="higher"),
    Claim("Policy entropy stays stable (last-third / first-third mean)", "stable", band_rule,
          attr="entropy_retention"),
    Claim("Responses about 1/3 shorter than GRPO's (final mean length)", "~0.67x", directional_rule,
          attr="final_length", ratio="length_ratio", direction=-1, bound=PAPER_LENGTH_RATIO_MAX, digits=1,
          what="shorter"),
    Claim("No extra compute vs GRPO (step time)", "1.0x", compute_rule, attr="step_time", ratio="step_time_ratio",
          bound=COMPUTE_TOLERANCE, digits=3, unit=" s", what="step time", timed=True),
    Claim("No extra compute vs GRPO (peak memory)", "1.0x", compute_rule, attr="peak_memory_mb",
          ratio="peak_memory_ratio", bound=COMPUTE_TOLERANCE, digits=0, unit=" MB", what="peak memory"),
    Claim("PRIME costs more than {ref} (step time)", "up to 6.7x GPU hours", prime_cost_rule, attr="step_time",
          digits=3, unit=" s", timed=True),
    Claim("PRIME costs more than {ref} (peak memory)", "up to 6.7x GPU hours", prime_cost_rule,
          attr="peak_memory_mb", digits=0, unit=" MB"),
]


def claims_table(comp: Any, *, method: str = "spro", prime: str = "prime",
                 claims: list[Claim] | None = None) -> list[dict[str, str]]:
    """The paper's claims (``claims``, default :data:`PAPER_CLAIMS`) beside the measured figures, each with a
    verdict (HOLDS, DOES_NOT_HOLD, UNCLEAR) and a note on why. ``comp`` (a ``Comparison``) must have been
    aggregated with GRPO as its baseline; ``method`` / ``prime`` are the labels of the SPRO and PRIME runs.
    Rules: ``CLAIM_RULES``. Rows are dicts with keys "claim", "paper", "measured", "verdict", "note"."""
    ctx = _Context(comp, method, prime)
    return [c.rule(c, ctx) for c in (PAPER_CLAIMS if claims is None else claims)]
