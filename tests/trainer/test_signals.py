"""SIGINT / SIGTERM: the step under way is finished, a checkpoint saved, the lock released, one line says how to
resume; a second signal ends the process at once. A folder with records but no checkpoint resumes from step 0."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import warnings

import pytest
import torch
from safetensors.torch import load_file

from helpers import REWARDS, read_jsonl, small_overrides, train_killed_at
from spro.config import load_config
from spro.trainer import Trainer, train
from spro.trainer import checkpoint as ck
from spro.trainer.rundir import RunFolderError, RunLock
from spro.trainer.signals import StopRequest, TrainingStopped

COMPARED = ("reward/mean", "accuracy", "entropy", "kl", "loss", "grad_norm", "lr")


def _cfg(model_dir, out, **extra):
    return load_config(overrides=small_overrides(model_dir, out, "spro", **{"total_steps": 3, **extra}))


def _signal_during_step(monkeypatch, step, signum):
    """Send ``signum`` to this process in the middle of step ``step`` (after its rollout)."""
    real = Trainer.score

    def score(self, rows, completions, batch=None):
        if self.step + 1 == step:
            os.kill(os.getpid(), signum)
        return real(self, rows, completions, batch)

    monkeypatch.setattr(Trainer, "score", score)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_finishes_the_step_saves_and_resume_is_bit_identical(model_dir, tmp_path, monkeypatch, capsys,
                                                                       signum):
    full = train(_cfg(model_dir, tmp_path / "full"), reward_funcs=REWARDS)
    run = tmp_path / "run"
    _signal_during_step(monkeypatch, 2, signum)
    with pytest.raises(TrainingStopped) as stop:
        train(_cfg(model_dir, run), reward_funcs=REWARDS)  # save_every=0: nothing would be saved before the end
    monkeypatch.undo()
    name = signal.Signals(signum).name
    assert stop.value.exit_code == 128 + signum
    assert str(stop.value) == (f"stopped by {name} after step 2 of 3; checkpoint {run / 'checkpoints' / 'step-000002'}; "
                               f"resume with: spro train --resume {run}")
    assert f"spro: {name}: finishing this step, saving a checkpoint" in capsys.readouterr().err
    assert [p.name for p in ck.list_checkpoints(run / "checkpoints")] == ["step-000002"]
    RunLock(run).release()  # the lock was released
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are restored
    train(_cfg(model_dir, run), resume=run, reward_funcs=REWARDS)
    a, b = read_jsonl(full / "metrics.jsonl"), read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in b] == [1, 2, 3]
    for ma, mb in zip(a, b):
        assert all(ma[k] == mb[k] for k in COMPARED), ma["step"]
    wa = load_file(str(full / "checkpoints" / "step-000003" / "model.safetensors"))
    wb = load_file(str(run / "checkpoints" / "step-000003" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_a_second_signal_ends_the_process_at_once():
    def child():
        request = StopRequest()
        request.handle(signal.SIGTERM, None)
        assert request.requested() == signal.SIGTERM
        request.handle(signal.SIGINT, None)  # exits here
        os._exit(0)

    p = multiprocessing.get_context("fork").Process(target=child)
    p.start()
    p.join()
    assert p.exitcode == 128 + signal.SIGINT


def test_a_folder_with_records_but_no_checkpoint_resumes_from_step_0_and_the_messages_agree(model_dir, tmp_path,
                                                                                           monkeypatch):
    full = train(_cfg(model_dir, tmp_path / "full", total_steps=2), reward_funcs=REWARDS)
    run = tmp_path / "run"
    # what a kill -9 before the first save leaves: records, no checkpoint
    train_killed_at(1, monkeypatch, _cfg(model_dir, run, total_steps=2), reward_funcs=REWARDS)
    assert read_jsonl(run / "metrics.jsonl") and not ck.list_checkpoints(run / "checkpoints")
    with pytest.raises(RunFolderError, match=r"resume it with --resume .*run \(from its last checkpoint, or from step 0 "
                                             r"when it has none\)"):
        train(_cfg(model_dir, run, total_steps=2), reward_funcs=REWARDS)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        train(None, resume=run, reward_funcs=REWARDS)  # its config.yaml
    said = [str(x.message) for x in w if "no checkpoint was saved yet" in str(x.message)]
    assert len(said) == 1 and "starts again from step 0" in said[0]
    a, b = read_jsonl(full / "metrics.jsonl"), read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in b] == [1, 2]
    for ma, mb in zip(a, b):
        assert all(ma[k] == mb[k] for k in COMPARED), ma["step"]


def test_spro_train_on_sigint_prints_one_line_and_exits_130(model_dir, tmp_path):
    """The command line: SIGINT while training; one line on how to resume (no traceback), exit status 130."""
    run = tmp_path / "run"
    cfg = tmp_path / "run.yaml"
    cfg.write_text("\n".join(o.replace("=", ": ", 1) for o in small_overrides(
        model_dir, run, total_steps=1000, **{"data.rewards": "[{name: arithmetic, weight: 1.0}]"})) + "\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "spro", "train", "--config", str(cfg)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    metrics = run / "metrics.jsonl"
    while proc.poll() is None and not (metrics.is_file() and metrics.read_text().count("\n") >= 2):
        try:
            proc.wait(0.2)
        except subprocess.TimeoutExpired:
            pass
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    (line,) = [x for x in err.splitlines() if x.startswith("spro train: stopped by SIGINT")]
    assert f"resume with: spro train --resume {run}" in line
    step = int(line.split("after step ")[1].split()[0])
    assert step >= 2 and ck.find_checkpoint(run).name == f"step-{step:06d}"
    RunLock(run).release()
