"""The RL trainer (``spro.trainer.loop``), its checkpoints, metrics and logging, and supervised warm starts."""

from spro.trainer.loop import (
    EVAL_KEYS,
    METRIC_KEYS,
    PRIME_METRIC_KEYS,
    ProcessRewardModel,
    RewardFunctionError,
    RunLogger,
    Trainer,
    TrainingDivergedError,
    load_datasets,
    load_model,
    prompt_order,
    resolve_reward,
    sequence_logps,
    train,
)

__all__ = [
    "EVAL_KEYS", "METRIC_KEYS", "PRIME_METRIC_KEYS", "ProcessRewardModel", "RewardFunctionError", "RunLogger",
    "Trainer", "TrainingDivergedError", "load_datasets", "load_model", "prompt_order", "resolve_reward",
    "sequence_logps", "train",
]
