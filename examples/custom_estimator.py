"""A credit-assignment idea of your own, trained beside GRPO and SPRO on equal terms.

From this folder (the module is imported from the working directory):

    spro compare --algos grpo,spro --variant loo:algorithm.name=custom_estimator:spro_loo \\
        --seeds 3 --out runs/custom total_steps=200

`spro compare` gives every arm the same config, budget and seeds, and reports them side by side.
"""

from dataclasses import dataclass

import torch

from spro.algorithms import AdvantageInputs, Options, option, register_algorithm
from spro.algorithms.core import outcome_advantage


@dataclass
class LOOOptions(Options):
    beta: float = option(0.01, help="Weight of the self-guided process reward.", check=(lambda v: v >= 0, ">= 0"))


@register_algorithm("spro_loo", options=LOOOptions, needs_reference=True)
def spro_loo(x: AdvantageInputs, o: LOOOptions) -> torch.Tensor:
    """SPRO, but each step's baseline is the mean of the OTHER responses that reach it (leave-one-out)."""
    m = x.mask.float()
    R = (o.beta * (x.logp - x.ref_logp) * m).cumsum(1) * m  # cumulative process reward [B, T]
    g = torch.unique(x.group_ids, return_inverse=True)[1]
    n = torch.zeros(int(g.max()) + 1, m.shape[1]).index_add_(0, g, m)[g]  # responses of the group at t
    others = (torch.zeros_like(n).index_add_(0, g, R)[g] - R) / (n - 1).clamp(min=1)
    process = torch.where(n > 1, R - others, 0.0)
    return (outcome_advantage(x.rewards, x.group_ids)[:, None] + process) * m
