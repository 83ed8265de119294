"""Run folders that cannot be lost: one trainer at a time, never a silent restart over a run, resume in place.

* A folder *holds a run* when it has a checkpoint or logged records (``metrics.jsonl`` /
  ``eval.jsonl`` not empty). A new run (not ``--resume``) into such a folder stops with an error;
  with ``overwrite`` the run that was there is moved aside to ``<folder>.old-N`` (nothing is
  deleted) and the new run starts in the emptied folder.
* A trainer holds an exclusive lock on ``<folder>/.lock`` (``fcntl.flock``, held by the open file)
  while it runs: a second trainer into the same folder stops with an error naming the pid of the
  first. The kernel drops the lock when its process ends however it ends, so a crashed run never
  leaves a stale lock behind. (On systems without ``fcntl``, Windows, there is no lock.)
* ``--resume FOLDER`` writes into FOLDER, the folder being resumed (a copy of a run resumes into
  the copy), whatever ``output_dir`` its saved config names (:func:`resume_folder`). A folder with
  records but no checkpoint yet (a run stopped before its first save) resumes from step 0: its
  records are written again (:func:`resume_point`).
* Commands that write a model folder (``spro export``, ``spro sft``) go through
  :func:`check_output_folder`: they replace an earlier model folder, but refuse a folder that holds a
  run, a checkpoint, a lock held by a trainer or other files; with ``overwrite`` such a folder is moved
  aside to ``<folder>.old-N`` as ``--overwrite`` of ``spro train`` does (a held lock is always refused).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

from spro.trainer.checkpoint import STEP_RE, TRAINER_STATE, CheckpointError, find_checkpoint, read_run_config

if TYPE_CHECKING:
    from spro.schema import TrainConfig

__all__ = ["RunFolderError", "RunLock", "holds_run", "open_run_folder", "check_run_folder", "move_run_aside",
           "config_for_resume", "on_main", "read_records", "check_records", "check_output_folder", "resume_point"]

LOCK = ".lock"
RECORDS = ("metrics.jsonl", "eval.jsonl")


class RunFolderError(ValueError):
    """A run folder that a new run may not use (it holds a run, or another trainer uses it)."""


def holds_run(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` has a checkpoint (complete or not) or logged records."""
    folder = Path(folder)
    ckpts = folder / "checkpoints"
    if ckpts.is_dir() and any(STEP_RE.match(p.name) for p in ckpts.iterdir()):
        return True
    return any((folder / name).is_file() and (folder / name).stat().st_size > 0 for name in RECORDS)


def resume_point(resume: str | os.PathLike | None, config: TrainConfig | None
                 ) -> tuple[Path | None, TrainConfig | None]:
    """``(checkpoint, config)`` to resume ``resume`` from (``(None, config)`` without ``resume``).

    A run folder with records but no checkpoint yet (stopped before its first save) resumes from step 0: the
    checkpoint is None and the config is ``config`` or the folder's ``config.yaml``, written into that folder.
    """
    if not resume:
        return None, config
    folder = Path(resume)
    if not _no_checkpoint_yet(folder):
        ckpt = find_checkpoint(folder)
        return ckpt, config_for_resume(ckpt, config, resume)
    from dataclasses import replace

    from spro.config import config_from_dict

    if config is None:
        config = config_from_dict(resume_config_data(folder))
    message = (f"--resume {folder}: no checkpoint was saved yet; the run starts again from step 0 in that folder "
               "(its records are written again)")
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, stacklevel=2)
    return None, replace(config, output_dir=str(folder))


_WARNED: set[str] = set()


def _no_checkpoint_yet(folder: Path) -> bool:
    """A run folder with records but not one ``step-*`` folder (a run stopped before its first save)."""
    ckpts = folder / "checkpoints"
    has_steps = ckpts.is_dir() and any(STEP_RE.match(p.name) for p in ckpts.iterdir())
    return not has_steps and not (folder / TRAINER_STATE).is_file() and holds_run(folder)


def resume_config_data(resume: str | os.PathLike) -> dict:
    """The saved config (a dict) of the run ``--resume`` names: its checkpoint's, or for a run folder with no
    checkpoint yet, its ``config.yaml``."""
    folder = Path(resume)
    if not _no_checkpoint_yet(folder):
        return read_run_config(find_checkpoint(folder))
    import yaml

    if not (folder / "config.yaml").is_file():
        raise CheckpointError(f"--resume {folder}: no checkpoint yet and no config.yaml to start again from; give "
                              "--config (the run's settings), or --overwrite to start a new run there")
    try:
        return yaml.safe_load((folder / "config.yaml").read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{folder / 'config.yaml'}: cannot be read ({type(e).__name__}: {e})") from None


def config_for_resume(ckpt: Path, config: TrainConfig | None, resume: Any) -> TrainConfig:
    """The ``TrainConfig`` to resume ``ckpt`` with: its own, or ``config`` if they agree (but for
    ``spro.config.RESUMABLE_DIFFERENCES``); its ``output_dir`` is :func:`resume_folder`."""
    from dataclasses import replace

    from spro.config import config_from_dict, diff_configs, flatten, to_dict

    saved = to_dict(config_from_dict(read_run_config(ckpt)))
    if config is None:
        config = config_from_dict(saved)
    diffs = diff_configs(saved, to_dict(config))
    if diffs:
        fs, fn = flatten(saved), flatten(to_dict(config))
        detail = "; ".join(f"{k}: {fs.get(k)!r} (checkpoint) vs {fn.get(k)!r} (now)" for k in diffs[:10])
        raise CheckpointError(f"--resume {resume}: the checkpoint was made with a different config; differing keys: "
                              f"{detail}")
    return replace(config, output_dir=str(resume_folder(ckpt, config.output_dir)))


def on_main(acc: Any, fn: Any) -> Any:
    """``fn()`` on the main process of the ``accelerate.Accelerator`` (its result there, None elsewhere); a
    RunFolderError it raises is raised on every process (so that none goes on alone)."""
    result, error = None, None
    if acc.is_main_process:
        try:
            result = fn()
        except RunFolderError as e:
            error = str(e)
    if acc.num_processes > 1:
        from accelerate.utils import broadcast_object_list

        error = broadcast_object_list([error], from_process=0)[0]
    if error:
        raise RunFolderError(error)
    return result


def resume_folder(ckpt: Path, output_dir: str) -> Path:
    """The run folder a resumed run writes into: the one holding ``ckpt`` (``<run>/checkpoints/step-N``), else
    ``output_dir``. Says so when ``output_dir`` names another folder."""
    folder = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else Path(output_dir)
    if Path(output_dir).resolve() != folder.resolve():
        warnings.warn(f"resuming {ckpt}: writing into its run folder {folder}, not output_dir={output_dir} (to continue "
                      "a run elsewhere, copy its folder there and resume the copy)", stacklevel=2)
    return folder


_HELD: set[Any] = set()  # the open lock files of this process's RunLocks


def _drop_locks_in_child() -> None:
    """In a forked child (a reward worker, say): let go of the parent's locks. A flock belongs to the open file, which
    a fork shares: a child that outlived a killed trainer would keep its folder locked. Pointing the child's copy of
    the descriptor at /dev/null drops that share (the parent's lock stays)."""
    for f in list(_HELD):
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, f.fileno())
            os.close(null)
        except (OSError, ValueError):
            pass
    _HELD.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_drop_locks_in_child)


class RunLock:
    """An exclusive lock on ``<folder>/.lock`` held until :meth:`release` (or the process ends); not passed on to
    forked children."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / LOCK
        self.file: Any = open(self.path, "a+")
        if fcntl is None:
            return
        try:
            fcntl.flock(self.file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.file.seek(0)
            holder = self.file.read().strip() or "unknown"
            self.file.close()
            raise RunFolderError(f"{folder} is in use by another training process (pid {holder}, holding {self.path}); "
                                 "wait for it to end, or train into another output_dir") from None
        self.file.seek(0)
        self.file.truncate()
        self.file.write(f"{os.getpid()}\n")
        self.file.flush()
        _HELD.add(self.file)

    def release(self) -> None:
        _HELD.discard(self.file)
        if not self.file.closed:
            self.file.close()  # closing the file drops the lock

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.release()


def check_run_folder(folder: Path, *, resume: bool, overwrite: bool, probe_lock: bool = True) -> None:
    """Stop at once (before any model is loaded) when a run may not start in ``folder``: another trainer uses it
    (``probe_lock``), or a new run would start over the run it holds."""
    if probe_lock:
        RunLock(folder).release()
    if not resume and not overwrite and holds_run(folder):
        raise RunFolderError(
            f"{folder} holds a run (checkpoints or logged metrics); resume it with --resume {folder} (from its last "
            "checkpoint, or from step 0 when it has none), train into "
            f"another output_dir, or pass --overwrite to move that run aside to {_aside(folder)} and start a new one "
            "here (nothing is deleted)")


def open_run_folder(folder: Path, *, resume: bool, overwrite: bool) -> RunLock:
    """Lock ``folder`` for this trainer and, for a new run with ``overwrite``, move the run it holds aside."""
    lock = RunLock(folder)
    try:
        check_run_folder(folder, resume=resume, overwrite=overwrite, probe_lock=False)
        if not resume and overwrite and holds_run(folder):
            warnings.warn(f"--overwrite: the run that was in {folder} is now in {move_run_aside(folder)}", stacklevel=2)
    except BaseException:
        lock.release()
        raise
    return lock


def move_run_aside(folder: Path) -> Path:
    """Move everything in ``folder`` (but its lock file) into a new ``<folder>.old-N``; returns that folder.
    Hold the folder's :class:`RunLock` while calling it."""
    aside = _aside(folder)
    aside.mkdir()
    for entry in folder.iterdir():
        if entry.name != LOCK:
            entry.rename(aside / entry.name)
    return aside


def _aside(folder: Path) -> Path:
    n = 1
    while Path(f"{folder}.old-{n}").exists():
        n += 1
    return Path(f"{folder}.old-{n}")


def read_records(path: Path, *, after: int | None = None) -> list[str]:
    """The lines of a ``.jsonl`` record file (each a JSON object with a ``step``), without those of steps after
    ``after``. A torn last line (a kill while writing it) is dropped with a warning; any other unreadable line
    raises naming the file and the line."""
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    keep = []
    for i, line in enumerate(lines):
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError) as e:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: dropping its last line, cut off in the middle ({line[:60]!r}...)", stacklevel=2)
                break
            raise RunFolderError(f"{path}, line {i + 1}: not a record ({type(e).__name__}: {e}); fix or remove "
                                 "that line to resume") from None
        if after is None or step <= after:
            keep.append(line)
    return keep


def check_records(path: Path, lines: list[str], step: int) -> None:
    """Warn, naming ``path``, when its records (``lines``, one per step) miss some of steps 1..``step`` (the
    checkpoint's): they were deleted and a resumed run does not write them again."""
    have = {json.loads(line)["step"] for line in lines}
    missing = [s for s in range(1, step + 1) if s not in have]
    if missing:
        span = f"{missing[0]}" if len(missing) == 1 else f"{missing[0]}..{missing[-1]}" if \
            missing == list(range(missing[0], missing[-1] + 1)) else ", ".join(map(str, missing[:10]))
        warnings.warn(f"{path}: has no record of step(s) {span} ({len(missing)} of the checkpoint's {step} steps; "
                      "deleted or emptied?); they are not written again: that run's records stay incomplete",
                      stacklevel=3)


def _lock_holder(folder: Path) -> str | None:
    """The pid written in ``folder``'s lock when a process holds that lock, else None (no lock file is made)."""
    path = folder / LOCK
    if fcntl is None or not path.is_file():
        return None
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            return f.read().strip() or "unknown"
        fcntl.flock(f, fcntl.LOCK_UN)
    return None


def check_output_folder(folder: str | os.PathLike, *, overwrite: bool = False, flag: str = "--output") -> None:
    """Make sure writing a model folder at ``folder`` (which replaces it) loses nothing.

    Nothing there, an empty folder or a model folder (``config.json``, no run or checkpoint in it) may be replaced.
    A folder a trainer is using is refused. Any other folder (a run, a checkpoint, a folder of runs or of other
    files) is refused, or with ``overwrite`` moved aside to ``<folder>.old-N`` (nothing is deleted).
    """
    folder = Path(folder)
    if not folder.exists():
        return
    if not folder.is_dir():
        raise RunFolderError(f"{flag} {folder}: a file, not a folder; name a folder to write the model into")
    holder = _lock_holder(folder)
    if holder is not None:
        raise RunFolderError(f"{flag} {folder}: a training process uses that folder (pid {holder}); write the model "
                             "somewhere else")
    entries = [p for p in folder.iterdir() if p.name != LOCK]
    is_model = ((folder / "config.json").is_file() and not (folder / TRAINER_STATE).is_file() and not holds_run(folder)
                and not any(p.is_dir() for p in entries))
    if not entries or is_model:
        return
    what = ("a run" if holds_run(folder) else "a checkpoint" if (folder / TRAINER_STATE).is_file()
            else "files that are not a model folder")
    if not overwrite:
        raise RunFolderError(f"{flag} {folder}: the folder holds {what}, which writing the model would delete; name "
                             f"another folder, or pass --overwrite to move it aside to {_aside(folder)} first (nothing "
                             "is deleted)")
    with RunLock(folder):
        aside = move_run_aside(folder)
    warnings.warn(f"--overwrite: what was in {folder} is now in {aside}", stacklevel=2)
