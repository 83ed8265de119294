"""Where a run's records go: metrics.jsonl, eval.jsonl, completions.jsonl, TensorBoard, W&B."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from spro.config import ConfigError, TrainConfig, to_dict
from spro.trainer.rundir import read_records

__all__ = ["RunLogger", "clean_float"]


class RunLogger:
    """metrics.jsonl / eval.jsonl always; TensorBoard and W&B when configured; main process only.

    Records are appended; nothing is deleted on a fresh start (the trainer never starts one over a run:
    ``spro.trainer.rundir``). On resume from the checkpoint of ``resume_step``, the records the interrupted
    run wrote after it are dropped (they are written again), as is a torn last line; the file is replaced
    atomically.
    """

    def __init__(self, cfg: TrainConfig, out: Path, *, enabled: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.out = out
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "eval.jsonl", "completions.jsonl"):
            path = out / name
            if resume_step is not None and path.exists():
                tmp = path.with_name(f".{name}.tmp")
                tmp.write_text("".join(line + "\n" for line in read_records(path, after=resume_step)))
                os.replace(tmp, path)
        self.metrics_f = open(out / "metrics.jsonl", "a")
        self.eval_f = open(out / "eval.jsonl", "a")
        self.comp_f = open(out / "completions.jsonl", "a") if cfg.logging.log_completions else None
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        if cfg.logging.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("logging.wandb=true needs the wandb package: pip install 'spro[wandb]'") from None
            self.wandb = wandb.init(
                project=cfg.logging.wandb_project, name=cfg.logging.wandb_run_name or out.name,
                config=to_dict(cfg), resume="allow",
            )

    def _write(self, f: Any, record: dict) -> None:
        f.write(json.dumps(record) + "\n")
        f.flush()
        step = record["step"]
        for k, v in record.items():
            if k == "step" or v is None or not isinstance(v, (int, float)):
                continue
            if self.tb is not None:
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def log_metrics(self, record: dict) -> None:
        if self.enabled:
            self._write(self.metrics_f, record)

    def log_eval(self, record: dict) -> None:
        if self.enabled:
            self._write(self.eval_f, record)

    def log_completions(self, step: int, prompts: list[str], completions: list[str], rewards: list[float]) -> None:
        if self.enabled and self.comp_f is not None:
            for p, c, r in zip(prompts, completions, rewards):
                self.comp_f.write(json.dumps({"step": step, "prompt": p, "completion": c, "reward": r}) + "\n")
            self.comp_f.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        for f in (self.metrics_f, self.eval_f, self.comp_f):
            if f is not None:
                f.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def clean_float(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None
