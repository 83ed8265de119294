"""spro.experiments.report: curves across seeds, PNG plots, and report.md with working relative links."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from spro.experiments.compare import RunData, load_run, t_quantile
from spro.experiments.report import curve, plot_metric, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def fake_run(d: Path, *, seed: int, n_steps: int = 20, step_time: float = 0.5, skill: float = 0.02,
             entropy: bool = True) -> Path:
    """Synthetic metrics.jsonl / eval.jsonl with a little seed-dependent noise."""
    rng = np.random.default_rng(seed)
    d.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(1, n_steps + 1):
        row = {
            "step": s,
            "time": s * step_time * (1 + 0.05 * seed),
            "reward/mean": min(1.0, skill * s + 0.05 * rng.standard_normal()),
            "length/mean": 30 - 0.5 * s + rng.standard_normal(),
            "time/step": step_time,
            "memory/peak_mb": 100 + seed,
        }
        if entropy:
            row["entropy"] = 1.5 - 0.02 * s + 0.01 * rng.standard_normal()
        rows.append(row)
    write_jsonl(d / "metrics.jsonl", rows)
    write_jsonl(
        d / "eval.jsonl",
        [{"step": s, "time": s * step_time, "eval/accuracy": min(1.0, skill * s + 0.01 * seed), "eval/length_mean": 20.0, "eval/n": 1000}
         for s in range(0, n_steps + 1, 5)],
    )
    return d


def links_in(md: str) -> list[str]:
    return re.findall(r"!?\[[^\]]*\]\(([^)]+)\)", md)


def test_curve_mean_and_band_by_hand(tmp_path):
    a = tmp_path / "a"
    b = tmp_path / "b"
    c = tmp_path / "c"
    for d, vals in ((a, [1.0, 2.0, 3.0]), (b, [3.0, 4.0, 5.0]), (c, [2.0, 3.0])):  # c stops at step 2
        d.mkdir()
        write_jsonl(d / "metrics.jsonl", [{"step": i + 1, "time": 2.0 * (i + 1), "entropy": v} for i, v in enumerate(vals)])
    runs = [load_run(a), load_run(b), load_run(c)]
    cv = curve(runs, "entropy", x="step")
    assert cv.x.tolist() == [1.0, 2.0, 3.0]
    assert cv.n.tolist() == [3, 3, 2]
    assert cv.mean.tolist() == pytest.approx([2.0, 3.0, 4.0])
    # step 1: values 1, 3, 2 -> sd 1, half width t_{.975,2} / sqrt(3)
    hw = t_quantile(0.975, 2) / math.sqrt(3)
    assert (cv.low[0], cv.high[0]) == pytest.approx((2.0 - hw, 2.0 + hw))
    # step 3: only two seeds -> no band by default (fewer than 3 seeds); with min_band=2 the t interval:
    # values 3, 5 -> sd sqrt(2), half width t_{.975,1} * sqrt(2) / sqrt(2)
    assert np.isnan(cv.low[2]) and np.isnan(cv.high[2])
    cv2 = curve(runs, "entropy", x="step", min_band=2)
    assert cv2.high[2] - cv2.mean[2] == pytest.approx(t_quantile(0.975, 1))
    # the per-seed lines come with the curve
    assert [ys.tolist() for _, ys in cv.seeds] == [[1.0, 2.0, 3.0], [3.0, 4.0, 5.0], [2.0, 3.0]]
    # against time: interpolation inside each run's range only
    ct = curve(runs, "entropy", x="time", n_grid=5)
    assert ct.x.tolist() == pytest.approx([2.0, 3.0, 4.0, 5.0, 6.0])
    assert ct.n.tolist() == [3, 3, 3, 2, 2]
    assert ct.mean[1] == pytest.approx((1.5 + 3.5 + 2.5) / 3)
    # one seed: no band; smoothing is a trailing moving average
    single = curve([runs[0]], "entropy", smooth=2)
    assert single.mean.tolist() == pytest.approx([1.0, 1.5, 2.5])
    assert np.isnan(single.low).all()
    assert curve(runs, "not/logged") is None
    with pytest.raises(ValueError):
        curve(runs, "entropy", x="tokens")


def test_plot_metric_writes_png_or_nothing(tmp_path):
    runs = {"grpo": [load_run(fake_run(tmp_path / "g0", seed=0))]}
    p = plot_metric(runs, "reward/mean", tmp_path / "out" / "r.png", x="time")
    assert p is not None and p.read_bytes()[:8] == PNG_MAGIC
    assert plot_metric(runs, "not/logged", tmp_path / "out" / "n.png") is None
    assert not (tmp_path / "out" / "n.png").exists()


def test_write_report_with_claims(tmp_path):
    runs = {
        "grpo": [fake_run(tmp_path / "runs/grpo" / f"seed{i}", seed=i, skill=0.02) for i in range(3)],
        "spro": [fake_run(tmp_path / "runs/spro" / f"seed{i}", seed=i, skill=0.04) for i in range(3)],
        "prime": [fake_run(tmp_path / "runs/prime/seed0", seed=0, step_time=1.5)],
    }
    out = tmp_path / "report"
    path = write_report(runs, out, title="SPRO vs GRPO", command="spro compare --algos grpo,spro,prime --seeds 3",
                        notes="Closing note.", baseline="grpo")
    assert path == out / "report.md"
    md = path.read_text()
    assert md.startswith("# SPRO vs GRPO")
    assert "spro compare --algos grpo,spro,prime --seeds 3" in md and "Closing note." in md
    pngs = sorted(p.name for p in (out / "plots").glob("*.png"))
    assert pngs == sorted(f"{m}_vs_{x}.png" for m in ("eval_accuracy", "entropy", "response_length", "reward") for x in ("step", "time"))
    for p in (out / "plots").glob("*.png"):
        assert p.read_bytes()[:8] == PNG_MAGIC
    links = links_in(md)
    assert len(links) == 8
    for link in links:
        assert not Path(link).is_absolute()
        assert (out / link).is_file(), link
    # tables: summary, comparison, claims with the rule text
    assert "| run | seeds | final held-out acc | best held-out acc | final entropy | final mean length | mean step time (s) | peak memory (MB) |" in md
    assert "## Comparison with grpo" in md and "## Paper claims" in md
    assert "How the verdicts are decided" in md
    for verdict_cell in re.findall(r"\| (holds|does not hold|unclear) \|", md):
        assert verdict_cell in ("holds", "does not hold", "unclear")
    assert "± n/a" in md  # prime has one seed
    # spro learns twice as fast in these fake runs: its final accuracy beats grpo's
    row = next(ln for ln in md.splitlines() if ln.startswith("| spro | 3 |"))
    assert "0.810" in row  # min(1, 0.04 * 20 + 0.01 * seed) averaged over seeds 0..2
    # per-seed rows: grpo's target is 0.41 (bests 0.40/0.41/0.42), grpo seed 0 never gets there
    assert "| grpo | `../runs/grpo/seed0` | 20 | 0.400 | 0.400 | not reached |" in md
    assert "| spro | `../runs/spro/seed0` | 20 | 0.800 | 0.800 | 15 |" in md


def test_write_report_missing_keys_and_ablation(tmp_path):
    runs = {
        "beta=0.01": [fake_run(tmp_path / "a", seed=0, entropy=False)],
        "beta=0.1": [fake_run(tmp_path / "b", seed=1, entropy=False)],
    }
    (tmp_path / "empty").mkdir()
    runs["crashed"] = [tmp_path / "empty"]  # no files at all
    path = write_report(runs, tmp_path / "rep", title="Ablation", ablation=True)
    md = path.read_text()
    assert "## Ablation" in md and "| variant |" in md
    assert "## Paper claims" not in md
    assert not (tmp_path / "rep/plots/entropy_vs_step.png").exists()
    assert "No data logged for: entropy vs step, entropy vs time." in md
    for link in links_in(md):
        assert (tmp_path / "rep" / link).is_file(), link
    assert len(links_in(md)) == 6
    crashed = next(ln for ln in md.split("## Summary")[1].splitlines() if ln.startswith("| crashed |"))
    assert crashed.count("n/a") >= 5
    with pytest.raises(ValueError):
        write_report({}, tmp_path / "x", title="t")
    with pytest.raises(FileNotFoundError):
        write_report({"a": [tmp_path / "nope"]}, tmp_path / "x", title="t")


def test_setup_and_diagnostics_tables(tmp_path):
    import yaml

    from spro.experiments.compare import load_run
    from spro.experiments.report import diagnostics_table, setup_table

    run = fake_run(tmp_path / "p", seed=0)
    (run / "config.yaml").write_text(yaml.safe_dump({"algorithm": {"name": "prime", "loss_agg": None, "kl_coef": 0.0,
                                                                   "prime": {"refill": 1, "prm_beta": 0.05}}}))
    rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
    for i, r in enumerate(rows):
        r.update({"diag/first_error_top1_chance": 0.25, "diag/msa/first_error_top1": 0.5,
                  "diag/msa/first_error_auroc": 0.75, "kl": float(i), "drift/zero_var_adv_share": 0.1})
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    groups = {"prime": [load_run(run)]}
    (setup,) = setup_table(groups)
    assert setup["loss aggregation"] == "token-mean (its default)" and setup["options"] == "refill=1"
    (diag,) = diagnostics_table(groups)
    assert diag["msa top-1 / AUROC"] == "0.500 / 0.750" and diag["top-1 chance"] == "0.250"
    assert diag["prm top-1 / AUROC"] == "n/a" and diag["zero-var share of |A| (last third)"] == "0.100"
    n = len(rows)
    last_third = [float(i) for i in range(n) if rows[i]["step"] >= rows[0]["step"] + 2 / 3 * (rows[-1]["step"] - rows[0]["step"])]
    assert diag["KL (last third)"] == f"{sum(last_third) / len(last_third):.3f}"


# ------------------------------------------------------------------------------ issue 21 item 6: the paper report


def captured_axes(monkeypatch):
    """plot_metric's axes, captured when the figure is saved (the PNG is still written)."""
    import matplotlib.figure

    seen = []
    save = matplotlib.figure.Figure.savefig

    def spy(fig, *a, **k):
        seen.append(fig.axes[0])
        return save(fig, *a, **k)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    return seen


def write_values(d: Path, key: str, values: list[float]) -> RunData:
    d.mkdir(parents=True, exist_ok=True)
    write_jsonl(d / "metrics.jsonl", [{"step": i + 1, "time": float(i + 1), key: v} for i, v in enumerate(values)])
    return load_run(d)


def test_bands_clipped_to_the_metric_range_and_absent_below_three_seeds(tmp_path, monkeypatch):
    from spro.experiments.report import value_range

    # accuracy near 1 with a wide spread: the t band would pass 1 and is clipped there
    three = [write_values(tmp_path / f"a{i}", "eval/accuracy", v) for i, v in
             enumerate([[0.9, 1.0], [0.5, 1.0], [1.0, 0.6]])]
    raw = curve(three, "eval/accuracy")
    assert raw.high[0] > 1.0 and raw.low[1] < 1.0  # unclipped it leaves [0, 1]
    cv = curve(three, "eval/accuracy", clip=(0.0, 1.0))
    assert np.nanmax(cv.high) == 1.0 and np.nanmin(cv.low) >= 0.0
    assert cv.mean.tolist() == pytest.approx(raw.mean.tolist())  # the mean is not touched
    # the ranges: accuracy / AUROC in [0, 1], KL / entropy / length >= 0, the reward within the data
    groups = {"x": three}
    assert value_range("eval/accuracy", groups, "eval") == (0.0, 1.0)
    assert value_range("diag/msa/first_error_auroc", groups) == (0.0, 1.0)
    assert value_range("kl", groups) == (0.0, None) and value_range("entropy", groups) == (0.0, None)
    assert value_range("length/mean", groups) == (0.0, None)
    rewards = [write_values(tmp_path / f"r{i}", "reward/mean", v) for i, v in
               enumerate([[-0.5, 1.0], [0.0, 2.0], [0.2, 0.4]])]
    assert value_range("reward/mean", {"x": rewards}) == (-0.5, 2.0)
    assert value_range("tokens_per_s", groups) == (None, None)
    # KL of three seeds that are small and spread: no band below 0 in the plot
    kls = [write_values(tmp_path / f"k{i}", "kl", v) for i, v in enumerate([[0.0, 0.01], [0.3, 0.0], [0.0, 0.02]])]
    two = [write_values(tmp_path / f"t{i}", "kl", v) for i, v in enumerate([[0.0, 0.5], [0.4, 0.0]])]
    axes = captured_axes(monkeypatch)
    assert plot_metric({"three": kls, "two": two}, "kl", tmp_path / "kl.png") is not None
    (ax,) = axes
    bands = ax.collections  # fill_between: one band, for the arm with three seeds only
    assert len(bands) == 1
    ys = np.concatenate([p.vertices[:, 1] for p in bands[0].get_paths()])
    assert ys.min() >= 0.0
    with pytest.raises(ValueError, match="min_band"):
        curve(kls, "kl", min_band=1)


def test_plot_styles_keep_overlapping_arms_visible(tmp_path, monkeypatch):
    groups = {label: [load_run(fake_run(tmp_path / label / f"s{i}", seed=i)) for i in range(3)]
              for label in ("grpo", "spro", "prime")}  # identical data: the arms overlap exactly
    axes = captured_axes(monkeypatch)
    plot_metric(groups, "reward/mean", tmp_path / "r.png")
    (ax,) = axes
    thin = [ln for ln in ax.lines if ln.get_linewidth() < 1.0]
    means = [ln for ln in ax.lines if ln.get_linewidth() >= 1.0]
    assert len(thin) == 9 and all(ln.get_alpha() <= 0.5 for ln in thin)  # every seed, light
    assert [ln.get_label().split(" ")[0] for ln in means] == ["grpo", "spro", "prime"]
    assert len({ln.get_linestyle() for ln in means}) == 3 and len({ln.get_marker() for ln in means}) == 3
    assert len({ln.get_color() for ln in means}) == 3
    # the means lie above every band and every seed line, and each arm's mean at its own height
    top_under = max([ln.get_zorder() for ln in thin] + [c.get_zorder() for c in ax.collections])
    assert min(ln.get_zorder() for ln in means) > top_under
    assert len({ln.get_zorder() for ln in means}) == 3
    # the seed lines are the per-seed (smoothed) values, the mean their average
    assert np.mean([ln.get_ydata() for ln in thin[:3]], axis=0) == pytest.approx(means[0].get_ydata())


def test_main_table_appendix_csv_tex_and_claims_off(tmp_path):
    import csv

    runs = {
        "grpo": [fake_run(tmp_path / "runs/grpo" / f"seed{i}", seed=i, skill=0.02) for i in range(3)],
        "spro_b0.1": [fake_run(tmp_path / "runs/spro" / f"seed{i}", seed=i, skill=0.04) for i in range(3)],
    }
    out = tmp_path / "rep"
    md = write_report(runs, out, title="t", baseline="grpo", method="spro_b0.1").read_text()
    # the main table comes first, compact; the 16-column table is in the appendix
    main = md.index("## Main results")
    assert main < md.index("## Paper claims") < md.index("## Plots") < md.index("## Appendix")
    assert md.index("## Appendix") < md.index("### Comparison with grpo") < md.index("### Runs")
    header = next(ln for ln in md[main:].splitlines() if ln.startswith("| arm |"))
    assert header == ("| arm | seeds | final held-out acc | best held-out acc | Δ final acc vs grpo [95% CI] | "
                      "final entropy | final length | step time (s) | step time vs grpo |")
    # the fake runs have no load records: step times are not compared
    row = next(ln for ln in md[main:].splitlines() if ln.startswith("| spro_b0.1 |"))
    assert row.endswith("| not comparable |") and "+0.400 [" in row
    assert "Step time of spro_b0.1 vs grpo: not comparable (load during 6 of the 6 runs not recorded" in md
    # summary.csv: one row per arm with the interval bounds
    rows = list(csv.DictReader((out / "summary.csv").open()))
    assert [r["arm"] for r in rows] == ["grpo", "spro_b0.1"]
    for r in rows:
        for name in ("final_accuracy", "best_accuracy", "final_entropy", "final_length", "step_time_s"):
            lo, m, hi = (float(r[f"{name}_{k}"]) for k in ("ci_low", "mean", "ci_high"))
            assert lo <= m <= hi
    spro = rows[1]
    assert float(spro["final_accuracy_mean"]) == pytest.approx(0.81)
    assert float(spro["final_accuracy_diff_mean"]) == pytest.approx(0.40)
    assert float(spro["final_accuracy_diff_ci_low"]) < 0.40 < float(spro["final_accuracy_diff_ci_high"])
    assert spro["step_time_comparable"] == "false" and "not recorded" in spro["step_time_note"]
    # summary.tex: a booktabs table of the main table, special characters escaped
    tex = (out / "summary.tex").read_text()
    for part in (r"\begin{tabular}{lrrrrrrr}", r"\toprule", r"\midrule", r"\bottomrule", r"spro\_b0.1",
                 r"$0.810 \pm 0.025$", r"$+0.400$ [$", r"^\dagger$", r"\label{tab:spro-compare}"):
        assert part in tex, part
    assert "$$" not in tex and tex.count(r"\\") == 3  # header and two rows
    # --claims off
    md_off = write_report(runs, tmp_path / "off", title="t", baseline="grpo", claims=False).read_text()
    assert "## Paper claims" not in md_off and "How the verdicts are decided" not in md_off
    assert "## Main results" in md_off and "### Comparison with grpo" in md_off
    # without a baseline: no difference and no ratio columns, no claims
    md_nb = write_report(runs, tmp_path / "nb", title="t").read_text()
    assert "Δ final acc" not in md_nb and "step time vs" not in md_nb and "## Paper claims" not in md_nb
    assert (tmp_path / "nb" / "summary.csv").is_file() and r"\toprule" in (tmp_path / "nb" / "summary.tex").read_text()


def test_start_note_says_what_every_run_starts_from_and_flags_different_starts(tmp_path):
    """The report names the start model and its step-0 held-out accuracy; runs whose step-0 accuracies differ
    (a warm start rebuilt on another CPU is another model) or whose start models differ are flagged."""
    import yaml

    from spro.experiments.report import start_note

    def run(name: str, model: str, at0: float | None) -> RunData:
        d = tmp_path / name
        d.mkdir(parents=True)
        (d / "config.yaml").write_text(yaml.safe_dump({"model": {"name_or_path": model}}))
        evals = ([{"step": 0, "eval/accuracy": at0}] if at0 is not None else []) + [{"step": 50, "eval/accuracy": 0.6}]
        write_jsonl(d / "eval.jsonl", evals)
        return load_run(d)

    same = {"grpo": [run("g0", "warmstart:long-mid", 0.44), run("g1", "warmstart:long-mid", 0.44)],
            "spro": [run("s0", "warmstart:long-mid", 0.44)]}
    assert start_note(same) == ("Every run starts from `warmstart:long-mid` (held-out accuracy at step 0: 0.440 in "
                                "every evaluated run).")
    moved = {"grpo": [run("g2", "warmstart:long-mid", 0.44)], "spro": [run("s2", "warmstart:long-mid", 0.33)]}
    text = start_note(moved)
    assert "differs between runs" in text and "grpo/g2 0.440" in text and "spro/s2 0.330" in text
    other = {"grpo": [run("g3", "models/a", 0.3)], "spro": [run("s3", "models/b", 0.3)]}
    assert "start from different models" in start_note(other) and "spro/s3 `models/b`" in start_note(other)
    assert "no held-out evaluation at step 0" in start_note({"grpo": [run("g4", "m", None)]})
    # in the written report, under Setup
    out = tmp_path / "report"
    write_report({"grpo": [tmp_path / "g0", tmp_path / "g1"], "spro": [tmp_path / "s0"]}, out, title="t",
                 baseline="grpo", claims=False)
    md = (out / "report.md").read_text()
    assert md.index("## Setup") < md.index("Every run starts from `warmstart:long-mid`") < md.index("## Main results")
