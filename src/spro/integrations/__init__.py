"""Adapters that run SPRO's advantage estimator inside other RL engines.

- :mod:`spro.integrations.trl`: ``SPROConfig`` / ``SPROTrainer``, a drop-in subclass of TRL's
  ``GRPOTrainer`` (``pip install 'spro[trl]'``).
- :mod:`spro.integrations.verl`: an ``"spro"`` advantage estimator for verl plus the wrapper of
  verl's ``compute_advantage`` that feeds it the policy and reference log-probs
  (``pip install 'spro[verl]'``, in an environment of its own).

Neither engine is imported here: each submodule imports its engine on use and raises an
``ImportError`` naming the extra to install when it is missing.
"""

__all__ = ["trl", "verl"]
