"""spro 0.1's ``spro.advantages``: the estimator functions and the estimator registry (deprecated).

``import spro.advantages`` gives this module. ``get_estimator(name)(rewards=, mask=, group_ids=,
logp=, ref_logp=, prm_logp=, **options)`` runs the registered algorithm ``name``;
``register_estimator(name)`` registers a function of those keywords as an algorithm. New code uses
``spro.algorithms`` (``get_algorithm``, ``register_algorithm``, ``AdvantageInputs``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import torch

from spro.algorithms import core
from spro.algorithms.core import (  # noqa: F401 (re-exported)
    cumulative_process_reward,
    masked_step_advantage,
    outcome_advantage,
    prime_advantage,
    rloo_advantage,
    spro_advantage,
)
from spro.algorithms.registry import AdvantageInputs, get_algorithm, list_algorithms, register_algorithm

_DATA_KEYS = ("rewards", "mask", "group_ids", "logp", "ref_logp", "prm_logp")


def get_estimator(name: str) -> Callable[..., torch.Tensor]:
    """``fn(rewards=, mask=, group_ids=, logp=, ref_logp=, prm_logp=, **options) -> [B, T]`` for the
    algorithm ``name`` (``beta`` is ignored by algorithms without it, as in 0.1)."""
    cls = get_algorithm(name)

    def estimator(**kwargs: Any) -> torch.Tensor:
        data = {k: kwargs.pop(k, None) for k in _DATA_KEYS}
        fields = {f.name for f in dataclasses.fields(cls.Options)}
        if "beta" in kwargs and "beta" not in fields:
            kwargs.pop("beta")
        unknown = sorted(set(kwargs) - fields)
        if unknown:
            raise ValueError(f"estimator {name!r} got unknown option(s) {', '.join(unknown)}; its options are: "
                             f"{', '.join(sorted(fields)) or '(none)'}")
        needed = ["rewards", "mask", "group_ids"] + (["logp", "ref_logp"] if cls.needs_reference else [])
        for key in needed + (["prm_logp"] if name == "prime" else []):
            if data[key] is None:
                raise ValueError(f"estimator {name!r} needs the input {key!r} ([B, T] or [B] tensor)")
        mask = core._check_mask(data["mask"])
        rewards = core._check_rewards(data["rewards"], mask.shape[0], mask.device)
        tensor = lambda k: None if data[k] is None else core._tensor(data[k], k, mask.device)  # noqa: E731
        logp = tensor("logp") if data["logp"] is not None else torch.zeros(mask.shape)
        x = AdvantageInputs(rewards, mask, tensor("group_ids"), logp, tensor("ref_logp"),
                            extra={} if data["prm_logp"] is None else {"prm_logp": tensor("prm_logp")})
        return cls(cls.Options(**kwargs)).advantages(x)

    return estimator


def register_estimator(name: str, *, overwrite: bool = False) -> Callable:
    """Register ``fn(*, rewards, mask, group_ids, logp, ref_logp, prm_logp, **_) -> [B, T]`` as an algorithm."""

    def deco(fn: Callable) -> Callable:
        def adapted(x: AdvantageInputs) -> torch.Tensor:
            return fn(rewards=x.rewards, mask=x.mask, group_ids=x.group_ids, logp=x.logp, ref_logp=x.ref_logp,
                      prm_logp=x.extra.get("prm_logp"))

        register_algorithm(name, overwrite=overwrite)(adapted)
        return fn

    return deco


def list_estimators() -> list[str]:
    return list_algorithms()
