"""Algorithms: the plugin API and registry, the built-in algorithms, and the pure tensor functions.

* ``spro.algorithms.registry``: :class:`Algorithm`, :class:`AdvantageInputs`,
  :func:`register_algorithm`, :func:`get_algorithm`, :func:`list_algorithms`, and the group
  helpers for plugins :func:`group_size`, :func:`group_mean`, :func:`group_std`.
* ``spro.algorithms.probes``: the process probe every run logs (``process/*``, ``diag/*``, ``drift/*``).
* ``spro.algorithms.core``: the estimators as pure tensor functions (``spro_advantage``, ...).
* ``spro.algorithms.losses``: PPO clipped loss, aggregation modes, KL estimators, entropy.
* ``spro.algorithms.spro`` / ``grpo`` / ``prime``: the built-in algorithms and their options;
  ``spro.algorithms.prm``: PRIME's implicit process reward model.
"""

from spro.algorithms.registry import (
    AdvantageInputs,
    Algorithm,
    NoOptions,
    MissingReferenceError,
    ProcessSignal,
    TrainerContext,
    get_algorithm,
    group_mean,
    group_size,
    group_std,
    list_algorithms,
    register_algorithm,
    resolve_algorithm,
)
from spro.options import Options, option

__all__ = ["AdvantageInputs", "Algorithm", "MissingReferenceError", "NoOptions", "Options", "ProcessSignal",
           "TrainerContext", "get_algorithm", "group_mean", "group_size", "group_std", "list_algorithms", "option",
           "register_algorithm", "resolve_algorithm"]

