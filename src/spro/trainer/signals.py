"""Stopping a run on SIGINT (Ctrl-C) or SIGTERM (preemption) without losing its work.

While :func:`stop_on_signals` is active (the trainer's loop, in the main thread), the first SIGINT or
SIGTERM only asks the run to stop: the step under way is finished, a checkpoint of it is saved, the
run folder's lock is released, and :class:`TrainingStopped` is raised, whose message is the one line
saying how to resume (``spro train`` prints it and exits with 128 + the signal's number). A second
signal ends the process at once (exit 128 + its number): the checkpoints already saved are intact
(``spro.trainer.checkpoint`` writes them atomically) and the kernel drops the lock.

``SPRO_STOP_QUIET=1`` in the environment (``spro compare`` sets it for trainers that share its
terminal, which says it all in one line) silences these messages.

With several processes (``accelerate launch``) the processes agree on the step to stop after (one
reduction per step), so none waits for the others in a collective that never comes.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

__all__ = ["StopRequest", "TrainingStopped", "requested", "stop_on_signals", "stop_run"]

SIGNALS = (signal.SIGINT, signal.SIGTERM)


def say(line: str) -> None:
    """Print ``line`` to stderr, unless ``SPRO_STOP_QUIET=1``."""
    if os.environ.get("SPRO_STOP_QUIET") != "1":
        print(line, file=sys.stderr, flush=True)


class TrainingStopped(RuntimeError):
    """The run stopped on a signal after saving a checkpoint; ``exit_code`` is 128 + the signal's number."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum


class StopRequest:
    """The signal asking the run to stop (``signum``, None while none came)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            say(f"spro: {signal.Signals(signum).name} again: stopping at once (the checkpoints saved so far are intact)")
            os._exit(128 + signum)
        self.signum = signum
        say(f"spro: {signal.Signals(signum).name}: finishing this step, saving a checkpoint, then stopping (send it "
            "again to stop at once)")

    def requested(self, acc: Any = None) -> int | None:
        """The signal that asked to stop, agreed over the processes of ``acc`` (an ``accelerate.Accelerator``)."""
        if acc is not None and getattr(acc, "num_processes", 1) > 1:
            import torch

            flag = torch.tensor([float(self.signum or 0)], device=acc.device)
            agreed = int(acc.reduce(flag, "sum").item())
            if agreed and self.signum is None:
                self.signum = int(signal.SIGTERM)
            return self.signum if agreed else None
        return self.signum


_ACTIVE: StopRequest | None = None


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Handle SIGINT and SIGTERM as a request to stop (see the module docstring) inside the block; nested blocks
    share one request. Outside the main thread (no handlers can be set there) nothing is handled."""
    global _ACTIVE
    if _ACTIVE is not None:
        yield _ACTIVE
        return
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    old = {sig: signal.signal(sig, request.handle) for sig in SIGNALS}
    _ACTIVE = request
    try:
        yield request
    finally:
        _ACTIVE = None
        for sig, handler in old.items():
            signal.signal(sig, handler)


def requested(acc: Any = None) -> int | None:
    """The signal that asked the run to stop inside the active :func:`stop_on_signals` block (None: none, or no
    block), agreed over the processes of ``acc``."""
    return _ACTIVE.requested(acc) if _ACTIVE is not None else None


def stop_run(trainer: Any, signum: int) -> TrainingStopped:
    """Save a checkpoint of ``trainer``'s last finished step (unless saved already) and return the
    :class:`TrainingStopped` to raise, whose message says how to resume."""
    name, out = signal.Signals(signum).name, Path(trainer.out)
    if trainer.step == 0:
        return TrainingStopped(f"stopped by {name} before the first step; nothing to save: run the same command again "
                               "to start", signum)
    saved = trainer.last_ckpt is not None and Path(trainer.last_ckpt).name == f"step-{trainer.step:06d}"
    ckpt = trainer.last_ckpt if saved else trainer.save()
    return TrainingStopped(f"stopped by {name} after step {trainer.step} of {trainer.cfg.total_steps}; checkpoint "
                           f"{ckpt}; resume with: spro train --resume {out}", signum)
