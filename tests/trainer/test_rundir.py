"""Run folders that cannot be lost: no silent restart over a run, one trainer at a time, resume in place."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

from helpers import REWARDS, read_jsonl, small_overrides, train_killed_at
from spro.config import load_config
from spro.trainer import Trainer, train
from spro.trainer.rundir import RunFolderError, RunLock, holds_run


def _cfg(model_dir, out, **extra):
    return load_config(overrides=small_overrides(model_dir, out, "grpo", **{"total_steps": 1, **extra}))


def test_a_new_run_into_a_folder_holding_a_run_stops_and_loses_nothing(model_dir, tmp_path, capsys):
    run = tmp_path / "run"
    train(_cfg(model_dir, run), reward_funcs=REWARDS)
    before = (run / "metrics.jsonl").read_text()
    assert holds_run(run) and before
    with pytest.raises(RunFolderError, match=r"run holds a run.*--resume .*run.*another output_dir.*--overwrite to move "
                                             r"that run aside to .*run\.old-1"):
        train(_cfg(model_dir, run, seed=1), reward_funcs=REWARDS)
    assert (run / "metrics.jsonl").read_text() == before
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000001"]
    # --overwrite: the old run is moved aside whole, the new one starts in the folder
    with pytest.warns(UserWarning, match=r"the run that was in .*run is now in .*run\.old-1"):
        train(_cfg(model_dir, run, seed=1), overwrite=True, reward_funcs=REWARDS)
    assert (tmp_path / "run.old-1" / "metrics.jsonl").read_text() == before
    assert (tmp_path / "run.old-1" / "checkpoints" / "step-000001" / "model.safetensors").is_file()
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1]
    assert "seed: 1" in (run / "config.yaml").read_text()
    # the command line says what to do
    from spro.cli import main

    assert main(["train", *small_overrides(model_dir, run, "grpo", total_steps=1)]) == 1
    assert "holds a run" in capsys.readouterr().err
    assert main(["train", "--resume", str(run), "--overwrite"]) == 2
    assert "--resume continues the run in its folder and --overwrite starts a new one" in capsys.readouterr().err
    # an empty folder, or one with files that are not a run, is fine
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("mine")
    train(_cfg(model_dir, tmp_path / "empty"), reward_funcs=REWARDS)
    assert (tmp_path / "empty" / "notes.txt").read_text() == "mine"


LOCK_AND_DIE = textwrap.dedent("""
    import os, sys
    from pathlib import Path
    from spro.trainer.rundir import RunLock
    RunLock(Path(sys.argv[1]))
    os.kill(os.getpid(), 9)  # killed while holding the lock
""")


def test_one_trainer_per_folder_and_no_stale_lock_after_a_crash(model_dir, tmp_path):
    run = tmp_path / "run"
    first = Trainer(_cfg(model_dir, run), reward_funcs=REWARDS)  # holds the folder until it ends
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    over = small_overrides(model_dir, run, "grpo", **{"data.rewards": "[{name: arithmetic}]"})
    second = subprocess.run([sys.executable, "-m", "spro", "train", *over], capture_output=True, text=True, env=env)
    assert second.returncode == 1
    assert f"in use by another training process (pid {os.getpid()}" in second.stderr
    with pytest.raises(RunFolderError, match="in use by another training process"):
        Trainer(_cfg(model_dir, run), overwrite=True, reward_funcs=REWARDS)
    first.train()  # the lock goes with the run's end
    Trainer(_cfg(model_dir, tmp_path / "run"), resume=run, reward_funcs=REWARDS).close()
    # a process killed while holding the lock leaves its lock file, but not a lock
    other = tmp_path / "crashed"
    died = subprocess.run([sys.executable, "-c", LOCK_AND_DIE, str(other)], env=env)
    assert died.returncode == -9 and (other / ".lock").read_text().strip()
    RunLock(other).release()
    train(_cfg(model_dir, other), reward_funcs=REWARDS)


def test_resume_of_a_copied_run_writes_into_the_copy(model_dir, tmp_path, monkeypatch):
    run, copy = tmp_path / "run", tmp_path / "copy"
    cfg = _cfg(model_dir, run, total_steps=2, save_every=1, **{"data.rewards": "[{name: arithmetic}]"})
    train_killed_at(1, monkeypatch, cfg)
    shutil.copytree(run, copy)
    from spro.cli import main

    with pytest.warns(UserWarning, match=r"writing into its run folder .*copy, not output_dir=.*run"):
        assert main(["train", "--resume", str(copy)]) == 0
    assert [m["step"] for m in read_jsonl(copy / "metrics.jsonl")] == [1, 2]
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1]  # the original is untouched
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-000001"]
    assert (copy / "checkpoints" / "step-000002").is_dir()
    assert f"output_dir: {copy}" in (copy / "config.yaml").read_text()


def test_a_torn_last_line_does_not_block_resume(model_dir, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = _cfg(model_dir, run, total_steps=3, save_every=1)
    train_killed_at(2, monkeypatch, cfg, reward_funcs=REWARDS)
    with open(run / "metrics.jsonl", "a") as f:  # killed in the middle of writing step 3's record
        f.write('{"step": 3, "reward/me')
    with pytest.warns(UserWarning, match=r"metrics.jsonl: dropping its last line, cut off"):
        train(cfg, resume=run, reward_funcs=REWARDS)
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
    # a broken line elsewhere is not guessed at: the error names the file and the line
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(RunFolderError, match=r"metrics.jsonl, line 2: not a record"):
        train(_cfg(model_dir, run, total_steps=4, save_every=1), resume=run, reward_funcs=REWARDS)


# ------------------------------------------------------------------------------ commands that write a model folder


def test_export_and_sft_never_delete_a_run(model_dir, tmp_path, capsys):
    """`spro export --output RUN` and `spro sft --output RUN` refuse a run folder (or move it aside with --overwrite),
    refuse a folder a trainer uses, and replace an earlier model folder as before."""
    from spro.cli import main

    run = tmp_path / "run"
    train(_cfg(model_dir, run), reward_funcs=REWARDS)
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    for argv in (["export", "--model", str(model_dir), "--output", str(run)],
                 ["sft", "--output", str(run), "--steps", "1", "--no-progress"]):
        assert main(argv) == 2
        err = " ".join(capsys.readouterr().err.split())  # (rich wraps long lines)
        assert f"{run}: the folder holds a run, which writing the model would delete" in err and "--overwrite" in err
        assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
    # a checkpoint, a folder of runs: refused too
    for folder in (run / "checkpoints" / "step-000001", tmp_path):
        assert main(["export", "--model", str(model_dir), "--output", str(folder)]) == 2
        assert "writing the model would delete" in capsys.readouterr().err
    # --overwrite: the run is moved aside whole, the model written in its place
    with pytest.warns(UserWarning, match=r"what was in .*run is now in .*run\.old-1"):
        assert main(["export", "--model", str(model_dir), "--output", str(run), "--overwrite"]) == 0
    moved = sorted(p.relative_to(tmp_path / "run.old-1") for p in (tmp_path / "run.old-1").rglob("*"))
    assert moved == [p for p in before if p.name != ".lock"]  # (the lock file stays)
    assert (run / "config.json").is_file() and not (run / "metrics.jsonl").exists()
    # an earlier model folder is replaced without a word
    assert main(["export", "--model", str(model_dir), "--output", str(run)]) == 0
    # a folder a trainer is using: refused, --overwrite or not
    busy = tmp_path / "busy"
    lock = RunLock(busy)
    try:
        assert main(["export", "--model", str(model_dir), "--output", str(busy), "--overwrite"]) == 2
        assert f"a training process uses that folder (pid {os.getpid()})" in capsys.readouterr().err
    finally:
        lock.release()


def test_the_library_writer_refuses_a_run_folder(model_dir, tmp_path):
    from spro.models.loading import load_model_and_tokenizer, save_model_and_tokenizer

    run = train(_cfg(model_dir, tmp_path / "run"), reward_funcs=REWARDS)
    model, tok = load_model_and_tokenizer(model_dir)
    with pytest.raises(RunFolderError, match="holds a run"):
        save_model_and_tokenizer(model, tok, run)
    assert (run / "metrics.jsonl").read_text()


def test_a_forked_child_does_not_keep_the_lock(tmp_path):
    """A reward worker forked by a trainer shares its open files: it must not keep the folder locked after the
    trainer dies."""
    import multiprocessing

    ready = multiprocessing.get_context("fork").Event()
    done = multiprocessing.get_context("fork").Event()

    def child():
        ready.set()
        done.wait()
        os._exit(0)

    lock = RunLock(tmp_path / "run")
    p = multiprocessing.get_context("fork").Process(target=child)
    p.start()
    ready.wait()
    lock.release()  # (the trainer's end; a kill drops its share the same way)
    RunLock(tmp_path / "run").release()  # free, although the child is still alive
    done.set()
    p.join()
    assert p.exitcode == 0  # (the child ran to its end)
