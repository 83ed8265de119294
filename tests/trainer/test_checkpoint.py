"""Checkpoints: atomic writes, pruning, and kill / resume giving the same metrics on CPU."""

from __future__ import annotations

import re
import shutil

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
