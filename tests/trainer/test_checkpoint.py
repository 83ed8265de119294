"""Checkpoints: atomic writes, pruning, and kill / resume giving the same metrics on CPU."""

from __future__ import annotations

import re
import shutil
import warnings

import pytest
import torch
from safetensors.torch import load_file

from helpers import REWARDS, read_jsonl, small_overrides, train_killed_at
from spro.trainer import checkpoint as ck
from spro.config import load_config
from spro.trainer import Trainer, train

COMPARED = ("reward/mean", "reward/std", "accuracy", "entropy", "length/mean", "kl", "loss", "grad_norm",
            "lr", "clip/low_frac", "process/cpr_final_mean", "process/msa_abs_mean")


def _cfg(model_dir, out, **extra):
    extra.setdefault("total_steps", 4)
    extra.setdefault("save_every", 2)
    return load_config(overrides=small_overrides(model_dir, out, "spro", **{"optim.scheduler": "cosine",
                                                                              "optim.warmup_steps": 1, **extra}))


def test_kill_and_resume_gives_the_same_metrics(model_dir, tmp_path, monkeypatch):
    full = train(_cfg(model_dir, tmp_path / "full"), reward_funcs=REWARDS)

    # the same run, killed during step 3 (after the step-2 checkpoint)
    train_killed_at(2, monkeypatch, _cfg(model_dir, tmp_path / "killed"), reward_funcs=REWARDS)
    assert [p.name for p in ck.list_checkpoints(tmp_path / "killed" / "checkpoints")] == ["step-000002"]

    train(_cfg(model_dir, tmp_path / "killed"), resume=tmp_path / "killed", reward_funcs=REWARDS)
    a = read_jsonl(full / "metrics.jsonl")
    b = read_jsonl(tmp_path / "killed" / "metrics.jsonl")
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    for ma, mb in zip(a, b):
        for k in COMPARED:
            assert ma[k] == mb[k], (ma["step"], k, ma[k], mb[k])  # exact equality
    assert [e["eval/accuracy"] for e in read_jsonl(full / "eval.jsonl")] == \
           [e["eval/accuracy"] for e in read_jsonl(tmp_path / "killed" / "eval.jsonl")]
    wa = load_file(str(full / "checkpoints" / "step-000004" / "model.safetensors"))
    wb = load_file(str(tmp_path / "killed" / "checkpoints" / "step-000004" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_crash_during_save_keeps_previous_checkpoint(model_dir, tmp_path, monkeypatch):
    real_save = torch.save
    count = {"scheduler": 0}

    def crashing_save(obj, f, *a, **kw):
        if str(f).endswith("scheduler.pt"):
            count["scheduler"] += 1
            if count["scheduler"] == 2:  # the second checkpoint dies half-written
                raise OSError("disk full (simulated)")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(ck.torch, "save", crashing_save)
    with pytest.raises(OSError, match="simulated"):
        train(_cfg(model_dir, tmp_path / "run", total_steps=2, save_every=1), reward_funcs=REWARDS)
    root = tmp_path / "run" / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step-000001"]  # no partial folder left
    assert ck.find_checkpoint(tmp_path / "run").name == "step-000001"
    assert ck.read_trainer_state(root / "step-000001")["step"] == 1
    load_file(str(root / "step-000001" / "model.safetensors"))  # intact and readable


def test_hard_kill_leftovers_are_ignored_and_cleaned(model_dir, tmp_path):
    out = train(_cfg(model_dir, tmp_path / "run", total_steps=1, save_every=1), reward_funcs=REWARDS)
    root = out / "checkpoints"
    # what a SIGKILL in the middle of writing step 2 leaves behind: a hidden temp folder
    partial = root / ".tmp-step-000002-abcd"
    partial.mkdir()
    (partial / "model.safetensors").write_bytes(b"\0" * 10)
    (partial / "trainer_state.json").write_text('{"step": 2')
    assert ck.find_checkpoint(out).name == "step-000001"
    train(_cfg(model_dir, tmp_path / "run", total_steps=2, save_every=1), resume=out, reward_funcs=REWARDS)
    assert sorted(p.name for p in root.iterdir()) == ["step-000001", "step-000002"]


def test_keep_last_prunes_old_checkpoints(model_dir, tmp_path):
    out = train(_cfg(model_dir, tmp_path / "run", total_steps=3, save_every=1, keep_last=2), reward_funcs=REWARDS)
    names = [p.name for p in ck.list_checkpoints(out / "checkpoints")]
    assert names == ["step-000002", "step-000003"]
    c = out / "checkpoints" / "step-000003"
    for f in ("config.json", "model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pt",
              "trainer_state.json", "run_config.yaml", "tokenizer.json"):
        assert (c / f).is_file(), f
    state = ck.read_trainer_state(c)
    assert state["step"] == 3 and state["data_position"] == 6 and state["time"] > 0
    # the checkpoint is a loadable Hugging Face model folder
    from spro.models.loading import load_model_and_tokenizer

    load_model_and_tokenizer(c)


def test_resume_with_a_different_config_names_the_keys(model_dir, tmp_path):
    out = train(_cfg(model_dir, tmp_path / "run", total_steps=1, save_every=1), reward_funcs=REWARDS)
    other = _cfg(model_dir, tmp_path / "run", total_steps=2, **{"algorithm.spro.beta": 0.5, "optim.lr": 2e-5})
    with pytest.raises(ck.CheckpointError, match=r"different config.*algorithm\.spro\.beta: 0\.05.*0\.5.*optim\.lr"):
        Trainer(other, resume=out, reward_funcs=REWARDS)
    with pytest.raises(ck.CheckpointError, match="no complete checkpoint"):
        Trainer(other, resume=tmp_path, reward_funcs=REWARDS)


# ------------------------------------------------------------------------------ corrupt checkpoints


@pytest.fixture(scope="module")
def two_checkpoints(model_dir, tmp_path_factory):
    """A finished 2-step run with checkpoints at steps 1 and 2 (copy it before damaging it)."""
    out = tmp_path_factory.mktemp("ckpts") / "run"
    return train(_cfg(model_dir, out, total_steps=2, save_every=1), reward_funcs=REWARDS)


def _damage(path, how):
    data = path.read_bytes()
    if how == "truncated":
        path.write_bytes(data[: len(data) // 2])
    else:  # garbled: same size, one byte changed
        i = len(data) // 2
        path.write_bytes(data[:i] + bytes([data[i] ^ 0xFF]) + data[i + 1 :])


FILES = ["model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pt", "trainer_state.json", "run_config.yaml",
         "tokenizer_config.json", "checksums.json"]


@pytest.mark.parametrize("how", ["truncated", "garbled"])
@pytest.mark.parametrize("name", FILES)
def test_a_corrupt_file_is_named_and_resume_falls_back_to_the_newest_good_checkpoint(two_checkpoints, tmp_path,
                                                                                     name, how):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    bad = run / "checkpoints" / "step-000002" / name
    _damage(bad, how)
    with pytest.raises(ck.CheckpointError, match=re.escape(str(bad))):
        ck.verify_checkpoint(bad.parent)
    with pytest.raises(ck.CheckpointError, match=re.escape(str(bad))):
        ck.find_checkpoint(bad.parent)  # a checkpoint named on its own must verify
    with pytest.warns(UserWarning, match=f"skipping a corrupt checkpoint: {re.escape(str(bad))}.*step-000001"):
        assert ck.find_checkpoint(run).name == "step-000001"


def test_resume_skips_a_corrupt_newest_checkpoint_and_pruning_keeps_the_last_good(two_checkpoints, model_dir,
                                                                                   tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    _damage(run / "checkpoints" / "step-000002" / "optimizer.pt", "garbled")
    with pytest.warns(UserWarning, match="skipping a corrupt checkpoint: .*step-000002/optimizer.pt"):
        t = Trainer(_cfg(model_dir, run, total_steps=3, save_every=1, keep_last=1), resume=run,
                    reward_funcs=REWARDS)
    assert t.step == 1
    t.train()  # step 2 is saved again (replacing the corrupt one), then step 3
    assert [p.name for p in ck.list_checkpoints(run / "checkpoints")] == ["step-000003"]
    ck.verify_checkpoint(run / "checkpoints" / "step-000003")
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 2, 3]
    with pytest.raises(ck.CheckpointError, match="no checkpoint verifies"):
        _damage(run / "checkpoints" / "step-000003" / "model.safetensors", "truncated")
        ck.find_checkpoint(run)


def test_pruning_never_deletes_the_checkpoint_just_saved(two_checkpoints, model_dir, tmp_path):
    """A checkpoint of a later step already in the folder (a stale one, say) does not push out the new one."""
    t = Trainer(_cfg(model_dir, tmp_path / "run", total_steps=1, save_every=1, keep_last=1), reward_funcs=REWARDS)
    root = t.train() / "checkpoints"
    shutil.copytree(two_checkpoints / "checkpoints" / "step-000002", root / "step-000009")
    ck.save_checkpoint(root, 3, model=t.model, tokenizer=t.tok, optimizer=t.optimizer, scheduler=t.scheduler,
                       run_config={}, trainer_state={"time": 0.0}, rng_states=[ck.rng_state()], keep_last=1)
    assert [p.name for p in ck.list_checkpoints(root)] == ["step-000003", "step-000009"]  # step 1 pruned


# ------------------------------------------------------------------------------ missing files, fault injection


@pytest.mark.parametrize("name", ck.REQUIRED)
def test_a_missing_file_is_named_and_resume_falls_back(two_checkpoints, tmp_path, name):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    gone = run / "checkpoints" / "step-000002" / name
    gone.unlink()
    with pytest.raises(ck.CheckpointError, match=re.escape(str(gone)) + ": missing from the checkpoint"):
        ck.verify_checkpoint(gone.parent)
    with pytest.warns(UserWarning, match=f"skipping a corrupt checkpoint: {re.escape(str(gone))}: missing.*step-000001"):
        assert ck.find_checkpoint(run).name == "step-000001"


def test_a_file_missing_from_checksums_and_disk_and_garbled_weights_without_checksums_are_caught(two_checkpoints,
                                                                                                 tmp_path):
    """The audit's case: checksums.json deleted and a weight byte flipped: not taken unverified any more."""
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    (run / "checkpoints" / "step-000002" / "checksums.json").unlink()
    _damage(run / "checkpoints" / "step-000002" / "model.safetensors", "garbled")
    with pytest.warns(UserWarning, match=r"checksums.json: missing from the checkpoint \(the checkpoint cannot be "
                                         r"verified\); taking .*step-000001"):
        assert ck.find_checkpoint(run).name == "step-000001"


def test_the_skipped_checkpoint_warning_is_given_once(two_checkpoints, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    (run / "checkpoints" / "step-000002" / "trainer_state.json").unlink()  # named too, not silently passed over
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        for _ in range(3):  # (the train command and the trainer both look the checkpoint up)
            assert ck.find_checkpoint(run).name == "step-000001"
    assert len([x for x in w if "skipping" in str(x.message) and "trainer_state.json" in str(x.message)]) == 1


def test_metrics_shorter_than_the_checkpoint_are_named_on_resume(two_checkpoints, model_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(two_checkpoints, run)
    lines = (run / "metrics.jsonl").read_text().splitlines()
    (run / "metrics.jsonl").write_text(lines[0] + "\n")  # step 2's record lost
    with pytest.warns(UserWarning, match=r"metrics.jsonl: has no record of step\(s\) 2 \(1 of the checkpoint's 2 "
                                         r"steps; deleted or emptied\?\)"):
        train(_cfg(model_dir, run, total_steps=3, save_every=1), resume=run, reward_funcs=REWARDS)
    assert [m["step"] for m in read_jsonl(run / "metrics.jsonl")] == [1, 3]


def test_a_full_disk_is_one_line_naming_the_folder_and_the_space_and_leaves_no_stray_files(model_dir, tmp_path,
                                                                                            monkeypatch):
    import errno
    import os

    from spro.trainer import logger as logger_mod

    t = Trainer(_cfg(model_dir, tmp_path / "run", total_steps=1, save_every=1), reward_funcs=REWARDS)
    t.train()
    root = tmp_path / "run" / "checkpoints"

    def torch_full(obj, f, *a, **kw):  # what torch says when the disk fills during a save
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 4736 vs 4624")

    monkeypatch.setattr(ck.torch, "save", torch_full)
    monkeypatch.setattr(ck.shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9 - 2**19, 2**19))
    with pytest.raises(ck.DiskFullError) as e:
        t.save()
    message = str(e.value)
    assert "\n" not in message and f"no space left on the device of {root}" in message
    assert "0.5 MB free" in message and "it needs about" in message and "unexpected pos" in message
    assert sorted(p.name for p in root.iterdir()) == ["step-000001"]  # no temporary folder left
    monkeypatch.undo()

    def no_space(*a, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(logger_mod.os, "replace", no_space)
    with pytest.raises(ck.DiskFullError, match=f"no space left on the device of {re.escape(str(tmp_path / 'run'))}"):
        train(_cfg(model_dir, tmp_path / "run", total_steps=2, save_every=1), resume=tmp_path / "run",
              reward_funcs=REWARDS)
    assert not [p.name for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]  # no .metrics.jsonl.tmp
    assert os.path.getsize(tmp_path / "run" / "metrics.jsonl") > 0


def _killed_run(cfg, stage):
    """Train ``cfg`` in a forked child with ``SPRO_FAULT_AT=stage``: it must die by SIGKILL there."""
    import multiprocessing
    import os
    import signal

    def child():
        # a forked child must not enter the OpenMP thread pool of its parent (torch's is not fork-safe: with
        # more than one thread the child crashes or hangs in its first parallel region)
        torch.set_num_threads(1)
        os.environ["SPRO_FAULT_AT"] = stage
        train(cfg, reward_funcs=REWARDS)
        os._exit(0)

    p = multiprocessing.get_context("fork").Process(target=child)
    p.start()
    p.join()
    assert p.exitcode == -signal.SIGKILL, f"{stage}: not killed (exit code {p.exitcode})"


@pytest.fixture(scope="module")
def full_run(model_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("fault") / "full"
    return train(_cfg(model_dir, out, keep_last=1), reward_funcs=REWARDS)


@pytest.mark.parametrize("stage", ck.FAULT_STAGES)
def test_sigkill_at_every_stage_of_a_save_resumes_bit_identical(full_run, model_dir, tmp_path, stage):
    """SIGKILL at each named point of the step-4 save (the step-2 one is done): nothing corrupt, and the resumed run
    gives the very metrics and weights of a run never killed."""
    run = tmp_path / "run"
    cfg = _cfg(model_dir, run, keep_last=1)
    _killed_run(cfg, f"{stage}@4")
    survivor = ck.find_checkpoint(run)  # the newest checkpoint verifies (no warning: none is corrupt)
    after_rename = ck.FAULT_STAGES.index(stage) >= ck.FAULT_STAGES.index("rename")
    assert survivor.name == ("step-000004" if after_rename else "step-000002")
    if not after_rename:
        train(_cfg(model_dir, run, keep_last=1), resume=run, reward_funcs=REWARDS)
    a, b = read_jsonl(full_run / "metrics.jsonl"), read_jsonl(run / "metrics.jsonl")
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    for ma, mb in zip(a, b):
        for k in COMPARED:
            assert ma[k] == mb[k], (stage, ma["step"], k)
    wa = load_file(str(full_run / "checkpoints" / "step-000004" / "model.safetensors"))
    wb = load_file(str(run / "checkpoints" / "step-000004" / "model.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert ck.list_checkpoints(run / "checkpoints")[-1].name == "step-000004"
    if not after_rename:  # the resumed run's save removed what the killed one left
        assert [p.name for p in (run / "checkpoints").iterdir()] == ["step-000004"]


def test_sigkill_while_saving_prime_state_resumes_bit_identical(model_dir, tmp_path):
    """PRIME saves its PRM into the checkpoint (the "algorithm" stage): a kill right after it loses nothing."""
    def cfg(out):
        return load_config(overrides=small_overrides(model_dir, out, "prime", total_steps=4, save_every=2,
                                                     **{"algorithm.prime.prm_lr": 1e-3}))

    full = train(cfg(tmp_path / "full"), reward_funcs=REWARDS)
    _killed_run(cfg(tmp_path / "run"), "algorithm@4")
    assert ck.find_checkpoint(tmp_path / "run").name == "step-000002"
    train(cfg(tmp_path / "run"), resume=tmp_path / "run", reward_funcs=REWARDS)
    a, b = read_jsonl(full / "metrics.jsonl"), read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [m["step"] for m in b] == [1, 2, 3, 4]
    assert all(ma[k] == mb[k] for ma, mb in zip(a, b) for k in ma if k.startswith(("reward/", "loss", "prm/", "kl")))
    for name in ("model.safetensors", "algorithm"):
        pa, pb = full / "checkpoints" / "step-000004" / name, tmp_path / "run" / "checkpoints" / "step-000004" / name
        for fa in ([pa] if pa.is_file() else sorted(pa.rglob("*.safetensors"))):
            fb = pb / fa.relative_to(pa) if pa.is_dir() else pb
            wa, wb = load_file(str(fa)), load_file(str(fb))
            assert all(torch.equal(wa[k], wb[k]) for k in wa), fa
