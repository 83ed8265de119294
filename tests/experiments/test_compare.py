"""spro.experiments.compare: statistics, run-dir reading, aggregation, time to target, claims verdicts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from spro.experiments.compare import (
    DOES_NOT_HOLD,
    HOLDS,
    UNCLEAR,
    ablation_table,
    aggregate,
    claims_table,
    comparison_table,
    load_jsonl,
    markdown_table,
    mean_ci,
    separation,
    steps_to_reach,
    summarize_run,
    t_quantile,
)

# ------------------------------------------------------------------------------ fake run dirs


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def make_run(
    d: Path,
    *,
    acc: list[float],
    eval_every: int = 10,
    entropy: float | list[float] = 1.0,
    length: float = 20.0,
    step_time: float = 1.0,
    mem: float = 100.0,
    n_steps: int | None = None,
    reward: float = 0.5,
    load: dict | None = None,
) -> Path:
    """A run dir: evals at steps 0, eval_every, ... with accuracies ``acc``; one metrics row per step
    1..n_steps (default: the last eval step), time = step * step_time; a load record (``load``, default:
    grid "g" with two trainers at once all the time, as `spro compare --jobs 2` records)."""
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "load.jsonl", [load or {"grid": "g", "jobs": 2, "concurrency_s": {"2": 100.0}}])
    n_steps = n_steps if n_steps is not None else eval_every * (len(acc) - 1)
    ent = entropy if isinstance(entropy, list) else [entropy] * n_steps
    write_jsonl(
        d / "metrics.jsonl",
        [
            {
                "step": s,
                "time": s * step_time,
                "entropy": ent[s - 1],
                "length/mean": length,
                "reward/mean": reward,
                "time/step": step_time,
                "memory/peak_mb": mem,
            }
            for s in range(1, n_steps + 1)
        ],
    )
    write_jsonl(
        d / "eval.jsonl",
        [
            {"step": i * eval_every, "time": i * eval_every * step_time, "eval/accuracy": a, "eval/length_mean": length, "eval/n": 100}
            for i, a in enumerate(acc)
        ],
    )
    return d


# ------------------------------------------------------------------------------ statistics


def test_t_quantile_matches_tables():
    table = {1: 12.7062, 2: 4.3027, 3: 3.1824, 4: 2.7764, 5: 2.5706, 9: 2.2622, 19: 2.0930, 30: 2.0423}
    for df, q in table.items():
        assert t_quantile(0.975, df) == pytest.approx(q, abs=1e-4)
    assert t_quantile(0.995, 4) == pytest.approx(4.6041, abs=1e-4)
    assert t_quantile(0.025, 3) == pytest.approx(-3.1824, abs=1e-4)
    assert t_quantile(0.5, 7) == 0.0
    with pytest.raises(ValueError):
        t_quantile(0.975, 0)
    with pytest.raises(ValueError):
        t_quantile(1.0, 3)


def test_mean_ci_by_hand():
    e = mean_ci([0.5, 0.6, 0.7])
    # sd = 0.1, half width = t_{0.975,2} * 0.1 / sqrt(3) = 4.302653 * 0.057735 = 0.248414
    assert e.mean == pytest.approx(0.6)
    assert e.half_width == pytest.approx(0.248414, abs=1e-6)
    assert (e.low, e.high) == pytest.approx((0.6 - 0.248414, 0.6 + 0.248414), abs=1e-6)
    assert e.n == 3
    assert e.fmt(3) == "0.600 ± 0.248"
    one = mean_ci([0.42, None, float("nan")])
    assert one.n == 1 and one.mean == 0.42 and one.low is None and one.high is None
    assert one.fmt(2) == "0.42 ± n/a"
    assert mean_ci([]).fmt() == "n/a"
    assert separation(one, e) is None
    assert separation(mean_ci([1.0, 1.1, 1.2]), mean_ci([0.0, 0.1, 0.2])) == 1
    assert separation(mean_ci([0.0, 0.1, 0.2]), mean_ci([1.0, 1.1, 1.2])) == -1
    assert separation(mean_ci([1.0, 1.1]), mean_ci([0.0, 0.1])) == 0  # t_{0.975,1} = 12.7: wide
    assert separation(mean_ci([0.0, 1.0]), mean_ci([0.4, 0.6])) == 0


# ------------------------------------------------------------------------------ reading


def test_load_jsonl_tolerance(tmp_path):
    assert load_jsonl(tmp_path / "nope.jsonl") == []
    p = tmp_path / "m.jsonl"
    p.write_text('{"step": 2, "a": 1}\n\n{"step": 1, "a": 5}\n{"step": 2, "a": 3}\n{"no_step": 1}\n{"step": 3, "a"')
    with pytest.warns(UserWarning):
        rows = load_jsonl(p)
    assert [(r["step"], r["a"]) for r in rows] == [(1, 5), (2, 3)]  # sorted, last duplicate wins
    p.write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"m\.jsonl:2"):
        load_jsonl(p)
    p.write_text('[1, 2]\n{"step": 2}\n')
    with pytest.raises(ValueError, match="JSON object"):
        load_jsonl(p)


def test_summarize_run_by_hand(tmp_path):
    ent = [3.0, 3.0, 3.0, 2.0, 2.0, 2.0, 1.0, 1.0, 1.0]
    d = make_run(tmp_path / "r", acc=[0.1, 0.5, 0.4], eval_every=4, entropy=ent + [1.0], n_steps=9)
    # overwrite metrics with per-step step times / memory that differ
    rows = [json.loads(x) for x in (d / "metrics.jsonl").read_text().splitlines()]
    for r, st, mem, ln in zip(rows, [9.0, 1, 2, 3, 1, 2, 3, 1, 2], [10, 50, 20, 30, 40, 10, 10, 10, 10], range(10, 19)):
        r["time/step"], r["memory/peak_mb"], r["length/mean"] = st, mem, float(ln)
    del rows[4]["entropy"]  # a missing key is tolerated
    write_jsonl(d / "metrics.jsonl", rows)
    s = summarize_run(d)
    assert s.n_steps == 9 and s.last_step == 9 and s.total_time == 9.0
    assert s.final_accuracy == 0.4 and s.best_accuracy == 0.5 and s.best_accuracy_step == 4
    # entropy series without step 5: [3,3,3,2,2,1,1,1] -> thirds of 8 are 2 values
    assert s.entropy_first_third == 3.0 and s.entropy_last_third == 1.0
    assert s.entropy_retention == pytest.approx(1 / 3)
    assert s.final_entropy == 1.0  # ceil(8 / 10) = 1 last value
    vals = [3, 3, 3, 2, 2, 1, 1, 1]
    m = sum(vals) / 8
    assert s.entropy_std == pytest.approx(math.sqrt(sum((v - m) ** 2 for v in vals) / 7))
    xs = [1, 2, 3, 4, 6, 7, 8, 9]
    mx = sum(xs) / 8
    slope = sum((x - mx) * (v - m) for x, v in zip(xs, vals)) / sum((x - mx) ** 2 for x in xs)
    assert s.entropy_slope_per_100 == pytest.approx(100 * slope)
    assert s.step_time == pytest.approx((1 + 2 + 3 + 1 + 2 + 3 + 1 + 2) / 8)  # first step excluded
    assert s.peak_memory_mb == 50
    assert s.final_length == 18.0  # ceil(9/10) = 1 step
    assert s.mean_length == pytest.approx(14.0)
    assert steps_to_reach(s, 0.45) == (4, 4.0)
    assert steps_to_reach(s, 0.1) == (0, 0.0)
    assert steps_to_reach(s, 0.6) == (None, None)


def test_summarize_empty_run(tmp_path):
    (tmp_path / "empty").mkdir()
    s = summarize_run(tmp_path / "empty")
    assert s.n_steps == 0 and s.final_accuracy is None and s.step_time is None and s.entropy_retention is None
    with pytest.raises(FileNotFoundError):
        summarize_run(tmp_path / "missing")


# ------------------------------------------------------------------------------ aggregation


def test_aggregate_time_to_target_and_ratios(tmp_path):
    # GRPO bests: 0.5, 0.6, 0.7 -> target 0.6; reached at steps 20 (seed 1), 30 (seed 2); seed 0 never (censored at 30)
    grpo = [
        make_run(tmp_path / "grpo/0", acc=[0.1, 0.3, 0.5, 0.5], step_time=2.0, length=30, mem=100),
        make_run(tmp_path / "grpo/1", acc=[0.1, 0.4, 0.6, 0.6], step_time=2.0, length=30, mem=100),
        make_run(tmp_path / "grpo/2", acc=[0.1, 0.2, 0.5, 0.7], step_time=2.0, length=30, mem=100),
    ]
    # SPRO reaches 0.6 at steps 10, 10, 20
    spro = [
        make_run(tmp_path / "spro/0", acc=[0.1, 0.6, 0.7, 0.7], step_time=2.0, length=18, mem=100),
        make_run(tmp_path / "spro/1", acc=[0.1, 0.65, 0.7, 0.8], step_time=2.0, length=20, mem=100),
        make_run(tmp_path / "spro/2", acc=[0.1, 0.5, 0.6, 0.9], step_time=2.0, length=22, mem=100),
    ]
    comp = aggregate({"grpo": grpo, "spro": spro}, baseline="grpo")
    assert comp.target_accuracy == pytest.approx(0.6)
    g, s = comp.algos["grpo"], comp.algos["spro"]
    assert g.steps_to_target == [None, 20, 30] and g.n_reached == 2
    assert g.time_to_target == [None, 40.0, 60.0]
    assert s.steps_to_target == [10, 10, 20] and s.n_reached == 3
    assert g.steps_to_target_censored.mean == pytest.approx((30 + 20 + 30) / 3)
    assert g.steps_to_target_reached.mean == pytest.approx(25)
    assert s.steps_to_target_censored.mean == pytest.approx(40 / 3)
    r = comp.ratios["spro"]
    assert r["efficiency_steps"] == pytest.approx((80 / 3) / (40 / 3))
    assert r["efficiency_time"] == pytest.approx(2.0)
    assert r["accuracy_gain_abs"] == pytest.approx(0.8 - 0.6)
    assert r["accuracy_gain_rel"] == pytest.approx(0.2 / 0.6)
    assert r["length_ratio"] == pytest.approx(20 / 30)
    assert r["step_time_ratio"] == pytest.approx(1.0)
    assert comp.ratios["grpo"]["efficiency_steps"] == pytest.approx(1.0)
    # final accuracy CI by hand for SPRO: [0.7, 0.8, 0.9]
    assert s.final_accuracy.mean == pytest.approx(0.8)
    assert s.final_accuracy.half_width == pytest.approx(4.302653 * 0.1 / math.sqrt(3), abs=1e-6)
    rows = comparison_table(comp)
    assert rows[0]["algorithm"] == "grpo" and "2/3 reached" in rows[0]["steps to target"]
    d = json.loads(json.dumps(comp.to_dict()))
    assert d["target_accuracy"] == pytest.approx(0.6) and d["algos"]["grpo"]["n_reached"] == 2
    assert d["algos"]["spro"]["steps_to_target"] == [10, 10, 20]
    assert d["algos"]["spro"]["final_accuracy"]["values"] == pytest.approx([0.7, 0.8, 0.9])
    assert rows[1]["efficiency (steps)"] == "2.00x"
    with pytest.raises(ValueError):
        aggregate({"x": []})


# ------------------------------------------------------------------------------ claims


def scenario(tmp_path, *, spro_acc, grpo_acc, spro_kw=None, grpo_kw=None, prime_kw=None, seeds=3):
    """Build runs whose seeds differ by small offsets (so intervals are narrow but defined)."""
    spro_kw, grpo_kw = spro_kw or {}, grpo_kw or {}
    runs = {"grpo": [], "spro": []}
    for i in range(seeds):
        eps = 0.01 * (i - 1)
        runs["grpo"].append(make_run(tmp_path / f"grpo/{i}", acc=[a + eps for a in grpo_acc], **_jit(grpo_kw, eps)))
        runs["spro"].append(make_run(tmp_path / f"spro/{i}", acc=[a + eps for a in spro_acc], **_jit(spro_kw, eps)))
        if prime_kw is not None:
            runs.setdefault("prime", []).append(
                make_run(tmp_path / f"prime/{i}", acc=[a + eps for a in grpo_acc], **_jit(prime_kw, eps))
            )
    return aggregate(runs, baseline="grpo")


def _jit(kw, eps):
    out = dict(kw)
    for k in ("length", "step_time", "mem"):
        if k in out:
            out[k] = out[k] * (1 + eps)
    if "entropy" in out and isinstance(out["entropy"], list):
        out["entropy"] = [e * (1 + eps) for e in out["entropy"]]
    elif "entropy" in out:
        out["entropy"] = out["entropy"] * (1 + eps)
    return out


def verdicts(rows):
    return {r["claim"].split(" (")[0]: r["verdict"] for r in rows}


def by_prefix(rows, prefix):
    hits = [r for r in rows if r["claim"].startswith(prefix)]
    assert len(hits) >= 1, prefix
    return hits


def test_claims_all_hold(tmp_path):
    n = 40
    flat = [1.0] * n
    falling = [2.0] * 14 + [1.2] * 13 + [0.5] * 13
    comp = scenario(
        tmp_path,
        grpo_acc=[0.1, 0.2, 0.3, 0.35, 0.5],
        spro_acc=[0.1, 0.6, 0.7, 0.75, 0.8],
        grpo_kw=dict(entropy=falling, length=30.0, step_time=1.0, mem=100.0),
        spro_kw=dict(entropy=flat, length=18.0, step_time=1.02, mem=101.0),
        prime_kw=dict(entropy=flat, length=25.0, step_time=2.0, mem=180.0),
    )
    rows = claims_table(comp)
    assert {r["verdict"] for r in rows} == {HOLDS}, markdown_table(rows)
    assert set(rows[0]) == {"claim", "paper", "measured", "verdict", "note"}
    # GRPO's target is 0.5 (seed bests 0.49 / 0.50 / 0.51): two seeds reach it at step 40, one is
    # censored at 40; SPRO reaches it at step 10 in every seed -> ratio 4.0
    assert comp.ratios["spro"]["efficiency_steps"] == pytest.approx(4.0)
    assert comp.algos["grpo"].steps_to_target == [None, 40, 40]
    assert "lower bound" in by_prefix(rows, "3.4x")[0]["note"]


def test_claims_do_not_hold_and_magnitude(tmp_path):
    comp = scenario(
        tmp_path,
        grpo_acc=[0.1, 0.3, 0.5, 0.6],
        spro_acc=[0.1, 0.3, 0.5, 0.62],  # reached at the same step: ratio 1.0, gain 3% relative
        grpo_kw=dict(entropy=1.0, length=30.0, step_time=1.0, mem=100.0),
        spro_kw=dict(entropy=0.5, length=28.0, step_time=1.5, mem=150.0),
        prime_kw=dict(entropy=1.0, length=30.0, step_time=0.5, mem=50.0),
    )
    rows = claims_table(comp)
    acc = by_prefix(rows, "+17.5%")[0]
    # the accuracy intervals overlap: [0.61, 0.62, 0.63] vs [0.59, 0.60, 0.61] -> CIs 0.62 ± 0.025 and 0.6 ± 0.025
    assert acc["verdict"] == UNCLEAR and "overlap" in acc["note"]
    assert by_prefix(rows, "Policy entropy higher")[0]["verdict"] == DOES_NOT_HOLD
    assert by_prefix(rows, "Policy entropy stays stable")[0]["verdict"] == HOLDS  # constant entropy
    length = by_prefix(rows, "Responses about 1/3 shorter")[0]
    assert length["verdict"] == DOES_NOT_HOLD and "direction significant" in length["note"]  # 28 vs 30: only 7%
    compute = by_prefix(rows, "No extra compute")
    assert [r["verdict"] for r in compute] == [DOES_NOT_HOLD, DOES_NOT_HOLD]
    assert [r["verdict"] for r in by_prefix(rows, "PRIME costs more")] == [DOES_NOT_HOLD, DOES_NOT_HOLD]
    eff = by_prefix(rows, "3.4x")
    # both reach GRPO's target (0.6) at step 30 (GRPO's seed 0 is censored there): same steps ->
    # unclear; but SPRO's steps take 1.5x longer -> significantly slower in wall time
    assert comp.ratios["spro"]["efficiency_steps"] == pytest.approx(1.0)
    assert [r["verdict"] for r in eff] == [UNCLEAR, DOES_NOT_HOLD]
    assert "opposite to the claim" in eff[1]["note"]


def test_claims_unclear_with_one_seed_and_missing_runs(tmp_path):
    comp = scenario(
        tmp_path,
        grpo_acc=[0.1, 0.2, 0.3],
        spro_acc=[0.1, 0.8, 0.9],
        grpo_kw=dict(length=30.0, step_time=1.0),
        spro_kw=dict(length=10.0, step_time=1.5),
        seeds=1,
    )
    rows = claims_table(comp)
    v = {r["claim"]: r["verdict"] for r in rows}
    for claim, verdict in v.items():
        if claim.startswith("PRIME"):
            assert verdict == UNCLEAR  # no PRIME runs
        elif claim.startswith("No extra compute") and "memory" in claim:
            assert verdict == HOLDS  # equal memory: ratio 1.0 <= 1.05 needs no interval
        else:
            assert verdict == UNCLEAR, (claim, verdict)
    # a comparison without the SPRO label: everything about SPRO is unclear, nothing crashes
    comp2 = aggregate({"grpo": [tmp_path / "grpo/0"]}, baseline="grpo")
    assert {r["verdict"] for r in claims_table(comp2)} == {UNCLEAR}


def test_efficiency_not_reached(tmp_path):
    # SPRO never reaches GRPO's best (0.5) -> does not hold; partially reached -> unclear
    comp = scenario(tmp_path / "a", grpo_acc=[0.1, 0.3, 0.5], spro_acc=[0.1, 0.2, 0.3])
    eff = by_prefix(claims_table(comp), "3.4x")
    assert [r["verdict"] for r in eff] == [DOES_NOT_HOLD, DOES_NOT_HOLD]
    assert "never reached" in eff[0]["note"]
    # SPRO seeds: 0.49, 0.50, 0.51 at the end vs target 0.5 -> 2/3 reach
    comp = scenario(tmp_path / "b", grpo_acc=[0.1, 0.3, 0.5], spro_acc=[0.1, 0.2, 0.5])
    eff = by_prefix(claims_table(comp), "3.4x")
    assert [r["verdict"] for r in eff] == [UNCLEAR, UNCLEAR]
    assert "2/3" in eff[0]["note"]


def test_efficiency_holds_only_with_magnitude(tmp_path):
    # GRPO reaches its (mean) best only at step 40, SPRO at step 10: ratio >= 3.4 -> holds
    grpo = [0.1, 0.2, 0.3, 0.4, 0.6]
    comp = scenario(tmp_path / "a", grpo_acc=grpo, spro_acc=[0.1, 0.7, 0.7, 0.7, 0.7])
    eff = by_prefix(claims_table(comp), "3.4x")[0]
    assert comp.ratios["spro"]["efficiency_steps"] == pytest.approx(4.0)
    assert eff["verdict"] == HOLDS
    # SPRO at step 20 in every seed: 2x faster, significant, but short of 3.4x -> does not hold
    comp = scenario(tmp_path / "b", grpo_acc=grpo, spro_acc=[0.1, 0.2, 0.7, 0.7, 0.7])
    eff = by_prefix(claims_table(comp), "3.4x")[0]
    assert comp.ratios["spro"]["efficiency_steps"] == pytest.approx(2.0)
    assert eff["verdict"] == DOES_NOT_HOLD and "direction significant" in eff["note"]


def test_ablation_and_markdown(tmp_path):
    runs = {
        "beta=0.01": [make_run(tmp_path / "a/0", acc=[0.1, 0.5]), make_run(tmp_path / "a/1", acc=[0.1, 0.7])],
        "pooled|baseline": [make_run(tmp_path / "b/0", acc=[0.1, 0.4], step_time=0.25)],
    }
    rows = ablation_table(runs)
    assert [r["variant"] for r in rows] == ["beta=0.01", "pooled|baseline"]
    assert rows[0]["final acc"] == mean_ci([0.5, 0.7]).fmt(3)
    assert rows[1]["final acc"] == "0.400 ± n/a"
    assert rows[1]["step time (s)"] == "0.250 ± n/a"
    md = markdown_table(rows)
    assert md.splitlines()[0].startswith("| variant | seeds | final acc")
    assert "pooled\\|baseline" in md and len(md.splitlines()) == 4


def test_t_quantile_table_fallback_without_scipy(monkeypatch):
    """Without scipy the quantiles come from a table: exact at tabulated df, within 1e-3 between them;
    other p stop with an error that says to install scipy."""
    import builtins
    import sys

    scipy_t = None
    try:
        from scipy.stats import t as scipy_t
    except ImportError:
        pass
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError("no scipy here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    monkeypatch.delitem(sys.modules, "scipy.stats", raising=False)
    assert t_quantile(0.975, 2) == pytest.approx(4.302653, abs=1e-6)
    assert t_quantile(0.025, 3) == pytest.approx(-3.182446, abs=1e-6)
    for df in (1, 2, 5, 29, 30, 35, 45, 80, 200, 10_000):
        for p in (0.95, 0.975, 0.995):
            got = t_quantile(p, df)
            if scipy_t is not None:
                assert got == pytest.approx(float(scipy_t.ppf(p, df)), abs=1e-3), (p, df)
    with pytest.raises(ValueError, match="install scipy"):
        t_quantile(0.9, 3)


# ------------------------------------------------------------------------------ differences and timing under load


def test_welch_difference_by_hand():
    from scipy import stats as sps

    from spro.experiments.compare import difference

    a, b = [0.61, 0.65, 0.70, 0.66], [0.50, 0.58, 0.52]
    d = difference(mean_ci(a), mean_ci(b))
    ref = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert d.mean == pytest.approx(sum(a) / 4 - sum(b) / 3)
    assert (d.low, d.high) == pytest.approx((ref.low, ref.high))
    # by hand: se = sqrt(va/na + vb/nb), Welch-Satterthwaite df
    va, vb = 0.0013666666666666659 / 4, 0.0017333333333333326 / 3
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 2)
    assert d.high - d.mean == pytest.approx(sps.t.ppf(0.975, df) * math.sqrt(va + vb))
    assert difference(mean_ci([0.5]), mean_ci(b)).has_ci is False  # one seed: no interval
    assert difference(mean_ci([]), mean_ci(b)).mean is None
    same = difference(mean_ci([0.5, 0.5]), mean_ci([0.25, 0.25]))
    assert (same.low, same.mean, same.high) == (0.25, 0.25, 0.25)


def test_welch_difference_without_scipy_is_wider(monkeypatch):
    import builtins

    from spro.experiments.compare import difference

    a, b = mean_ci([0.61, 0.65, 0.70, 0.66]), mean_ci([0.50, 0.58, 0.52])
    with_scipy = difference(a, b)
    real_import = builtins.__import__

    def no_scipy(name, *args, **kwargs):
        if name.startswith("scipy"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_scipy)
    without = difference(a, b)
    assert without.mean == with_scipy.mean and without.high > with_scipy.high  # df rounded down


ALONE = {"grid": "g", "jobs": 2, "concurrency_s": {"1": 100.0}}
PAIRED = {"grid": "g", "jobs": 2, "concurrency_s": {"2": 100.0}}


def test_step_time_verdict_only_under_equal_load(tmp_path):
    """The hidden run's trap: SPRO's runs had the CPU to themselves, GRPO's shared it -> SPRO/GRPO 0.52.
    That must be 'not comparable', never 'holds'."""
    kw = dict(grpo_acc=[0.1, 0.3, 0.5], spro_acc=[0.1, 0.5, 0.7])
    unequal = scenario(tmp_path / "u", **kw, grpo_kw=dict(step_time=1.0, load=PAIRED),
                       spro_kw=dict(step_time=0.52, load=ALONE))
    assert unequal.ratios["spro"]["step_time_ratio"] == pytest.approx(0.52, rel=0.02)
    assert not unequal.timing["spro"].comparable
    rows = claims_table(unequal)
    step = by_prefix(rows, "No extra compute vs GRPO (step time)")[0]
    assert step["verdict"] == UNCLEAR
    assert step["note"] == "not comparable (runs shared the CPU unequally: 1 vs 2 trainers at once)"
    assert step["measured"].endswith("(ratio not comparable)") and "ratio 0.5" not in step["measured"]
    wall = by_prefix(rows, "3.4x training efficiency vs GRPO (wall time")[0]
    assert wall["verdict"] == UNCLEAR and wall["measured"].startswith("not comparable (GRPO")
    assert [r["step time ratio"] for r in comparison_table(unequal)] == ["1.00", "not comparable"]
    # the same figures timed under equal load are judged
    equal = scenario(tmp_path / "e", **kw, grpo_kw=dict(step_time=1.0, load=PAIRED),
                     spro_kw=dict(step_time=0.52, load=PAIRED))
    assert equal.timing["spro"].comparable
    step = by_prefix(claims_table(equal), "No extra compute vs GRPO (step time)")[0]
    assert step["verdict"] == HOLDS and "(ratio 0.52)" in step["measured"]


@pytest.mark.parametrize("spro_load, why", [
    ({"grid": "g", "concurrency_s": {"2": 80.0, "1": 20.0}}, "ran 80% of its time with 2 at once"),
    ({"grid": "other", "concurrency_s": {"2": 100.0}}, "the arms were timed in different `spro compare` runs"),
    (None, "not recorded"),
])
def test_timing_not_comparable(tmp_path, spro_load, why):
    from spro.experiments.compare import timing_comparable

    base = make_run(tmp_path / "g", acc=[0.1, 0.2], load=PAIRED)
    other = make_run(tmp_path / "s", acc=[0.1, 0.2], load=spro_load)
    if spro_load is None:
        (other / "load.jsonl").unlink()
    comp = aggregate({"grpo": [base], "spro": [other]}, baseline="grpo")
    t = timing_comparable(comp.algos["spro"], comp.algos["grpo"])
    assert not t.comparable and why in t.why and t.text().startswith("not comparable (")
    assert comp.timing["spro"] == t and comp.timing["grpo"].comparable


def test_load_records_resumed_runs_and_bad_lines(tmp_path):
    from spro.experiments.compare import load_records, run_load

    p = tmp_path / "load.jsonl"
    # a run resumed in a second grid: its time adds up across the launches
    write_jsonl(p, [{"grid": "a", "concurrency_s": {"2": 50.0, "1": 2.0}},
                    {"grid": "b", "concurrency_s": {"2": 48.0}}])
    ld = run_load(load_records(p))
    assert ld.grids == ("a", "b") and ld.level == 2 and ld.share == pytest.approx(0.98) and ld.seconds == 100.0
    assert run_load([]) is None
    p.write_text('{"grid": "a"}\n{"grid": "a", "concurrency_s": {}}\n')
    with pytest.raises(ValueError, match=r"load.jsonl:1: expected a load record"):
        load_records(p)
    p.write_text('{"grid": "a", "concurrency_s": {"1": 3}}\n{"grid": "a", "conc')
    with pytest.warns(UserWarning, match="truncated last line"):
        assert len(load_records(p)) == 1
