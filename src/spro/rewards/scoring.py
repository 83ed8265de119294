"""Scoring responses: one definition of a response's reward and of whether it is correct.

The trainer (training batches and periodic evaluation) and ``spro.experiments.evaluation`` both
score through a :class:`Scorer`: the reward of a response is the weighted sum of the values of
its reward functions that are not None (None = "not applicable"; a response no function could
score gets 0 and is counted), and it is correct when the value of the accuracy reward is
``>= correct_threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

__all__ = ["RewardFn", "RewardFunctionError", "Scores", "Scorer", "resolve_reward"]


class RewardFunctionError(ValueError):
    """A reward function returned something unusable (or failed on every response)."""


@dataclass
class RewardFn:
    """A reward function ``fn(prompts, completions, **columns) -> list[float | None]`` with its weight."""

    name: str
    fn: Callable[..., Any]
    weight: float = 1.0


@dataclass
class Scores:
    """rewards ``[B]`` float (weighted sum), correct ``[B]`` bool, scored ``[B]`` bool (some function
    gave a value), and counters (``reward/errors``, ``reward/none_frac``, ...) and each function's
    ``reward/<name>/mean`` and ``reward/<name>/std`` (None when it scored nothing)."""

    rewards: torch.Tensor
    correct: torch.Tensor
    scored: torch.Tensor
    stats: dict[str, float | None]


def resolve_reward(name: str, overrides: dict[str, Callable] | None = None) -> Callable[..., Any]:
    """``overrides[name]`` if given, else ``spro.rewards.get_reward(name)`` (a registered name or a
    ``module:function`` import path)."""
    if overrides and name in overrides:
        return overrides[name]
    from spro.options import ConfigError
    from spro.rewards import get_reward

    try:
        return get_reward(name)
    except ValueError as e:
        raise ConfigError(f"data.rewards: {e}") from None


class Scorer:
    """Scores batches of responses with weighted reward functions (see the module docstring).

    Args:
        rewards: the reward functions with their weights.
        accuracy_reward: name of the function whose value decides "correct" (None: the first).
        correct_threshold: a response is correct when that value is ``>=`` this.
    """

    def __init__(self, rewards: Sequence[RewardFn], *, accuracy_reward: str | None = None,
                 correct_threshold: float = 1.0) -> None:
        if not rewards:
            raise ValueError("Scorer: give at least one reward function")
        self.rewards = list(rewards)
        names = [rf.name for rf in self.rewards]
        acc_name = accuracy_reward or names[0]
        if acc_name not in names:
            raise ValueError(f"accuracy reward {acc_name!r} is not one of the reward functions ({', '.join(names)})")
        self.acc_index = names.index(acc_name)
        self.correct_threshold = correct_threshold

    @classmethod
    def of(cls, reward: Scorer | Callable[..., Any]) -> Scorer:
        """``reward`` itself if it is a Scorer, else a Scorer of that one function (correct: value >= 1)."""
        if isinstance(reward, Scorer):
            return reward
        return cls([RewardFn(getattr(reward, "__name__", "reward"), reward)])

    @classmethod
    def from_config(cls, data_cfg: Any, overrides: dict[str, Callable] | None = None) -> Scorer:
        """From a ``DataConfig`` (``rewards``, ``accuracy_reward``, ``correct_threshold``)."""
        fns = [RewardFn(s.name, resolve_reward(s.name, overrides), s.weight) for s in data_cfg.rewards]
        return cls(fns, accuracy_reward=data_cfg.accuracy_reward, correct_threshold=data_cfg.correct_threshold)

    def __call__(self, prompts: list, completions: list[str], columns: dict[str, list]) -> Scores:
        B = len(completions)
        total = torch.zeros(B, dtype=torch.float64)
        correct = torch.zeros(B, dtype=torch.bool)
        scored = torch.zeros(B, dtype=torch.bool)
        errors = nones = 0
        per_function: dict[str, float | None] = {}
        for k, rf in enumerate(self.rewards):
            values, n_err = self._call(rf, prompts, completions, columns)
            errors += n_err
            per_function.update(_mean_std(rf.name, values))
            for i, v in enumerate(values):
                if v is None:
                    nones += 1
                    continue
                total[i] += rf.weight * v
                scored[i] = True
                if k == self.acc_index:
                    correct[i] = v >= self.correct_threshold
        from spro.rewards import pop_reward_stats

        stats = {"reward/errors": float(errors), "reward/none_frac": nones / max(B * len(self.rewards), 1)}
        stats.update({f"reward/{k}": float(v) for k, v in pop_reward_stats().items()})
        stats.update(per_function)
        return Scores(total.float(), correct, scored, stats)

    @staticmethod
    def _call(rf: RewardFn, prompts: list, completions: list[str], columns: dict) -> tuple[list[float | None], int]:
        """Values of one reward (checked by ``spro.rewards.call_reward``) and the number of errors.

        A function that raises on the batch is called again response by response; responses on which
        it still raises get None and are counted. Raising on every response, or returning a wrong
        type / count / NaN, raises :class:`RewardFunctionError` naming the function.
        """
        from spro.rewards import RewardError, call_reward

        B = len(completions)
        try:
            return call_reward(rf.fn, prompts, completions, **columns), 0
        except RewardError as batch_exc:
            first_error = str(batch_exc)
            raised = batch_exc.__cause__ is not None and not isinstance(batch_exc.__cause__, RewardError)
            if not raised:
                raise RewardFunctionError(f"data.rewards '{rf.name}': {batch_exc}") from None
        values: list[float | None] = []
        errors = 0
        for i in range(B):
            try:
                values.append(call_reward(rf.fn, prompts[i : i + 1], completions[i : i + 1],
                                          **{c: col[i : i + 1] for c, col in columns.items()})[0])
            except RewardError as e:
                if e.__cause__ is None or isinstance(e.__cause__, RewardError):
                    raise RewardFunctionError(f"data.rewards '{rf.name}': {e}") from None
                values.append(None)
                errors += 1
        if errors == B:
            raise RewardFunctionError(f"data.rewards '{rf.name}' raised on every response: {first_error}")
        return values, errors


def _mean_std(name: str, values: list[float | None]) -> dict[str, float | None]:
    """``reward/<name>/mean`` and ``/std`` (sample std, as ``reward/std``) of one function's values that
    are not None (both None when it scored no response), TRL's per-function metrics."""
    vals = torch.tensor([v for v in values if v is not None], dtype=torch.float64)
    return {f"reward/{name}/mean": float(vals.mean()) if len(vals) else None,
            f"reward/{name}/std": (float(vals.std()) if len(vals) > 1 else 0.0) if len(vals) else None}
