"""spro: process-reward reinforcement learning for language models.

SPRO (Self-Guided Process Reward Optimization, Fei et al. 2025) and the baselines it is judged
against (GRPO, Dr. GRPO, RLOO, PRIME) in one trainer for Hugging Face causal LMs.

The package is laid out by layer (see README, "Layout"): ``spro.algorithms`` (estimators, losses,
the algorithm registry), ``spro.models``, ``spro.rollout``, ``spro.rewards``, ``spro.data``,
``spro.trainer``, ``spro.experiments`` and ``spro.integrations``.
"""

__version__ = "0.2.0"  # the same as pyproject.toml's version (tests/test_config.py checks it)

from spro.api import train  # noqa: E402  (the Python API: spro.train(model=..., reward_funcs=..., train_dataset=...))
