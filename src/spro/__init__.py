"""spro: process-reward reinforcement learning for language models.

SPRO (Self-Guided Process Reward Optimization, Fei et al. 2025) and the baselines it is judged
against (GRPO, Dr. GRPO, RLOO, PRIME) in one trainer for Hugging Face causal LMs.
"""

__version__ = "0.1.0"
