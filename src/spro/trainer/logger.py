"""Where a run's records go: metrics.jsonl, eval.jsonl, completions.jsonl, train.log, TensorBoard, W&B."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from spro.config import ConfigError, TrainConfig, flatten, to_dict
from spro.trainer.checkpoint import disk_full_error, is_disk_full
from spro.trainer.rundir import check_records, read_records

__all__ = ["RunLogger", "clean_float", "step_line", "eval_line"]

# (metric, label, format) of the line printed every logging.every steps
_LINE = (("accuracy", "acc", "{:.3f}"), ("loss", "loss", "{:.4f}"), ("kl", "kl", "{:.4f}"),
         ("length/mean", "len", "{:.1f}"), ("time/step", "s/step", "{:.2f}"))


def eval_line(record: dict) -> str:
    """``step 5: eval accuracy 0.493 (n=300)``; without an accuracy verifier the mean greedy length instead."""
    if record.get("eval/accuracy") is None:
        return (f"step {record['step']}: evaluated (n={record['eval/n']}, mean length "
                f"{record['eval/length_mean']:.1f}; accuracy not reported: no accuracy verifier)")
    return f"step {record['step']}: eval accuracy {record['eval/accuracy']:.3f} (n={record['eval/n']})"


def step_line(record: dict, total_steps: int) -> str:
    """One plain line of a step's key metrics, e.g. ``step 3/100  reward 0.375±0.484  acc 0.375  loss
    -0.0012  kl 0.0003  len 12.4  s/step 3.21`` (metrics that are None are left out)."""
    parts = [f"step {record['step']}/{total_steps}"]
    if record.get("reward/mean") is not None:
        std = record.get("reward/std")
        parts.append(f"reward {record['reward/mean']:.3f}" + (f"±{std:.3f}" if std is not None else ""))
    parts += [f"{label} {fmt.format(record[k])}" for k, label, fmt in _LINE if record.get(k) is not None]
    return "  ".join(parts)


class RunLogger:
    """metrics.jsonl / eval.jsonl / train.log always; TensorBoard and W&B when configured; main process only.

    Records are appended; nothing is deleted on a fresh start (the trainer never starts one over a run:
    ``spro.trainer.rundir``). On resume from the checkpoint of ``resume_step``, the records the interrupted
    run wrote after it are dropped (they are written again), as is a torn last line; the file is replaced
    atomically. ``resume_step=-1``: a run folder without a checkpoint, whose records are all written again.
    ``facts``: what the run found out at its start that its config does not say (``{"sandbox.isolation":
    "namespace"}``), written to train.log and added to the config that TensorBoard and W&B record.
    """

    def __init__(self, cfg: TrainConfig, out: Path, *, enabled: bool, resume_step: int | None,
                 facts: dict[str, str] | None = None) -> None:
        self.enabled = enabled
        self.out = out
        self.tb = None
        self.wandb = None
        self.every, self.total_steps = cfg.logging.every, cfg.total_steps
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "eval.jsonl", "completions.jsonl"):
            path = out / name
            if resume_step is not None and path.exists():
                lines = read_records(path, after=resume_step)
                if name == "metrics.jsonl":
                    check_records(path, lines, resume_step)
                tmp = path.with_name(f".{name}.tmp")
                try:
                    tmp.write_text("".join(line + "\n" for line in lines))
                    os.replace(tmp, path)
                except BaseException as e:
                    tmp.unlink(missing_ok=True)  # no stray file
                    if isinstance(e, OSError) and is_disk_full(e, out, len("".join(lines)) + 2**20):
                        raise disk_full_error(out, len("".join(lines)) + 2**20, e) from e
                    raise
        self.metrics_f = open(out / "metrics.jsonl", "a")
        self.eval_f = open(out / "eval.jsonl", "a")
        self.comp_f = open(out / "completions.jsonl", "a") if cfg.logging.log_completions else None
        if resume_step is None:
            (out / "train.log").unlink(missing_ok=True)
        self.log_f = open(out / "train.log", "a")
        if resume_step is not None:  # (-1: a run folder without a checkpoint, started again from step 0)
            self.log_f.write(f"resumed after step {resume_step}\n" if resume_step >= 0 else "started again from step 0\n")
        facts = dict(facts or {})
        for k, v in facts.items():
            self.log_f.write(f"{k}: {v}\n")
        self.log_f.flush()
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
            self._write_hparams(cfg, facts)
        if cfg.logging.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("logging.wandb=true needs the wandb package: pip install 'spro[wandb]'") from None
            self.wandb = wandb.init(
                project=cfg.logging.wandb_project, name=cfg.logging.wandb_run_name or out.name,
                config={**to_dict(cfg), **facts}, resume="allow",
            )

    def _write(self, f: Any, record: dict) -> None:
        line = json.dumps(record) + "\n"
        try:
            f.write(line)
            f.flush()
        except OSError as e:
            if is_disk_full(e, self.out, 2**20):
                raise disk_full_error(self.out, len(line), e) from e
            raise
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
            if self.tb is not None and prompts:
                def cell(text: Any) -> str:
                    return str(text).replace("|", "\\|").replace("\n", "<br>")

                rows = "".join(f"| {cell(p)} | {cell(c)} | {r} |\n" for p, c, r in zip(prompts, completions, rewards))
                self.tb.add_text("completions", "| prompt | completion | reward |\n|---|---|---|\n" + rows, step)

    def print_step(self, record: dict, *, echo: bool) -> None:
        """Every ``logging.every`` steps (and at the last): the step's line to train.log, and printed if ``echo``."""
        if self.enabled and (record["step"] % self.every == 0 or record["step"] == self.total_steps):
            self._line(step_line(record, self.total_steps), echo)

    def print_eval(self, record: dict, *, echo: bool) -> None:
        self._line(eval_line(record), echo)

    def _line(self, text: str, echo: bool) -> None:
        if not self.enabled:
            return
        self.log_f.write(text + "\n")
        self.log_f.flush()
        if echo:
            print(text, flush=True)

    def _write_hparams(self, cfg: TrainConfig, facts: dict[str, str]) -> None:
        """The run config (and ``facts``) as TensorBoard hparams (dotted keys; lists and mappings as text), with the
        reward, accuracy and eval accuracy as its metrics."""
        from torch.utils.tensorboard.summary import hparams

        values = {k: v if isinstance(v, (bool, int, float, str)) else json.dumps(v)
                  for k, v in {**flatten(to_dict(cfg)), **facts}.items()}
        writer = self.tb._get_file_writer()
        for summary in hparams(values, {"reward/mean": 0.0, "accuracy": 0.0, "eval/accuracy": 0.0}):
            writer.add_summary(summary)

    def close(self) -> None:
        if not self.enabled:
            return
        for f in (self.metrics_f, self.eval_f, self.comp_f, self.log_f):
            if f is not None:
                try:
                    f.close()
                except OSError:  # (a full disk: its last write failed already, and was reported)
                    pass
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def clean_float(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None
