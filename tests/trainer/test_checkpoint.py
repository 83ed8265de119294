"""Checkpoints: atomic writes, pruning, and kill / resume giving the same metrics on CPU."""

from __future__ import annotations


import pytest
import torch
from safetensors.torch import load_file

from helpers import REWARDS, read_jsonl, save_small_model, small_overrides, train_killed_at
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
