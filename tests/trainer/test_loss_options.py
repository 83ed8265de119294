"""The TRL-parity loss options in the trainer: algorithm.mask_truncated_completions and
algorithm.importance_sampling_level reach the policy loss."""

from __future__ import annotations

import pytest
import torch

from helpers import REWARDS, small_overrides
from spro.config import ConfigError, load_config
from spro.trainer import Trainer


def _record(model_dir, tmp_path, monkeypatch, **extra):
    import spro.trainer.loop as loop

    cfg = load_config(overrides=small_overrides(model_dir, tmp_path / "run", "grpo", total_steps=1, **extra))
    t = Trainer(cfg, reward_funcs=REWARDS)
    calls, seen, real_loss = [], {}, loop.policy_loss
    monkeypatch.setattr(loop, "policy_loss", lambda *a, **kw: calls.append((a, kw)) or real_loss(*a, **kw))
    real_update = t.ppo_update
    t.ppo_update = lambda s, adv, step: seen.update(s=s) or real_update(s, adv, step)
    metrics = t.train_step()
    return calls, seen["s"], metrics


@pytest.mark.parametrize("on", [False, True])
def test_mask_truncated_completions_leaves_them_out_of_the_loss(model_dir, tmp_path, monkeypatch, on):
    # max_new_tokens=3: the random model rarely stops that early, so most responses are truncated
    calls, s, metrics = _record(model_dir, tmp_path, monkeypatch, **{
        "rollout.max_new_tokens": 3, "algorithm.mask_truncated_completions": on, "algorithm.loss_agg": "token-mean"})
    truncated = s.batch.truncated.bool()
    assert bool(truncated.any())
    (args, kw), = calls
    expected = s.x.mask & ~truncated.unsqueeze(1) if on else s.x.mask
    assert torch.equal(args[3].bool(), expected)
    assert float(kw["normaliser"]) == float(expected.sum())  # token-mean counts only the kept tokens
    assert metrics["length/truncated_frac"] == pytest.approx(float(truncated.float().mean()))


def test_importance_sampling_level_reaches_the_loss(model_dir, tmp_path, monkeypatch):
    calls, _, _ = _record(model_dir, tmp_path, monkeypatch, **{"algorithm.importance_sampling_level": "sequence"})
    assert [kw["importance_sampling_level"] for _, kw in calls] == ["sequence"]
    with pytest.raises(ConfigError, match="importance_sampling_level"):
        load_config(overrides=["algorithm.importance_sampling_level=seq"])


def test_batch_outcome_scale_is_a_choice():
    cfg = load_config(overrides=["algorithm.name=grpo", "algorithm.grpo.outcome_scale=batch"])
    assert cfg.algorithm.options.outcome_scale == "batch"
    cfg = load_config(overrides=["algorithm.spro.outcome_scale=batch"])
    assert cfg.algorithm.options.outcome_scale == "batch"
