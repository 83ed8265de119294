"""spro's TRL-parity options against a transcription of TRL 1.16's GRPOTrainer (trl/trainer/grpo_trainer.py):
GSPO's sequence-level importance ratio (``importance_sampling_level="sequence"``, arXiv:2507.18071) in
:func:`spro.algorithms.losses.policy_loss`, and ``scale_rewards="batch"`` / ``"group"`` / ``"none"`` in
:func:`spro.algorithms.core.outcome_advantage`. The transcription is checked against the installed TRL's
source text when TRL is installed, so that it cannot drift silently."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

from spro.algorithms.core import outcome_advantage
from spro.algorithms.losses import policy_loss

# ---------------------------------------------------------------- the transcription (TRL 1.16.0, beta = 0)


def trl_loss(per_token_logps, old_per_token_logps, advantages, mask, *, epsilon_low, epsilon_high, loss_type,
             importance_sampling_level, max_completion_length=None):
    """GRPOTrainer._compute_loss for loss_type in grpo / dapo / dr_grpo, beta = 0, one process
    (num_items_in_batch = mask.sum()), no vLLM correction, no delta, no entropy mask."""
    if advantages.dim() == 1:
        advantages = advantages.unsqueeze(1)
    log_ratio = per_token_logps - old_per_token_logps
    if importance_sampling_level == "token":
        log_importance_weights = log_ratio
    elif importance_sampling_level == "sequence":
        log_importance_weights = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
        log_importance_weights = log_importance_weights.unsqueeze(-1)
    coef_1 = torch.exp(log_importance_weights)
    coef_2 = torch.clamp(coef_1, 1 - epsilon_low, 1 + epsilon_high)
    per_token_loss1 = coef_1 * advantages
    per_token_loss2 = coef_2 * advantages
    per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
    if loss_type == "grpo":
        return ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "dr_grpo":
        return (per_token_loss * mask).sum() / (per_token_loss.size(0) * max_completion_length)
    normalizer = mask.sum()  # dapo: num_items_in_batch / num_processes
    return (per_token_loss * mask).sum() / normalizer


def trl_advantages(rewards, num_generations, scale_rewards):
    """The sum_then_normalize branch of GRPOTrainer._generate_and_score_completions (every row scorable)."""
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        std_rewards = rewards.view(-1, num_generations).std(dim=1)  # trl.trainer.utils.nanstd: unbiased
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    elif scale_rewards == "batch":
        std_rewards = rewards.std().expand_as(rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    return advantages


def test_the_transcription_is_trls_code():
    trl_trainer = pytest.importorskip("trl.trainer.grpo_trainer")
    src = inspect.getsource(trl_trainer.GRPOTrainer)
    for line in (
        "log_importance_weights = (log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)",
        "coef_2 = torch.clamp(coef_1, 1 - self.epsilon_low, 1 + self.epsilon_high)",
        "per_token_loss = -torch.min(per_token_loss1, per_token_loss2)",
        "loss = ((per_token_loss * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()",
        "std_rewards = nanstd(rewards).expand_as(rewards)",
        "advantages = advantages / (std_rewards + 1e-4)",
        "completion_mask = completion_mask * (~is_truncated).unsqueeze(1).int()",
    ):
        assert line in src, line


# ---------------------------------------------------------------- GSPO's ratio


def _batch(seed, B=6, T=7):
    rng = np.random.default_rng(seed)
    mask = torch.tensor(rng.random((B, T)) < 0.8, dtype=torch.float64)
    mask[:, 0] = 1.0
    old = torch.tensor(-np.abs(rng.normal(size=(B, T))), dtype=torch.float64)
    logp = old + torch.tensor(rng.normal(size=(B, T)) * 0.4, dtype=torch.float64)
    adv = torch.tensor(rng.normal(size=B), dtype=torch.float64)
    return logp, old, adv, mask


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("level", ["sequence", "token"])
@pytest.mark.parametrize("loss_type, agg", [("grpo", "seq-mean-token-mean"), ("dapo", "token-mean"),
                                            ("dr_grpo", "seq-mean-token-sum-norm")])
@pytest.mark.parametrize("eps", [(0.2, 0.2), (0.003, 0.004), (0.2, 0.28)])
def test_policy_loss_matches_trl(seed, level, loss_type, agg, eps):
    """Same loss and same gradient with respect to the policy's log-probs, one advantage per response."""
    logp, old, adv, mask = _batch(seed)
    lp1 = logp.clone().requires_grad_(True)
    ours, _ = policy_loss(lp1, old, adv.unsqueeze(1).expand_as(mask).clone(), mask, clip_eps_low=eps[0],
                          clip_eps_high=eps[1], agg=agg, max_completion_length=mask.shape[1],
                          importance_sampling_level=level)
    ours.backward()
    lp2 = logp.clone().requires_grad_(True)
    theirs = trl_loss(lp2, old, adv, mask, epsilon_low=eps[0], epsilon_high=eps[1], loss_type=loss_type,
                      importance_sampling_level=level, max_completion_length=mask.shape[1])
    theirs.backward()
    torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(lp1.grad * mask, lp2.grad * mask, rtol=1e-12, atol=1e-14)


# ---------------------------------------------------------------- scale_rewards


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_outcome_advantage_matches_trls_scale_rewards(seed, scale):
    rng = np.random.default_rng(seed)
    G, n = 4, 5
    r = torch.tensor(rng.normal(size=G * n) if seed % 2 else rng.integers(0, 2, size=G * n), dtype=torch.float64)
    r[:G] = 1.0  # one group of equal rewards
    group_ids = torch.arange(G * n) // G
    ours = outcome_advantage(r, group_ids, scale=scale, eps=1e-4)
    torch.testing.assert_close(ours, trl_advantages(r, G, scale), rtol=1e-10, atol=1e-10)
    assert bool((ours[:G] == 0).all())


def test_batch_scale_uses_the_batch_std_not_the_group_std():
    r = torch.tensor([0.0, 2.0, 0.0, 20.0])  # groups {0, 2} and {0, 20}
    g = torch.tensor([0, 0, 1, 1])
    std = float(r.std())
    torch.testing.assert_close(outcome_advantage(r, g, scale="batch", eps=0.0),
                               torch.tensor([-1.0, 1.0, -10.0, 10.0]) / std)
    torch.testing.assert_close(outcome_advantage(r, g, scale="group", eps=0.0),
                               torch.tensor([-1.0, 1.0, -1.0, 1.0]) / 2**0.5)
    # a batch of equal rewards: exactly 0 (no 0 / 0), also with eps = 0
    assert bool((outcome_advantage(torch.ones(4), g, scale="batch", eps=0.0) == 0).all())
