"""Running a grid of training runs (variants x seeds) with identical budgets, resumably.

Used by ``spro compare`` and ``spro demo``. A *variant* is a label plus config overrides, e.g.
``spro`` -> ``algorithm.name=spro`` or ``beta0.01`` -> ``algorithm.name=spro algorithm.spro.beta=0.01``.
Every (variant, seed) run gets the same base config (file / preset / overrides) and its own folder
``<root>/<label>/seed<k>``. A run whose last checkpoint is at ``total_steps`` is done and is
skipped; one with an earlier checkpoint is resumed from it; otherwise it starts afresh (what an
attempt that died before its first checkpoint logged is moved aside to ``seed<k>.old-N``). So an
interrupted comparison continues where it stopped when the same command is run again.

Timing under equal load: every warm start the runs name (``model.name_or_path`` / ``model.ref_model`` like
``warmstart:weak``) is built before the first trainer starts, so no timed run pays for it; runs start
interleaved across arms (seed 0 of every arm, then seed 1, ...), so arms that run at once share the CPU
alike; and each launch of a run appends a record to ``<run>/load.jsonl`` (:data:`LOAD_FILE`): the grid
it ran in, ``jobs``, the CPU count, its start / end and the seconds it spent with k trainers of the
grid running (itself included), which `spro.experiments.compare` reads to decide whether two arms'
step times may be compared.

The trainers are child processes in sessions of their own that die with the parent: on Linux the
kernel sends each SIGTERM when the grid's process ends however it ends (``PR_SET_PDEATHSIG``), and a
trainer stops on SIGTERM after saving a checkpoint (``spro.trainer.signals``). Ctrl-C reaches the grid
only: it prints one line, sends SIGTERM to every trainer and waits for their checkpoints (a second
Ctrl-C kills them at once), then raises :class:`GridInterrupted`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

LABEL_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")
from spro.experiments.timing import LOAD_FILE  # noqa: E402  (the launch records, read by spro.experiments.timing)


class GridInterrupted(RuntimeError):
    """Ctrl-C stopped the grid; its trainers saved checkpoints (the line saying so was logged already)."""


def _die_with_parent(parent: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when its parent ends (Linux ``PR_SET_PDEATHSIG``)."""

    def setup() -> None:
        try:
            import ctypes

            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG = 1
        except (OSError, AttributeError):
            return
        if os.getppid() != parent:  # the parent ended before the request took effect
            os._exit(143)

    return setup


def spawn_trainer(cmd: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen(cmd)`` for a trainer: a session of its own (Ctrl-C at the terminal reaches only the
    parent, which stops the trainers itself) and SIGTERM when the parent ends. A trainer writing to the parent's
    terminal (no ``stderr`` given) prints no stop messages of its own (``SPRO_STOP_QUIET=1``): the parent's line
    says it all."""
    env = dict(kwargs.pop("env", None) or os.environ)
    if kwargs.get("stderr") is None:
        env["SPRO_STOP_QUIET"] = "1"
    return subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent(os.getpid()), **kwargs)


def stop_trainers(procs: Sequence[subprocess.Popen], log: Callable[[str], None], what: str) -> None:
    """SIGTERM to each running trainer (each saves a checkpoint and stops), one line through ``log``, and wait for
    them; a second Ctrl-C while waiting kills them at once."""
    alive = [p for p in procs if p.poll() is None]
    for p in alive:
        p.send_signal(signal.SIGTERM)
    log(f"{what}: stopping {len(alive)} training run(s), each after saving a checkpoint; run the same command again "
        "to resume (Ctrl-C again: stop them at once)")
    try:
        for p in alive:
            p.wait()
    except KeyboardInterrupt:
        for p in alive:
            if p.poll() is None:
                p.kill()
        for p in alive:
            p.wait()


@dataclass
class Variant:
    """One arm of a comparison: a label (folder name, legend entry) and its config overrides."""

    label: str
    overrides: list[str] = field(default_factory=list)


def parse_variant(text: str) -> Variant:
    """``"label:key=value,key=value"`` (or just an algorithm name, e.g. ``"grpo"``) -> Variant.

    A bare name ``x`` means ``x:algorithm.name=x``. Values may not contain commas; use a YAML
    config file for those.
    """
    text = text.strip()
    if ":" not in text:
        label, overrides = text, [f"algorithm.name={text}"]
    else:
        label, rest = text.split(":", 1)
        overrides = [p.strip() for p in rest.split(",") if p.strip()]
        bad = [p for p in overrides if "=" not in p]
        if bad:
            raise ValueError(f"variant {text!r}: expected key=value after ':', got {bad[0]!r}")
    if not LABEL_RE.match(label):
        raise ValueError(f"variant label {label!r} must match {LABEL_RE.pattern} (it names a folder)")
    return Variant(label, overrides)


def run_status(run_dir: Path, total_steps: int) -> tuple[str, int]:
    """('done' | 'partial' | 'new', last checkpointed step) for the run folder."""
    from spro.trainer.checkpoint import find_checkpoint, list_checkpoints, read_trainer_state

    if not list_checkpoints(Path(run_dir) / "checkpoints"):
        return "new", 0
    step = int(read_trainer_state(find_checkpoint(run_dir))["step"])  # the newest that verifies
    return ("done" if step >= total_steps else "partial"), step


def build_config(
    *, config: str | Path | None, preset: str | None, overrides: Sequence[str], variant: Variant, seed: int,
    run_dir: Path,
):
    """The config of one (variant, seed) run: base < variant overrides < seed and output_dir."""
    from spro.config import load_config

    return load_config(
        config, [*overrides, *variant.overrides, f"seed={seed}", f"output_dir={run_dir}"], preset=preset
    )


def _train_command(cfg, run_dir: Path, *, resume: bool) -> list[str]:
    """``spro train`` on ``cfg`` (saved as ``run_dir/requested_config.yaml``) in a fresh Python process.

    A process per run keeps runs independent: peak-memory figures (process RSS) are not inherited
    from earlier runs, and torch / RNG state does not leak between them.
    """
    from spro.config import save_yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "requested_config.yaml"
    save_yaml(cfg, cfg_path)
    cmd = [sys.executable, "-m", "spro", "train", "--config", str(cfg_path)]
    return cmd + (["--resume", str(run_dir)] if resume else [])


def train_in_subprocess(cfg, run_dir: Path, *, resume: bool) -> None:
    """Run ``spro train`` on ``cfg`` in a fresh Python process and wait for it (Ctrl-C: it saves and stops)."""
    proc = spawn_trainer(_train_command(cfg, run_dir, resume=resume))
    try:
        rc = proc.wait()
    except KeyboardInterrupt:
        stop_trainers([proc], print, "interrupted")
        raise GridInterrupted(f"interrupted; {run_dir} saved a checkpoint") from None
    if rc != 0:
        raise RuntimeError(f"training run {run_dir} failed (exit status {rc}); its last checkpoint is kept, "
                           "run the same command again to resume")


def finished_runs(
    variants: Sequence[Variant], seeds: Sequence[int], *, root: str | Path, config: str | Path | None = None,
    preset: str | None = None, overrides: Sequence[str] = (), log: Callable[[str], None] = print,
) -> dict[str, list[Path]]:
    """``{label: [run folder per finished seed]}`` of a grid, for reporting without training.

    Runs that are missing or stopped before ``total_steps`` are left out, each with a line through
    ``log`` (a partial run would weigh as much as a finished one); arms with no finished run are
    left out too. Raises ValueError when no run of the grid is finished.
    """
    root = Path(root)
    runs: dict[str, list[Path]] = {}
    for v in variants:
        for s in seeds:
            run_dir = root / v.label / f"seed{s}"
            cfg = build_config(config=config, preset=preset, overrides=overrides, variant=v, seed=s, run_dir=run_dir)
            status, step = run_status(run_dir, cfg.total_steps)
            if status == "done":
                runs.setdefault(v.label, []).append(run_dir)
            else:
                why = (f"partial: step {step} of {cfg.total_steps}" if status == "partial"
                       else "no checkpoint yet" if run_dir.exists() else "missing")
                log(f"left out of the report: {run_dir} ({why})")
    if not runs:
        raise ValueError(f"no finished run under {root} for these arms and seeds")
    return runs


def prepare_models(cfgs: Sequence[Any], log: Callable[[str], None] = print) -> list[str]:
    """Build (or find in the cache) every distinct warm start the configs name, before any timed run.

    Looks at ``model.name_or_path`` and ``model.ref_model`` of each config; each distinct
    ``warmstart:PRESET`` is resolved once by `spro.trainer.warmstart.resolve_model` (built if not
    cached), so that no trainer builds one inside its timed steps. Returns the names resolved.
    """
    from spro.trainer.warmstart import resolve_model

    names: list[str] = []
    for cfg in cfgs:
        for name in (cfg.model.name_or_path, getattr(cfg.model, "ref_model", None)):
            if isinstance(name, str) and name.startswith("warmstart:") and name not in names:
                names.append(name)
    for name in names:
        log(f"warm start {name}: {resolve_model(name)} (ready before any timed run)")
    return names


def _load_record(grid: str, jobs: int, threads: int, t0: float, from_step: int,
                 conc: dict[int, float]) -> dict[str, Any]:
    return {"grid": grid, "jobs": jobs, "threads": threads, "cpus": default_jobs(), "start": round(t0, 3),
            "end": round(time.time(), 3), "from_step": from_step,
            "concurrency_s": {str(k): round(v, 3) for k, v in sorted(conc.items())}}


def _append_load(run_dir: Path, record: dict[str, Any]) -> None:
    with open(Path(run_dir) / LOAD_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")


def default_jobs() -> int:
    """Runs at once by default: one per CPU core (each run uses one torch thread)."""
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)


def run_grid(
    variants: Sequence[Variant],
    seeds: Sequence[int],
    *,
    root: str | Path,
    config: str | Path | None = None,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    jobs: int = 1,
    threads: int = 1,
    log: Callable[[str], None] = print,
) -> dict[str, list[Path]]:
    """Train every (variant, seed), skipping finished runs and resuming partial ones.

    Returns ``{label: [run folder per seed]}``. The base config is validated for every run before
    any training starts, so a typo in an override fails at once rather than after hours. ``jobs``
    runs go at once, each in its own process with ``threads`` torch threads (OMP_NUM_THREADS);
    with more than one job each run's output goes to ``<run>/output.log``. A failed run does not stop
    the others; the failures are raised together at the end. The warm starts the runs need are built
    first (:func:`prepare_models`); runs start interleaved across arms; each launch appends its load
    record to ``<run>/load.jsonl`` (module docstring).
    """
    from spro.trainer.rundir import RunLock, holds_run, move_run_aside

    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise ValueError(f"variant labels must be unique, got {labels}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    if jobs < 1 or threads < 1:
        raise ValueError(f"jobs and threads must be >= 1, got {jobs} and {threads}")
    root = Path(root)
    plan = []
    for s in seeds:  # interleaved: the arms that run at once share the CPU alike
        for v in variants:
            run_dir = root / v.label / f"seed{s}"
            cfg = build_config(config=config, preset=preset, overrides=overrides, variant=v, seed=s, run_dir=run_dir)
            plan.append((v, s, run_dir, cfg))
    runs: dict[str, list[Path]] = {v.label: [root / v.label / f"seed{s}" for s in seeds] for v in variants}
    todo = []
    for i, (v, s, run_dir, cfg) in enumerate(plan, 1):
        status, step = run_status(run_dir, cfg.total_steps)
        head = f"[{i}/{len(plan)}] {v.label} seed {s}"
        if status == "done":
            log(f"{head}: done already ({run_dir}), skipped")
            continue
        if status == "new" and holds_run(run_dir):  # an attempt that died before its first checkpoint
            with RunLock(run_dir):
                log(f"{head}: the records of an earlier attempt are now in {move_run_aside(run_dir)}")
        todo.append((head, run_dir, cfg, status, step))
    if todo:
        prepare_models([t[2] for t in todo], log)
    grid_id = f"{int(time.time())}-{os.getpid()}-{os.urandom(3).hex()}"  # this invocation of the grid
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    # (head, run dir, process, start time, output file, first step, {k trainers running: seconds})
    running: list[tuple[str, Path, subprocess.Popen, float, Any, int, dict[int, float]]] = []
    failures = []
    try:
        while todo or running:
            while todo and len(running) < jobs:
                head, run_dir, cfg, status, step = todo.pop(0)
                log(f"{head}: " + (f"resuming from step {step}" if status == "partial" else
                                   f"training {cfg.total_steps} steps") + f" -> {run_dir}")
                cmd = _train_command(cfg, run_dir, resume=status == "partial")
                out = open(run_dir / "output.log", "a") if jobs > 1 else None
                proc = spawn_trainer(cmd, env=env, stdout=out, stderr=out)
                running.append((head, run_dir, proc, time.time(), out, step if status == "partial" else 0, {}))
            tick = time.time()
            time.sleep(0.2)
            dt = time.time() - tick
            for item in running:  # the load each run saw during this tick
                item[6][len(running)] = item[6].get(len(running), 0.0) + dt
            for item in [r for r in running if r[2].poll() is not None]:
                running.remove(item)
                head, run_dir, proc, t0, out, from_step, conc = item
                if out is not None:
                    out.close()
                _append_load(run_dir, _load_record(grid_id, jobs, threads, t0, from_step, conc))
                if proc.returncode == 0:
                    log(f"{head}: finished in {time.time() - t0:.0f} s")
                else:
                    where = f"; see {run_dir / 'output.log'}" if out is not None else ""
                    log(f"{head}: FAILED (exit status {proc.returncode}){where}")
                    failures.append(f"{run_dir} (exit status {proc.returncode}){where}")
    except KeyboardInterrupt:
        stop_trainers([r[2] for r in running], log, "interrupted")
        for r in running:
            if r[4] is not None:
                r[4].close()
            _append_load(r[1], _load_record(grid_id, jobs, threads, r[3], r[5], r[6]))
        raise GridInterrupted(f"interrupted with {len(running)} run(s) under way and {len(todo)} not started") from None
    root.mkdir(parents=True, exist_ok=True)
    (root / "runs.json").write_text(json.dumps({k: [str(p) for p in v] for k, v in runs.items()}, indent=1))
    if failures:
        raise RuntimeError("training run(s) failed: " + "; ".join(failures) + ". Their last checkpoints are kept; "
                           "run the same command again to resume")
    return runs
