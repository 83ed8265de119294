"""The responses of a training step: what the update needs about them, and the rounds of a step.

A step samples one round of ``rollout.prompts_per_step`` prompts, or more when the algorithm keeps
too few of them (``Algorithm.max_rounds``, PRIME's refill): :func:`combine` joins the rounds,
:func:`first_groups` picks the kept groups that train.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from spro.algorithms.registry import AdvantageInputs
from spro.options import ConfigError
from spro.rollout import RolloutBatch

if TYPE_CHECKING:
    from spro.schema import TrainConfig

__all__ = ["Step", "Round", "batch_sizes", "groups_kept", "combine", "first_groups"]


@dataclass
class Step:
    """The responses of a step that train, with everything the update needs about them."""

    batch: RolloutBatch
    x: AdvantageInputs  # rewards, mask, group ids, log pi_old, log pi_ref, correctness
    fused: tuple[torch.Tensor, torch.Tensor | None] | None  # (logp, entropy) with their graph (on-policy)

    def select(self, idx: torch.Tensor) -> Step:
        fused = None if self.fused is None else tuple(None if t is None else t[idx] for t in self.fused)
        return Step(self.batch.select(idx), self.x.select(idx), fused)



@dataclass
class Round:
    """One round of sampling: its responses, their scores, the sampling policy's entropy ``[B, T]`` and
    which responses the algorithm keeps (``keep [B]`` bool, None: all)."""

    step: Step
    scores: Any  # spro.rewards.scoring.Scores
    entropy: torch.Tensor
    keep: torch.Tensor | None

    def groups_kept(self) -> int:
        ids = self.step.x.group_ids
        return int(torch.unique(ids if self.keep is None else ids[self.keep]).numel())


def groups_kept(rounds: list[Round]) -> int:
    """Number of groups the algorithm kept over the sampled rounds."""
    return sum(r.groups_kept() for r in rounds)


def combine(rounds: list[Round], pad_id: int) -> Round:
    """The rounds of a step as one."""
    if len(rounds) == 1:
        return rounds[0]
    steps = [r.step for r in rounds]
    batch = RolloutBatch.cat([s.batch for s in steps], pad_id)
    T = batch.completion_ids.shape[1]

    def cat(ts):
        return torch.cat([torch.nn.functional.pad(t, (0, T - t.shape[1])) for t in ts])

    xs = [s.x for s in steps]
    x = AdvantageInputs(torch.cat([x.rewards for x in xs]), batch.completion_mask, batch.group_ids,
                        cat([x.logp for x in xs]), None if xs[0].ref_logp is None else cat([x.ref_logp for x in xs]),
                        torch.cat([x.correct for x in xs]), xs[0].step)
    scores = [r.scores for r in rounds]
    stats = {k: sum(sc.stats.get(k, 0.0) for sc in scores) for k in scores[0].stats}
    stats["reward/none_frac"] = stats.get("reward/none_frac", 0.0) / len(scores)
    merged = type(scores[0])(x.rewards, x.correct, torch.cat([sc.scored for sc in scores]), stats)
    keep = torch.cat([r.keep if r.keep is not None else torch.ones(len(r.step.batch), dtype=torch.bool,
                                                                    device=r.step.x.mask.device) for r in rounds])
    return Round(Step(batch, x, None), merged, cat([r.entropy for r in rounds]), keep)


def first_groups(keep: torch.Tensor, group_ids: torch.Tensor, n: int) -> torch.Tensor:
    """Row indices of the first ``n`` groups that ``keep`` keeps (whole groups, in batch order)."""
    kept = group_ids[keep]
    first = torch.unique_consecutive(kept)[:n]
    return (keep & torch.isin(group_ids, first)).nonzero().squeeze(1)


def batch_sizes(cfg: TrainConfig, world: int) -> tuple[int, int, int, int]:
    """Per process: prompts and responses of a round, responses per mini-batch (optimizer step) and per
    micro-batch (forward/backward pass). ConfigError when they do not divide."""
    r, a = cfg.rollout, cfg.algorithm
    if r.prompts_per_step % world:
        raise ConfigError(f"rollout.prompts_per_step ({r.prompts_per_step}) must be divisible by the number of "
                          f"processes ({world}) so that every group stays on one process")
    prompts = r.prompts_per_step // world
    responses = prompts * r.num_generations
    mini = a.mini_batch_size or responses
    if responses % mini:
        raise ConfigError(f"algorithm.mini_batch_size ({a.mini_batch_size}) must divide the per-process batch "
                          f"({responses} responses)")
    return prompts, responses, mini, mini // a.grad_accum_steps
