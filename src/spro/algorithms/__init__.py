"""Algorithms: the plugin API and registry, the built-in algorithms, and the pure tensor functions.

* ``spro.algorithms.registry``: :class:`Algorithm`, :class:`AdvantageInputs`,
  :func:`register_algorithm`, :func:`get_algorithm`, :func:`list_algorithms`.
* ``spro.algorithms.core``: the estimators as pure tensor functions (``spro_advantage``, ...).
* ``spro.algorithms.losses``: PPO clipped loss, aggregation modes, KL estimators, entropy.
* ``spro.algorithms.spro`` / ``grpo`` / ``prime``: the built-in algorithms and their options;
  ``spro.algorithms.prm``: PRIME's implicit process reward model.
"""

from spro.algorithms.registry import (
    AdvantageInputs,
    Algorithm,
    NoOptions,
    TrainerContext,
    get_algorithm,
    list_algorithms,
    register_algorithm,
    resolve_algorithm,
)
from spro.options import Options, option

__all__ = ["AdvantageInputs", "Algorithm", "NoOptions", "Options", "TrainerContext", "get_algorithm",
           "list_algorithms", "option", "register_algorithm", "resolve_algorithm"]

