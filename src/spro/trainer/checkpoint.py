"""Atomic training checkpoints.

Layout of ``<output_dir>/checkpoints/step-000040/``:

    config.json, model.safetensors, tokenizer files   the policy in Hugging Face format
    optimizer.pt, scheduler.pt                          optimizer and LR-scheduler state
    rng_state.pt                                        python / numpy / torch RNG states, one per process
    trainer_state.json                                  step, data position, elapsed time, ...
    run_config.yaml                                     the run's TrainConfig
    algorithm/                                          the algorithm's own state, when it has some (PRIME: its PRM)
    checksums.json                                      size and SHA-256 of every other file

A checkpoint is written into a hidden temporary folder next to its final place, every file and
the folder are fsync'ed, and only then is the folder renamed to ``step-NNNNNN`` (an atomic
rename on POSIX). A crash or kill during a save therefore leaves at most a ``.tmp-*`` folder,
which is ignored (and removed by the next save); the previous checkpoints stay intact. After the
new checkpoint is in place, the checkpoints older than it beyond ``keep_last`` are deleted; the
new one, the last good checkpoint, never is (nor any with a later step).

A checkpoint verifies when every file of ``checksums.json`` is there with its size and SHA-256
(:func:`verify_checkpoint`); a garbled or truncated file gives a :class:`CheckpointError` naming
it. Resuming from a run folder takes the newest checkpoint that verifies, with a warning naming
the files of those it skips (:func:`find_checkpoint`). Checkpoints written before checksums were
kept (no ``checksums.json``) are taken as they are; a file of theirs that cannot be read is named
when it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import yaml

STEP_RE = re.compile(r"^step-(\d+)$")
TRAINER_STATE = "trainer_state.json"
RUN_CONFIG = "run_config.yaml"
ALGORITHM_STATE = "algorithm"
CHECKSUMS = "checksums.json"


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


def _sha256(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.name != CHECKSUMS)


def write_checksums(folder: str | os.PathLike) -> None:
    """Record the size and SHA-256 of every file of ``folder`` in ``folder/checksums.json``."""
    folder = Path(folder)
    sums = {p.relative_to(folder).as_posix(): {"size": p.stat().st_size, "sha256": _sha256(p)} for p in _files(folder)}
    (folder / CHECKSUMS).write_text(json.dumps(sums, indent=1))


_VERIFIED: set[tuple] = set()  # checkpoints verified already in this process, by path and (size, mtime) of each file


def verify_checkpoint(ckpt: str | os.PathLike) -> None:
    """Raise :class:`CheckpointError` naming the first file of ``ckpt`` that is missing, truncated or garbled
    (not as ``checksums.json`` recorded it). A checkpoint without ``checksums.json`` (older spro) passes."""
    ckpt = Path(ckpt)
    path = ckpt / CHECKSUMS
    if not path.is_file():
        return
    key = (str(ckpt.resolve()), *((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(ckpt.rglob("*"))))
    if key in _VERIFIED:
        return
    try:
        sums = json.loads(path.read_text())
        items = [(name, int(v["size"]), str(v["sha256"])) for name, v in sums.items()]
    except (ValueError, TypeError, KeyError, AttributeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path}: garbled ({type(e).__name__}: {e})") from None
    for name, size, digest in items:
        f = ckpt / name
        if not f.is_file():
            raise CheckpointError(f"{f}: missing from the checkpoint")
        if f.stat().st_size != size:
            raise CheckpointError(f"{f}: {f.stat().st_size} bytes, {size} when it was saved (truncated or garbled)")
        if _sha256(f) != digest:
            raise CheckpointError(f"{f}: garbled (its SHA-256 differs from the one saved)")
    _VERIFIED.add(key)


def find_checkpoint(path: str | os.PathLike) -> Path:
    """Resolve ``path`` (a run folder, its ``checkpoints/`` folder or one checkpoint) to a checkpoint that
    verifies: one checkpoint must; in a folder of checkpoints the newest that verifies is taken, with a
    warning naming the file of each newer one skipped."""
    path = Path(path)
    if (path / TRAINER_STATE).is_file():
        verify_checkpoint(path)
        return path
    for root in (path / "checkpoints", path):
        ckpts = list_checkpoints(root)
        problems = []
        for ckpt in reversed(ckpts):
            try:
                verify_checkpoint(ckpt)
            except CheckpointError as e:
                problems.append(str(e))
                continue
            for problem in problems:
                warnings.warn(f"skipping a corrupt checkpoint: {problem}; taking {ckpt}", stacklevel=2)
            return ckpt
        if ckpts:
            raise CheckpointError(f"--resume {path}: no checkpoint verifies: {'; '.join(problems)}")
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
        # the state file last: a folder without it is never treated as a checkpoint; then the checksums of all
        (tmp / TRAINER_STATE).write_text(json.dumps({**trainer_state, "step": step}, indent=2))
        write_checksums(tmp)
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
    # prune the older checkpoints only: the new one is the last good checkpoint, later ones are not this run's to delete
    older = [c for c in list_checkpoints(root) if int(STEP_RE.match(c.name).group(1)) < step]
    for old in older[: max(len(older) - (keep_last - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def algorithm_state_dir(ckpt: str | os.PathLike) -> Path:
    """The folder of the algorithm's state in ``ckpt`` (``prm/`` in checkpoints of spro 0.1)."""
    ckpt = Path(ckpt)
    return ckpt / "prm" if not (ckpt / ALGORITHM_STATE).is_dir() and (ckpt / "prm").is_dir() else ckpt / ALGORITHM_STATE


def _read(path: Path, load: Callable[[Path], Any]) -> Any:
    """``load(path)``, any failure a CheckpointError naming the file."""
    try:
        return load(path)
    except Exception as e:
        raise CheckpointError(f"{path}: cannot be read ({type(e).__name__}: {e})") from None


def read_trainer_state(ckpt: str | os.PathLike) -> dict:
    return _read(Path(ckpt) / TRAINER_STATE, lambda p: json.loads(p.read_text()))


def read_run_config(ckpt: str | os.PathLike) -> dict:
    path = Path(ckpt) / RUN_CONFIG
    if not path.is_file():
        raise CheckpointError(f"{ckpt}: no {RUN_CONFIG}; not a spro checkpoint")
    return _read(path, lambda p: yaml.safe_load(p.read_text()))


def _torch_load(path: Path) -> Any:
    return _read(path, lambda p: torch.load(p, weights_only=False))


def load_training_state(ckpt: str | os.PathLike, optimizer: torch.optim.Optimizer, scheduler: Any) -> None:
    """Restore optimizer and scheduler state from ``ckpt`` (the model is loaded with from_pretrained)."""
    ckpt = Path(ckpt)
    for name, obj in (("optimizer.pt", optimizer), ("scheduler.pt", scheduler)):
        state = _torch_load(ckpt / name)
        _read(ckpt / name, lambda p: obj.load_state_dict(state))


def load_rng_state(ckpt: str | os.PathLike, rank: int, world_size: int) -> None:
    """Restore this process's RNG states; the run must use the same number of processes."""
    states = _torch_load(Path(ckpt) / "rng_state.pt")
    if len(states) != world_size:
        raise CheckpointError(
            f"{ckpt}: saved by {len(states)} process(es), resumed with {world_size}; resume with "
            f"the same number of processes"
        )
    set_rng_state(states[rank])
