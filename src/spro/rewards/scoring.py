"""Scoring responses: one definition of a response's reward and of whether it is correct.

The trainer (training batches and periodic evaluation) and ``spro.experiments.evaluation`` both
score through a :class:`Scorer`: the reward of a response is the weighted sum of the values of
its reward functions that gave a value, by the one rule of ``spro.rewards.combine_values`` (TRL's:
None means "not applicable"); None when no function gave a value. Such a response is unscored (``Scores.scored`` False, counted in
``reward/none_frac``, a :class:`RewardWarning`); the batch tensor holds 0 for it. It is
correct when the value of the accuracy reward is ``>= correct_threshold``.

Failures are visible. A function that raises on the batch is called again response by response;
the responses it still raises on get None. A function of your own (anything not defined in
spro, whose rewards carry their own limits) runs in a worker thread with a time limit per call
(``timeout``, ``data.reward_timeout``); on time-out its responses get None (a call that never
returns keeps its thread, a daemon, until it does). Both are counted (``reward/errors``,
``reward/timeouts``) and reported with a :class:`RewardWarning` naming the function, the count
and the first error message: at the first failure of each function, and again each time the
share of a call's responses that fail is at least double the share last reported.
"""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

__all__ = ["WeightedReward", "RewardFunctionError", "RewardWarning", "Scores", "Scorer", "resolve_reward"]


class RewardFunctionError(ValueError):
    """A reward function returned something unusable (or failed on every response)."""


class RewardWarning(UserWarning):
    """A reward function raised on some responses or did not return in time."""


class _Timeout(Exception):
    pass


@dataclass
class _Health:
    """What went wrong with one reward function so far in this Scorer's life (a run)."""

    rows: int = 0
    errors: int = 0
    timeouts: int = 0
    first_error: str | None = None
    reported_rate: float = 0.0  # the failing share of a call at the last warning (0: none yet)


@dataclass
class WeightedReward:
    """A reward function ``fn(prompts, completions, **columns) -> list[float | None]`` (a
    ``spro.rewards.RewardFn``) with its name and weight."""

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

    def __init__(self, rewards: Sequence[WeightedReward], *, accuracy_reward: str | None = None,
                 correct_threshold: float = 1.0, timeout: float = 0.0) -> None:
        if not rewards:
            raise ValueError("Scorer: give at least one reward function")
        if not timeout >= 0:
            raise ValueError(f"Scorer: timeout must be >= 0 seconds (0 = none), got {timeout!r}")
        self.rewards = list(rewards)
        self.timeout = float(timeout)
        self.health = {rf.name: _Health() for rf in self.rewards}
        names = [rf.name for rf in self.rewards]
        acc_name = accuracy_reward or names[0]
        if acc_name not in names:
            raise ValueError(f"accuracy reward {acc_name!r} is not one of the reward functions ({', '.join(names)})")
        self.acc_index = names.index(acc_name)
        self.correct_threshold = correct_threshold
        self._warned_unscored = False

    @classmethod
    def of(cls, reward: Scorer | Callable[..., Any]) -> Scorer:
        """``reward`` itself if it is a Scorer, else a Scorer of that one function (correct: value >= 1)."""
        if isinstance(reward, Scorer):
            return reward
        return cls([WeightedReward(getattr(reward, "__name__", "reward"), reward)])

    @classmethod
    def from_config(cls, data_cfg: Any, overrides: dict[str, Callable] | None = None,
                    rewards: Sequence[tuple[str, float]] | None = None) -> Scorer:
        """From a ``DataConfig`` (``accuracy_reward``, ``correct_threshold``, ``reward_timeout``) and ``rewards``, the
        ``(name, weight)`` pairs to use (default: ``data_cfg.rewards``; ``spro.data.loader.reward_specs`` resolves a
        null one)."""
        from spro.options import ConfigError

        if rewards is None:
            if data_cfg.rewards is None:
                raise ConfigError("data.rewards is null: spro.data.loader.reward_specs gives the default reward")
            rewards = [(s.name, s.weight) for s in data_cfg.rewards]
        fns = [WeightedReward(name, resolve_reward(name, overrides), weight) for name, weight in rewards]
        try:
            return cls(fns, accuracy_reward=data_cfg.accuracy_reward, correct_threshold=data_cfg.correct_threshold,
                       timeout=data_cfg.reward_timeout)
        except ValueError as e:
            raise ConfigError(f"data.accuracy_reward: {e}") from None

    def __call__(self, prompts: list, completions: list[str], columns: dict[str, list]) -> Scores:
        B = len(completions)
        total = torch.zeros(B, dtype=torch.float64)
        correct = torch.zeros(B, dtype=torch.bool)
        scored = torch.zeros(B, dtype=torch.bool)
        from spro.rewards import combine_values, pop_reward_stats

        errors = timeouts = 0
        per_function: dict[str, float | None] = {}
        columns_of_values = []
        for rf in self.rewards:
            values, n_err, n_timeout, message = self._call(rf, prompts, completions, columns)
            self._report(rf, B, n_err, n_timeout, message)
            errors, timeouts = errors + n_err, timeouts + n_timeout
            per_function.update(_mean_std(rf.name, values))
            columns_of_values.append(values)
        for i, v in enumerate(columns_of_values[self.acc_index]):
            correct[i] = v is not None and v >= self.correct_threshold
        for i, v in enumerate(combine_values(columns_of_values, [rf.weight for rf in self.rewards])):
            if v is not None:
                total[i], scored[i] = v, True
        nones = sum(v is None for vals in columns_of_values for v in vals)
        unscored = B - int(scored.sum())
        if unscored and not self._warned_unscored:  # once per run (reward/none_frac counts every step)
            self._warned_unscored = True
            warnings.warn(f"{unscored} of {B} responses could not be scored (a reward function gave None for them: "
                          f"cannot be judged); they train with reward 0 (Scores.scored is False for them; metric reward/none_frac)",
                          RewardWarning, stacklevel=2)
        stats = {"reward/errors": float(errors), "reward/timeouts": float(timeouts),
                 "reward/none_frac": nones / max(B * len(self.rewards), 1)}
        stats.update({f"reward/{k}": float(v) for k, v in pop_reward_stats().items()})
        stats.update(per_function)
        return Scores(total.float(), correct, scored, stats)

    def _call(self, rf: WeightedReward, prompts: list, completions: list[str], columns: dict
              ) -> tuple[list[float | None], int, int, str | None]:
        """Values of one reward (checked by ``spro.rewards.call_reward``), the numbers of responses it raised on and
        timed out on, and the first error message.

        A function that raises on the batch is called again response by response; responses on which it still
        raises get None and are counted. A call that times out gives None to its responses (a timed-out batch is
        not retried). Raising on every response, or returning a wrong type / count / NaN, raises
        :class:`RewardFunctionError` naming the function.
        """
        from spro.rewards import RewardError

        B = len(completions)
        try:
            return self._limited(rf, prompts, completions, columns), 0, 0, None
        except _Timeout as e:
            return [None] * B, 0, B, str(e)
        except RewardError as batch_exc:
            first_error = str(batch_exc)
            raised = batch_exc.__cause__ is not None and not isinstance(batch_exc.__cause__, RewardError)
            if not raised:
                raise RewardFunctionError(f"data.rewards '{rf.name}': {batch_exc}") from None
        values: list[float | None] = []
        errors = timeouts = 0
        for i in range(B):
            try:
                values.append(self._limited(rf, prompts[i : i + 1], completions[i : i + 1],
                                            {c: col[i : i + 1] for c, col in columns.items()})[0])
            except _Timeout:
                values.append(None)
                timeouts += 1
            except RewardError as e:
                if e.__cause__ is None or isinstance(e.__cause__, RewardError):
                    raise RewardFunctionError(f"data.rewards '{rf.name}': {e}") from None
                values.append(None)
                errors += 1
        if errors == B:
            raise RewardFunctionError(f"data.rewards '{rf.name}' raised on every response: {first_error}")
        return values, errors, timeouts, first_error

    def _limited(self, rf: WeightedReward, prompts: list, completions: list[str], columns: dict) -> list[float | None]:
        """``call_reward``, in a worker thread with the time limit for a function of your own."""
        from spro.rewards import call_reward

        if not self.timeout or getattr(rf.fn, "__module__", "").startswith("spro."):
            return call_reward(rf.fn, prompts, completions, **columns)
        box: dict[str, Any] = {}

        def run() -> None:
            try:
                box["values"] = call_reward(rf.fn, prompts, completions, **columns)
            except BaseException as e:  # handed to the calling thread
                box["error"] = e

        worker = threading.Thread(target=run, name=f"spro-reward-{rf.name}", daemon=True)
        worker.start()
        worker.join(self.timeout)
        if worker.is_alive():
            raise _Timeout(f"reward function '{rf.name}' did not return within {self.timeout:g} s (data.reward_timeout)")
        if "error" in box:
            raise box["error"]
        return box["values"]

    def _report(self, rf: WeightedReward, rows: int, errors: int, timeouts: int, message: str | None) -> None:
        """Count a call's failures and warn at the first one and whenever the failing share doubles."""
        h = self.health[rf.name]
        h.rows, h.errors, h.timeouts = h.rows + rows, h.errors + errors, h.timeouts + timeouts
        h.first_error = h.first_error or message
        rate = (errors + timeouts) / max(rows, 1)
        if rate == 0 or (h.reported_rate and rate < 2 * h.reported_rate):
            return
        again = "the failing share has doubled since the last warning; " if h.reported_rate else ""
        h.reported_rate = rate
        warnings.warn(
            f"reward '{rf.name}': {errors + timeouts} of {rows} responses ({rate:.0%}) got no value in this call "
            f"({errors} raised, {timeouts} timed out); {again}{h.errors} raised and {h.timeouts} timed out of {h.rows} "
            f"responses so far. These responses count as None (metrics reward/errors, reward/timeouts). First error: "
            f"{h.first_error}", RewardWarning, stacklevel=3)


def _mean_std(name: str, values: list[float | None]) -> dict[str, float | None]:
    """``reward/<name>/mean`` and ``/std`` (sample std, as ``reward/std``) of one function's values that
    are not None (both None when it scored no response), TRL's per-function metrics."""
    vals = torch.tensor([v for v in values if v is not None], dtype=torch.float64)
    return {f"reward/{name}/mean": float(vals.mean()) if len(vals) else None,
            f"reward/{name}/std": (float(vals.std()) if len(vals) > 1 else 0.0) if len(vals) else None}
