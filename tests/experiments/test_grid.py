"""`spro compare` end to end on tiny runs, and the pieces of spro.experiments.grid / spro demo."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from spro.commands.demo import wilson
from spro.experiments.grid import Variant, parse_variant, run_status

TINY = ["total_steps=2", "eval_every=1", "data.eval_size=8", "rollout.max_new_tokens=8",
        "logging.tensorboard=false", "logging.progress_bar=false"]


def test_parse_variant():
    assert parse_variant("grpo") == Variant("grpo", ["algorithm.name=grpo"])
    v = parse_variant("b0.01:algorithm.name=spro, algorithm.beta=0.01")
    assert v == Variant("b0.01", ["algorithm.name=spro", "algorithm.beta=0.01"])
    with pytest.raises(ValueError, match="expected key=value"):
        parse_variant("x:algorithm.name")
    with pytest.raises(ValueError, match="names a folder"):
        parse_variant("a/b:algorithm.name=spro")


def test_wilson_interval_by_hand():
    lo, hi = wilson(50, 100)
    # p=0.5, z=1.96, n=100: centre 0.5, half-width 1.96*sqrt(0.25/100 + 1.96^2/40000)/(1+1.96^2/100)
    half = 1.96 * math.sqrt(0.0025 + 1.96**2 / 40000) / (1 + 1.96**2 / 100)
    assert lo == pytest.approx(0.5 - half) and hi == pytest.approx(0.5 + half)
    lo, hi = wilson(0, 10)
    assert lo == pytest.approx(0.0, abs=1e-12) and 0 < hi < 0.35


def test_compare_runs_reports_and_resumes(tmp_path, capsys):
    from spro.cli import main

    out = tmp_path / "cmp"
    args = ["compare", "--algos", "grpo,spro", "--seeds", "2", "--preset", "tiny-random", "--out", str(out),
            "--loss-agg", "token-mean", "--jobs", "2", *TINY]
    assert main(args) == 0
    for label in ("grpo", "spro"):
        for s in (0, 1):
            run = out / label / f"seed{s}"
            assert run_status(run, 2) == ("done", 2)
            rows = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
            assert [r["step"] for r in rows] == [1, 2]
            cfg = (run / "config.yaml").read_text()
            assert f"seed: {s}" in cfg and f"name: {label}" in cfg
    # same budget for every run: only seed, output_dir and the algorithm (with its own options) differ
    import yaml

    from spro.config import flatten

    a, b = (flatten(yaml.safe_load((out / arm / "requested_config.yaml").read_text()))
            for arm in ("grpo/seed0", "spro/seed1"))
    differing = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    assert [k for k in differing if not k.startswith(("algorithm.grpo.", "algorithm.spro."))] == [
        "algorithm.name", "output_dir", "seed"], differing
    report = (out / "report.md").read_text()
    assert "Paper claims" in report and "| grpo | 2 |" in report
    # the setup table states the aggregation every arm ran with (one for all: --loss-agg)
    assert "| grpo | grpo | token-mean |" in report and "| spro | spro | token-mean |" in report
    assert (out / "grpo" / "seed0" / "output.log").is_file()  # parallel runs write their output there
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["algos"]) == {"grpo", "spro"}
    # every run recorded the load it ran under; the main table, summary.csv and summary.tex are there
    for label in ("grpo", "spro"):
        for s in (0, 1):
            (rec,) = [json.loads(ln) for ln in (out / label / f"seed{s}" / "load.jsonl").read_text().splitlines()]
            assert rec["jobs"] == 2 and sum(rec["concurrency_s"].values()) > 0
    assert "## Main results" in report and "## Appendix" in report
    assert (out / "summary.csv").read_text().splitlines()[0].startswith("arm,seeds,baseline,final_accuracy_mean,")
    assert r"\toprule" in (out / "summary.tex").read_text()
    # running the same command again trains nothing; --claims off leaves the claims out
    capsys.readouterr()
    assert main([*args, "--claims", "off"]) == 0
    assert capsys.readouterr().out.count("done already") == 4
    assert "Paper claims" not in (out / "report.md").read_text()


def test_compare_resumes_a_partial_run(tmp_path):
    from spro.cli import main

    out = tmp_path / "cmp"
    base = ["compare", "--algos", "grpo", "--seeds", "1", "--preset", "tiny-random", "--out", str(out)]
    over = [t for t in TINY if not t.startswith("total_steps")]
    assert main([*base, *over, "total_steps=1", "save_every=1"]) == 0
    assert run_status(out / "grpo" / "seed0", 2) == ("partial", 1)
    # total_steps may grow on resume; the finished step is not redone
    assert main([*base, *over, "total_steps=2", "save_every=1"]) == 0
    rows = [json.loads(l) for l in (out / "grpo" / "seed0" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]


def test_compare_bad_input(tmp_path, capsys):
    from spro.cli import main

    assert main(["compare", "--algos", "grpo", "--seeds", "0", "--out", str(tmp_path)]) == 2
    assert "--seeds must be >= 1" in capsys.readouterr().err
    assert main(["compare", "--algos", "grpo", "--out", str(tmp_path), "optim.lrr=1"]) == 2
    assert "did you mean 'optim.lr'" in capsys.readouterr().err


def test_compare_restarts_an_attempt_that_died_before_its_first_checkpoint(tmp_path):
    """Its records are moved aside (seed0.old-1), not deleted, and the run starts afresh."""
    from spro.cli import main

    out = tmp_path / "cmp"
    dead = out / "grpo" / "seed0"
    dead.mkdir(parents=True)
    (dead / "metrics.jsonl").write_text('{"step": 1, "reward/mean": 0.5}\n')
    assert main(["compare", "--algos", "grpo", "--seeds", "1", "--preset", "tiny-random", "--out", str(out),
                 *[t for t in TINY if not t.startswith("total_steps")], "total_steps=1"]) == 0
    assert run_status(dead, 1) == ("done", 1)
    assert (out / "grpo" / "seed0.old-1" / "metrics.jsonl").read_text() == '{"step": 1, "reward/mean": 0.5}\n'


def test_report_only_reports_finished_runs_and_names_the_others(tmp_path, capsys):
    """--report-only never trains; a missing or partial run is left out with a line naming it."""
    from spro.cli import main

    out = tmp_path / "cmp"
    over = [t for t in TINY if not t.startswith("total_steps")]
    base = ["compare", "--algos", "grpo", "--preset", "tiny-random", "--out", str(out), *over]
    assert main([*base, "--seeds", "1", "total_steps=2"]) == 0  # grpo seed0: finished
    assert main([*base, "--seeds", "1", "--seed-offset", "1", "total_steps=1", "save_every=1"]) == 0
    capsys.readouterr()
    report = ["compare", "--report-only", "--algos", "grpo,spro", "--seeds", "3", "--preset", "tiny-random",
              "--out", str(out), *over, "total_steps=2"]
    assert main(report) == 0
    printed = capsys.readouterr().out
    assert f"left out of the report: {out / 'grpo' / 'seed1'} (partial: step 1 of 2)" in printed
    assert f"left out of the report: {out / 'grpo' / 'seed2'} (missing)" in printed
    assert f"left out of the report: {out / 'spro' / 'seed0'} (missing)" in printed
    assert not (out / "spro").exists() and run_status(out / "grpo" / "seed1", 2) == ("partial", 1)
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary["algos"]) == ["grpo"] and len(summary["algos"]["grpo"]["runs"]) == 1
    assert "| grpo | 1 |" in (out / "report.md").read_text()
    # nothing finished: a clear error, not a traceback
    assert main(["compare", "--report-only", "--algos", "spro", "--out", str(out), *over]) == 2
    assert "no finished run under" in capsys.readouterr().err


SLEEPER = textwrap.dedent("""
    import os, signal, sys, time
    from pathlib import Path
    out = Path(sys.argv[1])
    def term(signum, frame):
        (out / f"term-{os.getpid()}").write_text("saved")  # what a trainer does: save, then exit 143
        sys.exit(143)
    signal.signal(signal.SIGTERM, term)
    (out / f"pid-{os.getpid()}").write_text(str(os.getppid()))
    while True:
        time.sleep(0.05)
""")

PARENT = textwrap.dedent("""
    import sys, time
    from spro.experiments.grid import spawn_trainer
    spawn_trainer([sys.executable, "-c", sys.argv[1], sys.argv[2]])
    while True:
        time.sleep(0.05)
""")


def _wait_for(predicate, proc=None):
    while not predicate():
        assert proc is None or proc.poll() is None, "the process ended first"
        time.sleep(0.05)


def test_the_trainers_of_a_killed_compare_die_with_it(tmp_path):
    import psutil

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    parent = subprocess.Popen([sys.executable, "-c", PARENT, SLEEPER, str(tmp_path)], env=env)
    _wait_for(lambda: list(tmp_path.glob("pid-*")), parent)
    (pid_file,) = tmp_path.glob("pid-*")
    child = psutil.Process(int(pid_file.name.split("-")[1]))
    assert child.ppid() == parent.pid and os.getsid(child.pid) == child.pid  # a session of its own
    parent.kill()  # SIGKILL: no handler of the parent runs
    parent.wait()
    child.wait()  # the kernel sent it SIGTERM: it saved and ended
    assert (tmp_path / f"term-{child.pid}").read_text() == "saved"


def test_ctrl_c_stops_every_trainer_with_one_line(tmp_path, monkeypatch):
    from spro.experiments import grid

    started = []
    real_spawn = grid.spawn_trainer

    def spawn(cmd, **kw):
        run_dir = Path(cmd[cmd.index("--config") + 1]).parent
        proc = real_spawn([sys.executable, "-c", SLEEPER, str(run_dir)], **kw)
        started.append((proc, run_dir))
        return proc

    def ctrl_c(seconds):  # the grid waits on its trainers: Ctrl-C there, once they run
        for proc, run_dir in started:
            _wait_for(lambda: list(run_dir.glob("pid-*")), proc)
        raise KeyboardInterrupt

    monkeypatch.setattr(grid, "spawn_trainer", spawn)
    monkeypatch.setattr(grid, "time", types.SimpleNamespace(sleep=ctrl_c, time=time.time))
    lines = []
    with pytest.raises(grid.GridInterrupted):
        grid.run_grid([Variant("a", []), Variant("b", [])], [0], root=tmp_path, preset="tiny-arithmetic", jobs=2,
                      log=lines.append)
    monkeypatch.undo()
    stops = [line for line in lines if "stopping" in line]
    assert stops == ["interrupted: stopping 2 training run(s), each after saving a checkpoint; run the same command "
                     "again to resume (Ctrl-C again: stop them at once)"]
    for proc, run_dir in started:
        assert proc.returncode == 143 and (run_dir / f"term-{proc.pid}").read_text() == "saved"


class FakeTrainer:
    """A trainer process that ends on its ``life``-th poll with exit status 0."""

    def __init__(self, life: int):
        self.life, self.returncode = life, None

    def poll(self):
        self.life -= 1
        if self.life <= 0:
            self.returncode = 0
        return self.returncode


def test_warm_starts_first_interleaved_launches_and_load_records(tmp_path, monkeypatch):
    """Every distinct warm start is resolved before the first trainer starts (none is built inside a timed
    run), the arms' runs start interleaved, and each launch records how many runs shared the machine."""
    from spro.experiments import grid
    from spro.experiments.compare import aggregate, timing_comparable
    from spro.trainer import warmstart

    events = []
    monkeypatch.setattr(warmstart, "resolve_model",
                        lambda name, **kw: events.append(("warm", name)) or f"/cache/{name.split(':')[1]}")

    def spawn(cmd, **kw):
        run_dir = Path(cmd[cmd.index("--config") + 1]).parent
        events.append(("spawn", f"{run_dir.parent.name}/{run_dir.name}"))
        # 'slow' lives longer: it runs alone at the end
        return FakeTrainer(6 if run_dir.parent.name == "slow" else 2)

    monkeypatch.setattr(grid, "spawn_trainer", spawn)
    variants = [Variant("a", ["model.name_or_path=warmstart:weak"]),
                Variant("b", ["model.name_or_path=warmstart:weak", "model.ref_model=warmstart:strong"]),
                Variant("slow", ["model.name_or_path=tiny"])]
    runs = grid.run_grid(variants, [0, 1], root=tmp_path, preset="tiny-random", jobs=2, log=lambda m: None)
    assert events[:2] == [("warm", "warmstart:weak"), ("warm", "warmstart:strong")]  # each once, first
    assert [e[1] for e in events[2:]] == ["a/seed0", "b/seed0", "slow/seed0", "a/seed1", "b/seed1", "slow/seed1"]
    assert runs == {v.label: [tmp_path / v.label / f"seed{s}" for s in (0, 1)] for v in variants}
    records = {f"{label}/{d.name}": [json.loads(ln) for ln in (d / "load.jsonl").read_text().splitlines()]
               for label, ds in runs.items() for d in ds}
    assert all(len(r) == 1 for r in records.values())
    assert len({r[0]["grid"] for r in records.values()}) == 1  # one invocation
    rec = records["a/seed0"][0]
    assert rec["jobs"] == 2 and rec["threads"] == 1 and rec["from_step"] == 0 and rec["end"] >= rec["start"]
    assert set(rec["concurrency_s"]) == {"2"}  # a and b ran side by side all the time
    assert set(records["slow/seed1"][0]["concurrency_s"]) == {"1", "2"}  # alone at the end
    # what the report makes of it: a vs b comparable, the slow arm not
    for label in runs:
        (tmp_path / label).mkdir(exist_ok=True)
    comp = aggregate(runs, baseline="a")
    assert comp.timing["b"].comparable
    assert not comp.timing["slow"].comparable and "unequally" in comp.timing["slow"].why
    assert timing_comparable(comp.algos["b"], comp.algos["a"]).why.startswith("timed under equal load: 2 trainer(s)")
    # a grid with nothing to train builds nothing
    events.clear()
    monkeypatch.setattr(grid, "run_status", lambda run_dir, total: ("done", total))
    grid.run_grid(variants, [0], root=tmp_path, preset="tiny-random", log=lambda m: None)
    assert events == []
