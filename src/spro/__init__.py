"""spro: process-reward reinforcement learning for language models.

SPRO (Self-Guided Process Reward Optimization, Fei et al. 2025) and the baselines it is judged
against (GRPO, Dr. GRPO, RLOO, PRIME) in one trainer for Hugging Face causal LMs.

The package is laid out by layer (see README, "Layout"): ``spro.algorithms`` (estimators, losses,
the algorithm registry), ``spro.models``, ``spro.rollout``, ``spro.rewards``, ``spro.data``,
``spro.trainer``, ``spro.experiments`` and ``spro.integrations``. The module names of earlier
releases (``spro.advantages``, ``spro.prm``, ``spro.checkpoint``, ...) still import, as aliases of
their new homes, with a DeprecationWarning that names the new module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

__version__ = "0.2.0"

from spro.api import train  # noqa: E402  (the Python API: spro.train(model=..., reward_funcs=..., train_dataset=...))

# old module name -> new module name (0.1 -> 0.2 layout)
MOVED_MODULES = {
    "spro.advantages": "spro.algorithms.compat",
    "spro.losses": "spro.algorithms.losses",
    "spro.prm": "spro.algorithms.prm",
    "spro.modeling": "spro.models.loading",
    "spro.tiny": "spro.models.tiny",
    "spro.warmstart": "spro.trainer.warmstart",
    "spro.sandbox": "spro.rewards.sandbox",
    "spro.prompts": "spro.data.prompts",
    "spro.tasks": "spro.data.tasks",
    "spro.tasks.arithmetic": "spro.data.tasks.arithmetic",
    "spro.checkpoint": "spro.trainer.checkpoint",
    "spro.sft": "spro.trainer.sft",
    "spro.evaluation": "spro.experiments.evaluation",
    "spro.compare": "spro.experiments.compare",
    "spro.report": "spro.experiments.report",
    "spro.experiment": "spro.experiments.grid",
}


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as the module that now holds its code (one object, two names)."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname in MOVED_MODULES:
            return importlib.util.spec_from_loader(fullname, self)
        return None

    def create_module(self, spec):
        new = MOVED_MODULES[spec.name]
        warnings.warn(f"{spec.name} has moved to {new}; import it from there", DeprecationWarning, stacklevel=4)
        return importlib.import_module(new)

    def exec_module(self, module):  # the new module is already executed
        pass


if not any(isinstance(f, _MovedModuleFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _MovedModuleFinder())
