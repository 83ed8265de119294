"""Outcome-only baselines: GRPO, Dr. GRPO and RLOO (one advantage per response, on every token)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spro.algorithms.core import OUTCOME_SCALES, outcome_advantage, rloo_advantage
from spro.algorithms.registry import AdvantageInputs, Algorithm, register_algorithm
from spro.options import Options, option


def _on_tokens(adv: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """[B] -> [B, T]: each response's advantage on its valid tokens, 0 on padding."""
    return adv.unsqueeze(1) * mask.to(adv.dtype)


@dataclass
class GRPOOptions(Options):
    outcome_scale: str = option(
        "group", help="'group' = (r - mean) / (std + eps) within the group (GRPO); 'none' = r - mean; 'batch' = "
        "(r - group mean) / (std of the step's whole batch + eps), TRL's scale_rewards='batch' (Lite PPO, Liu et al. "
        "2025, arXiv:2508.08221; the batch is each process's own in a data-parallel run).",
        choices=OUTCOME_SCALES,
    )
    eps: float = option(1e-6, help="Added to the group std before dividing.", check=(lambda v: v >= 0, ">= 0"))


@register_algorithm("grpo", options=GRPOOptions)
class GRPO(Algorithm):
    """GRPO (Shao et al. 2024, arXiv 2402.03300): the group-normalised outcome reward on every token."""

    reference = "arXiv:2402.03300"

    def advantages(self, x: AdvantageInputs) -> torch.Tensor:
        o = self.options
        return _on_tokens(outcome_advantage(x.rewards, x.group_ids, scale=o.outcome_scale, eps=o.eps), x.mask)


@register_algorithm("dr_grpo", loss_agg="seq-mean-token-sum-norm")
class DrGRPO(Algorithm):
    """Dr. GRPO (Liu et al. 2025, arXiv 2503.20783): r - group mean (no std), token sum / max length."""

    reference = "arXiv:2503.20783"

    def advantages(self, x: AdvantageInputs) -> torch.Tensor:
        return _on_tokens(outcome_advantage(x.rewards, x.group_ids, scale="none"), x.mask)


@register_algorithm("rloo")
class RLOO(Algorithm):
    """RLOO (Ahmadian et al. 2024, arXiv 2402.14740): r minus the mean of the group's other responses."""

    reference = "arXiv:2402.14740"

    def advantages(self, x: AdvantageInputs) -> torch.Tensor:
        return _on_tokens(rloo_advantage(x.rewards, x.group_ids), x.mask)
