"""Messages that tell a user what a run's numbers mean and what to try: a run whose groups all score
the same, and a resumed run that has already finished."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

__all__ = ["ZeroVarianceWatch", "FLAT_STEPS", "finished_run_message"]

FLAT_STEPS = 5  # consecutive steps with groups/zero_variance_frac == 1 before the warning


class ZeroVarianceWatch:
    """Warns once when ``steps`` consecutive steps have every group's rewards equal
    (``groups/zero_variance_frac == 1``): every outcome advantage is then 0."""

    def __init__(self, steps: int = FLAT_STEPS) -> None:
        self.steps, self.run, self.warned = steps, 0, False

    def __call__(self, metrics: dict[str, Any]) -> str | None:
        """Look at one step's metrics; returns the message when it warns."""
        frac = metrics.get("groups/zero_variance_frac")
        self.run = self.run + 1 if frac is not None and frac >= 1.0 else 0
        if self.warned or self.run < self.steps:
            return None
        self.warned = True
        step = int(metrics.get("step", 0))
        reward = metrics.get("reward/mean")
        same = f" (reward/mean {reward:.3g})" if isinstance(reward, float) else ""
        msg = (f"steps {step - self.steps + 1}-{step}: in every group all responses got the same reward{same} "
               "(groups/zero_variance_frac = 1), so every outcome advantage is 0 and the policy learns nothing from the "
               "reward (SPRO's process term alone still moves it, away from the reference). Most often the model never "
               "(or always) solves the prompts: read a few completions (logging.log_completions=4) and their rewards, "
               "start from a stronger model (an instruct model, or a warm start with spro sft), use easier prompts, "
               "raise rollout.num_generations or rollout.max_new_tokens, or add a shaped reward (e.g. data.rewards="
               "[math, {name: format, weight: 0.2}]).")
        warnings.warn(msg, UserWarning, stacklevel=2)
        return msg


def finished_run_message(folder: Path, step: int, total_steps: int) -> str:
    """What ``--resume`` of a run that has reached ``total_steps`` says."""
    return (f"--resume {folder}: the run has finished (step {step} of total_steps={total_steps}), so there is nothing to "
            f"train. To train further, resume with a higher total_steps: spro train --resume {folder} "
            f"total_steps={max(2 * total_steps, step + 1)}")
