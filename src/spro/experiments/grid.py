"""Running a grid of training runs (variants x seeds) with identical budgets, resumably.

Used by ``spro compare`` and ``spro demo``. A *variant* is a label plus config overrides, e.g.
``spro`` -> ``algorithm.name=spro`` or ``beta0.01`` -> ``algorithm.name=spro algorithm.spro.beta=0.01``.
Every (variant, seed) run gets the same base config (file / preset / overrides) and its own folder
``<root>/<label>/seed<k>``. A run whose last checkpoint is at ``total_steps`` is done and is
skipped; one with an earlier checkpoint is resumed from it; otherwise it starts afresh (what an
attempt that died before its first checkpoint logged is moved aside to ``seed<k>.old-N``). So an
interrupted comparison continues where it stopped when the same command is run again.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

LABEL_RE = re.compile(r"^[A-Za-z0-9_.+-]+$")


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


def train_in_subprocess(cfg, run_dir: Path, *, resume: bool, overwrite: bool = False) -> None:
    """Run ``spro train`` on ``cfg`` in a fresh Python process.

    A process per run keeps runs independent: peak-memory figures (process RSS) are not inherited
    from earlier runs, and torch / RNG state does not leak between them.
    """
    from spro.config import save_yaml

    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "requested_config.yaml"
    save_yaml(cfg, cfg_path)
    cmd = [sys.executable, "-m", "spro", "train", "--config", str(cfg_path)]
    if resume:
        cmd += ["--resume", str(run_dir)]
    if overwrite:
        cmd += ["--overwrite"]
    rc = subprocess.call(cmd)
    if rc != 0:
        raise RuntimeError(f"training run {run_dir} failed (exit status {rc}); its last checkpoint is kept, "
                           "run the same command again to resume")


def run_grid(
    variants: Sequence[Variant],
    seeds: Sequence[int],
    *,
    root: str | Path,
    config: str | Path | None = None,
    preset: str | None = None,
    overrides: Sequence[str] = (),
    log: Callable[[str], None] = print,
) -> dict[str, list[Path]]:
    """Train every (variant, seed), skipping finished runs and resuming partial ones.

    Returns ``{label: [run folder per seed]}``. The base config is validated for every run before
    any training starts, so a typo in an override fails at once rather than after hours.
    """
    labels = [v.label for v in variants]
    if len(set(labels)) != len(labels):
        raise ValueError(f"variant labels must be unique, got {labels}")
    if not seeds:
        raise ValueError("at least one seed is needed")
    root = Path(root)
    plan = []
    for v in variants:
        for s in seeds:
            run_dir = root / v.label / f"seed{s}"
            cfg = build_config(config=config, preset=preset, overrides=overrides, variant=v, seed=s, run_dir=run_dir)
            plan.append((v, s, run_dir, cfg))
    runs: dict[str, list[Path]] = {v.label: [] for v in variants}
    for i, (v, s, run_dir, cfg) in enumerate(plan, 1):
        status, step = run_status(run_dir, cfg.total_steps)
        runs[v.label].append(run_dir)
        head = f"[{i}/{len(plan)}] {v.label} seed {s}"
        if status == "done":
            log(f"{head}: done already ({run_dir}), skipped")
            continue
        if status == "partial":
            log(f"{head}: resuming from step {step} ({run_dir})")
        else:
            log(f"{head}: training {cfg.total_steps} steps -> {run_dir}")
        t0 = time.time()
        from spro.trainer.rundir import holds_run

        train_in_subprocess(cfg, run_dir, resume=status == "partial", overwrite=status == "new" and holds_run(run_dir))
        log(f"{head}: finished in {time.time() - t0:.0f} s")
    root.mkdir(parents=True, exist_ok=True)
    (root / "runs.json").write_text(json.dumps({k: [str(p) for p in v] for k, v in runs.items()}, indent=1))
    return runs
