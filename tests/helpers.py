"""Shared helpers for the tests: a very small random Llama, a fast config, a recording PRM, a kill harness."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def save_small_model(path: Path, *, max_position_embeddings: int = 64, seed: int = 0) -> Path:
    """A ~30k-parameter random Llama with the character tokenizer, saved as an HF folder."""
    from spro.models.tiny import build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    model = build_tiny_model(tok, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64,
                             max_position_embeddings=max_position_embeddings, seed=seed)
    model.save_pretrained(str(path))
    tok.save_pretrained(str(path))
    return path


def digit_reward(prompts, completions, **kw):
    """Fraction of digits in the completion: varies across random samples, so advantages are non-zero."""
    return [sum(ch.isdigit() for ch in c) / max(len(c), 1) for c in completions]


def small_overrides(model_dir: Path, out: Path, algorithm: str = "spro", **extra) -> list[str]:
    o = {
        "model.name_or_path": str(model_dir),
        "output_dir": str(out),
        "algorithm.name": algorithm,
        "total_steps": 2,
        "eval_every": 0,
        "save_every": 0,
        "data.task": "arithmetic",
        "data.train_size": 32,
        "data.eval_size": 4,
        "data.rewards": "[{name: digits, weight: 1.0}]",
        "rollout.prompts_per_step": 2,
        "rollout.num_generations": 4,
        "rollout.max_new_tokens": 8,
        "optim.lr": 1e-3,
        "logging.tensorboard": False,
        "logging.progress_bar": False,
    }
    o.update(extra)
    if "data.rewards" not in extra:  # digits is a shaped reward: the accuracy it decides is asked for by name
        o.setdefault("data.accuracy_reward", "digits")
    return [f"{k}={v}" for k, v in o.items()]


REWARDS = {"digits": digit_reward}


def read_jsonl(path: Path) -> list[dict]:
    """The records of a metrics.jsonl / eval.jsonl file."""
    import json

    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def launch_two_processes(script: Path, *args: str):
    """Run ``script *args`` (or ``-m module *args``) under ``accelerate launch`` with 2 CPU processes (gloo); returns the
    finished process, after asserting that it exited 0."""
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
           "--multi_gpu", "--mixed_precision", "no", "--dynamo_backend", "no", str(script), *map(str, args)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


class RecordingPRM:
    """A stand-in process reward model for the trainer's PRM hook.

    Its log-probs are those of ``model`` (the trainer's convention); ``update`` records
    ``(batch size, label shape, labels)`` and reports a constant loss of 0.5.
    """

    def __init__(self, model):
        self.model, self.calls = model, []

    def compute_logp(self, batch):
        import torch

        from spro.models.logprobs import sequence_logps

        with torch.no_grad():
            return sequence_logps(self.model, batch)[0]

    def update(self, batch, labels):
        self.calls.append((len(batch), tuple(labels.shape), labels.tolist()))
        return {"loss": 0.5}


def train_killed_at(step: int, monkeypatch, config, **train_kwargs) -> None:
    """Run ``train(config)`` but raise KeyboardInterrupt when it is about to run step ``step + 1``,
    as a kill would; the trainer is restored afterwards."""
    import pytest

    from spro.trainer import Trainer, train

    real_step = Trainer.train_step

    def dying_step(self):
        if self.step == step:
            raise KeyboardInterrupt("killed")
        return real_step(self)

    monkeypatch.setattr(Trainer, "train_step", dying_step)
    try:
        with pytest.raises(KeyboardInterrupt):
            train(config, **train_kwargs)
    finally:
        monkeypatch.setattr(Trainer, "train_step", real_step)
