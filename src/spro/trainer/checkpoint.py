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

A checkpoint verifies when its own files (``REQUIRED``, ``checksums.json`` included) are there
and every file of ``checksums.json`` is there with its size and SHA-256 (:func:`verify_checkpoint`);
a missing, garbled or truncated file gives a :class:`CheckpointError` naming it. Resuming from a
run folder takes the newest checkpoint that verifies, with one warning naming the file of each
``step-*`` folder it skips (:func:`find_checkpoint`). A checkpoint without ``checksums.json`` (one of
spro before checksums were kept, or one that lost it) cannot be verified and is skipped the same way.

A full disk during a save is one :class:`DiskFullError` naming the folder, the space free and
about the space a checkpoint needs; the temporary folder is removed.

Fault injection (tests, audits): ``SPRO_FAULT_AT=<stage>`` (or ``<stage>@<step>``) in the environment
SIGKILLs the process at that point of a save (``FAULT_STAGES``), as a power cut or ``kill -9`` would.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import shutil
import signal
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
# the files every checkpoint has (the model's own files are covered by the checksums)
REQUIRED = (TRAINER_STATE, RUN_CONFIG, "optimizer.pt", "scheduler.pt", "rng_state.pt", CHECKSUMS)
# the points of a save at which SPRO_FAULT_AT can kill the process, in order
FAULT_STAGES = ("start", "model", "tokenizer", "optimizer", "scheduler", "rng", "algorithm", "run_config",
                "trainer_state", "checksums", "fsync", "rename", "prune", "done")


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be resumed from."""


class DiskFullError(OSError):
    """No space left to write a checkpoint or a record; the message names the folder and the space needed."""


def _fault(stage: str, step: int) -> None:
    """SIGKILL this process when ``SPRO_FAULT_AT`` names ``stage`` (and, with ``@N``, this is step N's save)."""
    want = os.environ.get("SPRO_FAULT_AT")
    if not want:
        return
    name, _, at = want.partition("@")
    if name == stage and (not at or int(at) == step):
        os.kill(os.getpid(), signal.SIGKILL)


def disk_full_error(folder: Path, needed: int | None, exc: BaseException) -> DiskFullError:
    """The one-line error for a write into ``folder`` that ran out of space (``needed``: bytes, when known)."""
    try:
        free = f"{shutil.disk_usage(folder if folder.exists() else folder.parent).free / 2**20:,.1f} MB free"
    except OSError:
        free = "free space unknown"
    need = f"; it needs about {needed / 2**20:,.1f} MB" if needed else ""
    return DiskFullError(f"no space left on the device of {folder} ({free}{need}); free some space (or move the "
                             f"run to a larger disk), then resume with --resume ({type(exc).__name__}: "
                             f"{str(exc).splitlines()[0][:120] if str(exc) else ''})")


def disk_full_line(exc: BaseException, folder: str | os.PathLike) -> str | None:
    """The one-line message for ``exc`` when it comes from a full disk while writing ``folder`` (else None): the
    commands print it instead of a traceback."""
    if isinstance(exc, DiskFullError):
        return str(exc)
    folder = Path(folder)
    if isinstance(exc, (OSError, RuntimeError)) and is_disk_full(exc, folder):
        return str(disk_full_error(folder, None, exc))
    return None


def is_disk_full(exc: BaseException, folder: Path, needed: int = 0) -> bool:
    """Whether ``exc`` (raised while writing into ``folder``) comes from a full disk: ENOSPC / EDQUOT, or another
    write error (torch's ``unexpected pos``) with less than ``needed`` bytes (at least 1 MB) free."""
    import errno

    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    if not isinstance(exc, (OSError, RuntimeError)):
        return False
    try:
        return shutil.disk_usage(folder if folder.exists() else folder.parent).free < max(needed, 2**20)
    except OSError:
        return False


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
    """Raise :class:`CheckpointError` naming the first file of ``ckpt`` that is missing (one of ``REQUIRED``, or of
    ``checksums.json``), truncated or garbled (not as ``checksums.json`` recorded it)."""
    ckpt = Path(ckpt)
    path = ckpt / CHECKSUMS
    for name in REQUIRED:
        if not (ckpt / name).is_file():
            why = " (the checkpoint cannot be verified)" if name == CHECKSUMS else ""
            raise CheckpointError(f"{ckpt / name}: missing from the checkpoint{why}")
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


_WARNED: set[str] = set()  # skipped-checkpoint warnings given already in this process (one per event)


def _step_folders(root: Path) -> list[Path]:
    """Every ``step-N`` folder under ``root``, complete or not, oldest first."""
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_RE.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def find_checkpoint(path: str | os.PathLike) -> Path:
    """Resolve ``path`` (a run folder, its ``checkpoints/`` folder or one checkpoint) to a checkpoint that
    verifies: one checkpoint must; in a folder of checkpoints the newest that verifies is taken, with a
    warning (once per process) naming the file of each newer ``step-*`` folder skipped."""
    path = Path(path)
    if (path / TRAINER_STATE).is_file() or (STEP_RE.match(path.name) and path.is_dir()):
        verify_checkpoint(path)
        return path
    for root in (path / "checkpoints", path):
        ckpts = _step_folders(root)
        problems = []
        for ckpt in reversed(ckpts):
            try:
                verify_checkpoint(ckpt)
            except CheckpointError as e:
                problems.append(str(e))
                continue
            for problem in problems:
                message = f"skipping a corrupt checkpoint: {problem}; taking {ckpt}"
                if message not in _WARNED:
                    _WARNED.add(message)
                    warnings.warn(message, stacklevel=2)
            return ckpt
        if ckpts:
            raise CheckpointError(f"--resume {path}: no checkpoint verifies: {'; '.join(problems)}")
    if not path.exists():
        raise CheckpointError(f"--resume {path}: no such folder")
    raise CheckpointError(f"--resume {path}: no complete checkpoint found (expected {path}/checkpoints/step-*/)")


def checkpoint_size(root: Path, model: Any, optimizer: Any) -> int:
    """About the bytes a checkpoint takes: the newest one in ``root``, else the model and optimizer tensors."""
    done = list_checkpoints(root)
    if done:
        return sum(p.stat().st_size for p in done[-1].rglob("*") if p.is_file())
    n = sum(p.numel() * p.element_size() for p in model.parameters())
    for state in optimizer.state.values():
        n += sum(v.numel() * v.element_size() for v in state.values() if isinstance(v, torch.Tensor))
    return n + 2**20


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
    tmp = None
    try:
        _fault("start", step)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:06d}-", dir=root))
        model.save_pretrained(str(tmp), safe_serialization=True)
        _fault("model", step)
        tokenizer.save_pretrained(str(tmp))
        _fault("tokenizer", step)
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        _fault("optimizer", step)
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        _fault("scheduler", step)
        torch.save(rng_states, tmp / "rng_state.pt")
        _fault("rng", step)
        for name, saver in (extra_savers or {}).items():
            (tmp / name).mkdir()
            saver(tmp / name)
        _fault("algorithm", step)
        (tmp / RUN_CONFIG).write_text(yaml.safe_dump(run_config, sort_keys=False))
        _fault("run_config", step)
        # the state file last: a folder without it is never treated as a checkpoint; then the checksums of all
        (tmp / TRAINER_STATE).write_text(json.dumps({**trainer_state, "step": step}, indent=2))
        _fault("trainer_state", step)
        write_checksums(tmp)
        _fault("checksums", step)
        _fsync_tree(tmp)
        _fault("fsync", step)
        if final.exists():  # re-saving the same step: move the old one aside first
            aside = Path(tempfile.mkdtemp(prefix=f".tmp-step-{step:06d}-old-", dir=root))
            os.replace(final, aside / "old")
            os.replace(tmp, final)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(tmp, final)
        _fsync_dir(root)
        _fault("rename", step)
    except BaseException as e:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception) and is_disk_full(e, root, _size_or_zero(root, model, optimizer)):
            raise disk_full_error(root, _size_or_zero(root, model, optimizer), e) from e
        raise
    # prune the older checkpoints only: the new one is the last good checkpoint, later ones are not this run's to delete
    older = [c for c in list_checkpoints(root) if int(STEP_RE.match(c.name).group(1)) < step]
    for old in older[: max(len(older) - (keep_last - 1), 0)]:
        shutil.rmtree(old, ignore_errors=True)
        _fault("prune", step)
    _fault("done", step)
    return final


def _size_or_zero(root: Path, model: Any, optimizer: Any) -> int:
    try:
        return checkpoint_size(root, model, optimizer)
    except Exception:
        return 0


def algorithm_state_dir(ckpt: str | os.PathLike) -> Path:
    """The folder of the algorithm's state in ``ckpt``."""
    return Path(ckpt) / ALGORITHM_STATE


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
