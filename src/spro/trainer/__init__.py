"""The RL trainer (``spro.trainer.loop``), its metrics, logger and checkpoints, and supervised warm starts."""

from spro.trainer.loop import (
    EVAL_KEYS,
    METRIC_KEYS,
    RewardFunctionError,
    Trainer,
    TrainingDivergedError,
    train,
)

__all__ = ["EVAL_KEYS", "METRIC_KEYS", "RewardFunctionError", "Trainer", "TrainingDivergedError",
           "train"]
