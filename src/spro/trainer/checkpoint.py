"""Atomic training checkpoints.

Layout of ``<output_dir>/checkpoints/step-000040/``:

    config.json, model.safetensors, tokenizer files   the policy in Hugging Face format
    optimizer.pt, scheduler.pt                          optimizer and LR-scheduler state
    rng_state.pt                                        python / numpy / torch RNG states, one per process
    trainer_state.json                                  step, data position, elapsed time, ...
    run_config.yaml                                     the run's TrainConfig
    algorithm/                                          the algorithm's own state, when it has some (PRIME: its PRM)

A checkpoint is written into a hidden temporary folder next to its final place, every file and
the folder are fsync'ed, and only then is the folder renamed to ``step-NNNNNN`` (an atomic
rename on POSIX). A crash or kill during a save therefore leaves at most a ``.tmp-*`` folder,
which is ignored (and removed by the next save); the previous checkpoints stay intact. Older
checkpoints beyond ``keep_last`` are deleted after the new one is in place.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

STEP_RE = re.compile(r"^step-(\d+)$")
TRAINER_STATE = "trainer_state.json"
RUN_CONFIG = "run_config.yaml"
ALGORITHM_STATE = "algorithm"


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be resumed from."""


def rng_state() -> dict[str, Any]:
    """This process's RNG states (python, numpy, torch CPU, and CUDA when available)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _fsync_tree(path: Path) -> None:
    for root, dirs, files in os.walk(path):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(str(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def list_checkpoints(ckpt_root: str | os.PathLike) -> list[Path]:
    """Complete checkpoints under ``ckpt_root``, oldest first (temporary folders ignored)."""
    root = Path(ckpt_root)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = STEP_RE.match(p.name)
        if m and p.is_dir() and (p / TRAINER_STATE).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def find_checkpoint(path: str | os.PathLike) -> Path:
    """Resolve ``path`` (a run folder, its ``checkpoints/`` folder or one checkpoint) to a checkpoint."""
    path = Path(path)
    if (path / TRAINER_STATE).is_file():
        return path
    for root in (path / "checkpoints", path):
        ckpts = list_checkpoints(root)
        if ckpts:
            return ckpts[-1]
    if not path.exists():
        raise CheckpointError(f"--resume {path}: no such folder")
    raise CheckpointError(f"--resume {path}: no complete checkpoint found (expected {path}/checkpoints/step-*/)")


def save_checkpoint(
    ckpt_root: str | os.PathLike,
    step: int,
    *,
    model: Any,
    tokenizer: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    run_config: dict,
    trainer_state: dict,
    rng_states: list[dict],
    keep_last: int,
    extra_savers: dict[str, Callable[[Path], None]] | None = None,
) -> Path:
    """Write checkpoint ``step-{step:06d}`` atomically and prune to the last ``keep_last``.

    ``rng_states`` holds one RNG state per process (index = process rank). ``extra_savers``
    maps a sub-folder name to a function writing into it (e.g. the PRM). Returns the folder.
    """
    root = Path(ckpt_root)
    root.mkdir(parents=True, exist_ok=True)
    for stale in root.glob(".tmp-step-*"):
        shutil.rmtree(stale, ignore_errors=True)
    final = root / f"step-{step:06d}"
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:06d}-", dir=root))
    try:
        model.save_pretrained(str(tmp), safe_serialization=True)
        tokenizer.save_pretrained(str(tmp))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        torch.save(rng_states, tmp / "rng_state.pt")
        for name, saver in (extra_savers or {}).items():
            (tmp / name).mkdir()
            saver(tmp / name)
        (tmp / RUN_CONFIG).write_text(yaml.safe_dump(run_config, sort_keys=False))
        # the state file last: a folder without it is never treated as a checkpoint
        (tmp / TRAINER_STATE).write_text(json.dumps({**trainer_state, "step": step}, indent=2))
        _fsync_tree(tmp)
        if final.exists():  # re-saving the same step: move the old one aside first
            aside = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:06d}-old-", dir=root))
            os.replace(final, aside / "old")
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    for old in list_checkpoints(root)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def algorithm_state_dir(ckpt: str | os.PathLike) -> Path:
    """The folder of the algorithm's state in ``ckpt`` (``prm/`` in checkpoints of spro 0.1)."""
    ckpt = Path(ckpt)
    return ckpt / "prm" if not (ckpt / ALGORITHM_STATE).is_dir() and (ckpt / "prm").is_dir() else ckpt / ALGORITHM_STATE


def read_trainer_state(ckpt: str | os.PathLike) -> dict:
    return json.loads((Path(ckpt) / TRAINER_STATE).read_text())


def read_run_config(ckpt: str | os.PathLike) -> dict:
    path = Path(ckpt) / RUN_CONFIG
    if not path.is_file():
        raise CheckpointError(f"{ckpt}: no {RUN_CONFIG}; not a spro checkpoint")
    return yaml.safe_load(path.read_text())


def load_training_state(ckpt: str | os.PathLike, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Restore optimizer and scheduler state from ``ckpt`` (the model is loaded with from_pretrained)."""
    ckpt = Path(ckpt)
    optimizer.load_state_dict(torch.load(ckpt / "optimizer.pt", weights_only=False))
    scheduler.load_state_dict(torch.load(ckpt / "scheduler.pt", weights_only=False))


def load_rng_state(ckpt: str | os.PathLike, rank: int, world_size: int) -> None:
    """Restore this process's RNG states; the run must use the same number of processes."""
    states = torch.load(Path(ckpt) / "rng_state.pt", weights_only=False)
    if len(states) != world_size:
        raise CheckpointError(
            f"{ckpt}: saved by {len(states)} process(es), resumed with {world_size}; resume with "
            f"the same number of processes"
        )
    set_rng_state(states[rank])
