"""Supervised warm start: fine-tune a causal LM on reference solutions, of a built-in task or of any dataset.

Examples come from :func:`sft_data`: a built-in task's ``solution`` column (``task``), or a dataset
file / folder (``data``, loaded by :func:`spro.data.load_prompt_dataset` with ``schema``,
``column_map`` and ``prompt_template``) with a solution column (``solution_column``, default the
schemas' ``solution``; GSM8K's worked solution gets its ``#### answer`` line back so that the math
reward finds the answer), or a reasoning-gym task (``data=reasoning_gym:NAME``, its config in ``task_kwargs``:
the training questions ``spro train`` builds for that source, the targets ``<answer>ANSWER</answer>``, the
held-out questions its evaluation ones). All go through the same loop: each example is ``render_prompt(prompt)``
(chat prompts through the tokenizer's chat template) followed by ``solution + eos``; the loss is
the mean token cross-entropy over the completion tokens only (prompt and padding are masked with
-100). AdamW with linear warm-up and cosine decay, gradient clipping, random mini-batches
(seeded), a progress bar, periodic greedy held-out accuracy scored with the task's / dataset's
reward (``reward``, default :func:`spro.data.loader.default_reward`), and an atomic HF-format
save at the end.

String prompts go through the tokenizer's chat template by ``chat_template`` (spro train's
``data.chat_template`` rule), and the saved folder's ``sft_config.json`` records the choice
(``chat_template_applied``), which ``auto`` in spro train, spro eval and spro diagnose follows.

Presets (see :data:`PRESETS`): ``weak`` - a tiny model trained briefly, greedy test accuracy
in the 20-50% range, the starting policy for RL; ``strong`` - trained longer, a competent model.
:data:`FINETUNE` - settings for a pretrained model (``spro sft --model D``, on a dataset or a task).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spro.data.prompts import render_prompt


@dataclass
class SFTConfig:
    """Configuration of one supervised warm-start run."""

    task: str = field(default="arithmetic", metadata={"help": "Task name (spro.data.tasks.get_task)."})
    task_kwargs: dict[str, Any] = field(default_factory=dict, metadata={
        "help": "Keyword arguments of the task: get_task(task, **task_kwargs), e.g. {num_operands: [3, 5]}."})
    model: str | None = field(
        default=None, metadata={"help": "HF folder of the causal LM to fine-tune; None builds a fresh tiny model."}
    )
    hidden_size: int = field(default=128, metadata={"help": "Tiny model width (only when model is None)."})
    num_layers: int = field(default=4, metadata={"help": "Tiny model depth (only when model is None)."})
    num_heads: int = field(default=4, metadata={"help": "Tiny model attention heads (only when model is None)."})
    intermediate_size: int = field(default=512, metadata={"help": "Tiny model MLP width (only when model is None)."})
    max_position_embeddings: int = field(default=256, metadata={"help": "Tiny model context length."})
    steps: int = field(default=1000, metadata={"help": "Optimizer steps."})
    batch_size: int = field(default=64, metadata={"help": "Examples per step."})
    lr: float = field(default=3e-3, metadata={"help": "Peak AdamW learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    warmup_steps: int = field(default=50, metadata={"help": "Linear warm-up steps, then cosine decay to 10% of lr."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping norm (<= 0: off)."})
    eval_every: int = field(default=0, metadata={"help": "Validation every N steps (0: only at the end)."})
    eval_n: int = field(default=200, metadata={"help": "Validation problems per evaluation."})
    max_new_tokens: int = field(default=96, metadata={"help": "Generation budget for validation."})
    train_size: int | None = field(default=None, metadata={"help": "Training problems (None: task default)."})
    seed: int = field(default=0, metadata={"help": "Seed of model init and batch order."})
    threads: int | None = field(default=None, metadata={"help": "torch.set_num_threads (None: leave as is)."})
    data: str | None = field(default=None, metadata={
        "help": "Dataset with solutions (a jsonl/json/parquet/csv file or saved dataset folder), or reasoning_gym:NAME "
        "(a reasoning-gym task: its training questions as spro train builds them at data.reasoning_gym's defaults, "
        "task_kwargs its config, targets <answer>ANSWER</answer>); None: the task."})
    schema: str = field(default="auto", metadata={"help": "Schema of data (spro.data.load_prompt_dataset)."})
    column_map: dict[str, str] | None = field(default=None, metadata={
        "help": "Rename data's columns first ({'prompt': 'instruction', 'answer': 'gold', 'solution': 'response'})."})
    prompt_template: str | None = field(default=None, metadata={"help": "Format string applied to each prompt."})
    solution_column: str = field(default="solution", metadata={"help": "Column of data with the target text."})
    eval_data: str | None = field(default=None, metadata={
        "help": "Held-out dataset for the accuracy (same schema); None: min(eval_n, 10%) of data's rows, seeded."})
    reward: str | None = field(default=None, metadata={
        "help": "Reward of the held-out accuracy for data (a name or module:function); None: the dataset's "
        "default (math for GSM8K / MATH data, eurus for Eurus data, reasoning_gym for reasoning_gym:NAME; plain "
        "data needs one)."})
    chat_template: str | bool = field(default="auto", metadata={  # (YAML reads on / off as true / false)
        "help": "String prompts through the tokenizer's chat template, by spro train's data.chat_template rule: "
        "'on', 'off', or 'auto' (as spro trained the model when it is a folder spro saved, else on when the "
        "tokenizer has a template and the model's name says instruct, chat or it). The choice is recorded in the "
        "saved folder's sft_config.json (chat_template_applied), and spro train, spro eval and spro diagnose with "
        "auto render prompts the same way for that model."})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "eval_n", "max_new_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        for name in ("warmup_steps", "eval_every"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise ValueError(f"{name} must be a non-negative int, got {v!r}")
        if not (self.lr > 0):
            raise ValueError(f"lr must be > 0, got {self.lr!r}")
        if self.chat_template in (True, False):  # YAML's on / off
            self.chat_template = "on" if self.chat_template else "off"
        if self.chat_template not in ("auto", "on", "off"):
            raise ValueError(f"chat_template must be auto, on or off, got {self.chat_template!r}")
        if self.eval_data is not None and self.data is None:
            raise ValueError("eval_data needs data (the built-in task has its own validation split)")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# Both presets use a 4-layer, 64-wide Llama (~270k parameters): depth matters more than width for
# copying the right operand, and a narrow model trains ~4x faster per step than the 1M default.
# Accuracy rises sharply after ~500 steps (the model learns to find the next operand), so "weak"
# stops before that and "strong" trains well past it. Measured numbers: see the project notes.
_PRESET_MODEL = dict(hidden_size=64, num_layers=4, num_heads=4, intermediate_size=256, max_position_embeddings=256)
# "long-weak" (7-10 operands) stops at about 5% greedy accuracy: the sparse-outcome test bed; "long-mid" trains the same
# model longer, into the middle of the jump in accuracy (600 -> 800 steps of a 1200-step run: 0.07 -> 0.83), so that
# GRPO has outcome variance to learn from (the "long-mid" bed of docs/results.md); "mult-weak" is the
# multiplication task's warm start. Accuracies measured when they were chosen: see docs/results.md.
PRESETS: dict[str, SFTConfig] = {
    "weak": SFTConfig(steps=450, batch_size=64, lr=5e-3, warmup_steps=30, eval_every=0, eval_n=200, **_PRESET_MODEL),
    "strong": SFTConfig(steps=1200, batch_size=64, lr=5e-3, warmup_steps=30, eval_every=300, eval_n=200, **_PRESET_MODEL),
    "long-weak": SFTConfig(task="arithmetic_long", steps=600, batch_size=64, lr=5e-3, warmup_steps=30, eval_every=0,
                           eval_n=200, **_PRESET_MODEL),
    "long-mid": SFTConfig(task="arithmetic_long", steps=860, batch_size=64, lr=5e-3, warmup_steps=30, eval_every=0,
                          eval_n=200, **_PRESET_MODEL),
    "mult-weak": SFTConfig(task="multiplication", steps=1000, batch_size=64, lr=5e-3, warmup_steps=30, eval_every=0,
                           eval_n=200, **_PRESET_MODEL),
}


# The fields for a dataset instead of the built-in task.
DATASET_FIELDS = ("data", "schema", "column_map", "prompt_template", "solution_column", "eval_data", "reward")

# A pretrained model on a dataset: a small learning rate, small batches, room for worked solutions.
FINETUNE = SFTConfig(steps=100, batch_size=8, lr=1e-5, weight_decay=0.0, warmup_steps=10, eval_every=0, eval_n=50,
                     max_new_tokens=256)


def get_preset(name: str) -> SFTConfig:
    """A fresh copy of the named preset."""
    if name not in PRESETS:
        raise ValueError(f"unknown SFT preset {name!r}; choose one of {', '.join(sorted(PRESETS))}")
    return dataclasses.replace(PRESETS[name], task_kwargs=dict(PRESETS[name].task_kwargs))


@dataclass
class SFTResult:
    """What an SFT run produced."""

    path: Path | None
    losses: list[float]
    validation: list[dict[str, Any]]
    seconds: float
    num_parameters: int
    cpu_seconds: float = 0.0  # process CPU time (all threads); wall time suffers from CPU contention


def encode_example(tokenizer: Any, prompt: Any, solution: str, *, chat_template: bool = False
                   ) -> tuple[list[int], list[int]]:
    """Token ids of the rendered prompt and of ``solution + eos`` (the supervised part)."""
    p = tokenizer(render_prompt(tokenizer, prompt, chat_template=chat_template), add_special_tokens=False)["input_ids"]
    c = tokenizer(solution, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    return p, c


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int):
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 outside completions)."""
    import torch

    width = max(len(p) + len(c) for p, c in examples)
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    att = torch.zeros((len(examples), width), dtype=torch.long)
    lab = torch.full((len(examples), width), -100, dtype=torch.long)
    for i, (p, c) in enumerate(examples):
        seq = p + c
        ids[i, : len(seq)] = torch.tensor(seq)
        att[i, : len(seq)] = 1
        lab[i, len(p) : len(seq)] = torch.tensor(c)
    return ids, att, lab


def completion_loss(model: Any, ids: Any, att: Any, lab: Any):
    """Mean cross-entropy of the completion tokens (labels != -100), next-token shifted."""
    import torch.nn.functional as F

    logits = model(input_ids=ids, attention_mask=att).logits[:, :-1]
    target = lab[:, 1:]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), target.reshape(-1), ignore_index=-100)


@dataclass
class SFTData:
    """What :func:`sft` trains and validates on: training rows with their target texts, held-out rows, the reward."""

    train: Any  # datasets.Dataset with a prompt column
    targets: list[str]
    validation: Any
    reward: Any
    knobs: dict[str, Any] | None = None  # the task's resolved knobs (built-in tasks)


def sft_data(config: SFTConfig) -> SFTData:
    """The examples of ``config``: the built-in task's splits, or ``config.data`` (see the module docstring)."""
    if config.data is None:
        from spro.data.tasks import get_task

        task = get_task(config.task, **config.task_kwargs)
        train = task.split("train", n=config.train_size)
        return SFTData(train, list(train["solution"]), task.split("validation", n=config.eval_n), task.reward,
                       task.knobs() if hasattr(task, "knobs") else None)
    from spro.data.datasets import get_load_report, load_prompt_dataset
    from spro.data.loader import default_reward
    from spro.data.reasoning_gym import is_reasoning_gym
    from spro.rewards import get_reward

    if is_reasoning_gym(config.data):
        return _reasoning_gym_data(config)
    if config.task_kwargs:
        raise ValueError(f"task_kwargs {dict(config.task_kwargs)}: knobs of a built-in task or of a reasoning_gym:NAME "
                         f"source, not of the dataset {config.data}")
    kw = dict(schema=config.schema, column_map=config.column_map, prompt_template=config.prompt_template)
    ds = load_prompt_dataset(config.data, **kw)
    col = config.solution_column
    if col not in ds.column_names:
        raise ValueError(f"{config.data}: no {col!r} column to learn from (columns: {', '.join(ds.column_names)}); "
                         f"name the column with the target text: --solution-column NAME or --column-map {col}=NAME")
    empty = [i for i, v in enumerate(ds[col]) if v is None or not str(v).strip()]
    if empty:
        raise ValueError(f"{config.data}: {len(empty)} row(s) with an empty {col!r} (first: row {empty[0]} of the "
                         f"loaded rows)")
    report = get_load_report(ds)
    if report is not None and report.schema == "gsm8k" and col == "solution":  # the final answer, split off on load
        ds = ds.map(lambda r: {col: f"{r[col]}\n#### {r['answer']}"})
    if config.eval_data is not None:
        validation = load_prompt_dataset(config.eval_data, **kw)
        validation = validation.select(range(min(config.eval_n, len(validation))))
    else:
        if len(ds) < 2:
            raise ValueError(f"{config.data}: {len(ds)} row(s); holding rows out for the accuracy needs at least 2 "
                             "(or give eval_data)")
        import numpy as np

        n_val = min(config.eval_n, max(1, len(ds) // 10))
        order = np.random.default_rng(config.seed).permutation(len(ds))
        validation, ds = ds.select(sorted(order[:n_val])), ds.select(sorted(order[n_val:]))
    if config.train_size:
        ds = ds.select(range(min(config.train_size, len(ds))))
    return SFTData(ds, [str(v) for v in ds[col]], validation, get_reward(config.reward or default_reward(ds, source=config.data, how="--reward NAME")))


def _reasoning_gym_data(config: SFTConfig) -> SFTData:
    """A reasoning-gym task's questions (``data=reasoning_gym:NAME``, ``task_kwargs`` its config), the targets
    ``<answer>ANSWER</answer>``, the format its prompt asks for (or ``solution_column`` when the rows have it).

    The questions are those ``spro train`` builds from ``data.reasoning_gym`` at its defaults (seed 0, items
    0 .. 999; ``train_size`` takes the first N), and the held-out ones are the first ``eval_n`` of its
    evaluation questions, which are disjoint from them: train with ``data.reasoning_gym.config`` set to the
    same ``task_kwargs`` and its seed and size left at their defaults, and the evaluation stays unseen."""
    from types import SimpleNamespace

    from spro.data.reasoning_gym import load_reasoning_gym
    from spro.rewards import get_reward
    from spro.schema import ReasoningGymConfig

    if config.eval_data is not None:
        raise ValueError(f"eval_data: {config.data} makes its own held-out questions (disjoint from the training "
                         "ones); leave eval_data unset")
    rg = ReasoningGymConfig(config=dict(config.task_kwargs))
    source = SimpleNamespace(source=config.data, reasoning_gym=rg, eval_size=config.eval_n,
                             train_size=config.train_size, prompt_template=config.prompt_template)
    train, validation = load_reasoning_gym(source)
    col = config.solution_column
    targets = ([str(v) for v in train[col]] if col in train.column_names
               else [f"<answer>{a}</answer>" for a in train["answer"]])
    return SFTData(train, targets, validation, get_reward(config.reward or "reasoning_gym"), dict(rg.config))


def validation_accuracy(model: Any, tokenizer: Any, data: Any, reward: Any, max_new_tokens: int, *,
                        chat_template: bool = False) -> dict[str, Any]:
    """Greedy accuracy (fraction of responses the reward calls correct: value >= 1), mean reward and mean length
    on the held-out rows ``data`` (string prompts through the chat template with ``chat_template``)."""
    from spro.rewards.scoring import Scorer
    from spro.rollout import generate_completions

    prompts = list(data["prompt"])
    shown = [[{"role": "user", "content": p}] if chat_template and isinstance(p, str) else p for p in prompts]
    texts, lengths, _ = generate_completions(model, tokenizer, shown, max_new_tokens=max_new_tokens, batch_size=100)
    columns = {c: list(data[c]) for c in data.column_names if c != "prompt"}
    scores = Scorer.of(reward)(prompts, [t[0] for t in texts], columns)
    return {"accuracy": float(scores.correct.double().mean()), "reward_mean": float(scores.rewards.double().mean()),
            "length_mean": sum(l[0] for l in lengths) / len(prompts), "n": len(prompts)}


def sft(config: SFTConfig, output_dir: str | os.PathLike | None = None, *, progress: bool = True,
        log_file: str | os.PathLike | None = None, echo: Any = None) -> SFTResult:
    """Run supervised fine-tuning; save model + tokenizer atomically to ``output_dir`` if given.
    ``echo``: called with a line per held-out evaluation (e.g. ``print`` where no progress bar shows them).

    Also writes ``sft_config.json`` (the settings, timings and the CPU's kernel record ``machine``: a float32 SFT's
    result depends on them) and ``sft_log.jsonl`` (loss per step, validation results) into the saved folder.
    """
    import torch

    from spro.models.loading import load_model_and_tokenizer, save_model_and_tokenizer
    from spro.models.precision import cpu_record
    from spro.models.tiny import build_char_tokenizer, build_tiny_model, count_parameters

    if config.threads:
        torch.set_num_threads(config.threads)
    t0, c0 = time.time(), time.process_time()
    data = sft_data(config)
    if config.model is None:
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(
            tokenizer, hidden_size=config.hidden_size, num_layers=config.num_layers, num_heads=config.num_heads,
            intermediate_size=config.intermediate_size, max_position_embeddings=config.max_position_embeddings,
            seed=config.seed,
        )
    else:
        if config.model.endswith(".gguf"):
            from spro.models.loading import load_model

            model, tokenizer = load_model(config.model)
        else:
            model, tokenizer = load_model_and_tokenizer(config.model)
    from spro.data.prompts import resolve_chat_template

    chat, chat_why = resolve_chat_template(config.chat_template, tokenizer, config.model, key="chat_template")
    if progress:
        print(f"spro sft: string prompts {'through the chat template' if chat else 'used as they are'} ({chat_why})")
    examples = [encode_example(tokenizer, p, s, chat_template=chat) for p, s in zip(data.train["prompt"], data.targets)]
    limit = getattr(model.config, "max_position_embeddings", None)
    if limit:
        too_long = [i for i, (p, c) in enumerate(examples) if len(p) + len(c) > limit]
        if too_long:
            raise ValueError(
                f"{config.data or 'task ' + config.task}: training example {too_long[0]} is "
                f"{sum(map(len, examples[too_long[0]]))} tokens, longer than the "
                f"model's max_position_embeddings ({limit})"
            )

    decay = [p for n_, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n_, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=config.lr, betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        if step < config.warmup_steps:
            return config.lr * (step + 1) / config.warmup_steps
        frac = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        return config.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))

    gen = torch.Generator().manual_seed(config.seed)
    order = torch.randperm(len(examples), generator=gen).tolist()
    pos = 0
    losses: list[float] = []
    validation: list[dict[str, Any]] = []
    log_lines: list[dict[str, Any]] = []
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, desc="sft", unit="step")
    model.train()
    eval_time = 0.0
    for step in range(config.steps):
        if pos + config.batch_size > len(order):
            order = torch.randperm(len(examples), generator=gen).tolist()
            pos = 0
        batch = [examples[i] for i in order[pos : pos + config.batch_size]]
        pos += config.batch_size
        ids, att, lab = collate(batch, tokenizer.pad_token_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = completion_loss(model, ids, att, lab)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if config.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.max_grad_norm)
        opt.step()
        losses.append(float(loss.detach()))
        log_lines.append({"step": step + 1, "loss": losses[-1], "lr": lr_at(step)})
        last = step + 1 == config.steps
        if (config.eval_every and (step + 1) % config.eval_every == 0) or last:
            te = time.time()
            v = validation_accuracy(model, tokenizer, data.validation, data.reward, config.max_new_tokens,
                                    chat_template=chat)
            model.train()
            eval_time += time.time() - te
            v["step"] = step + 1
            validation.append(v)
            if echo is not None:
                echo(f"step {step + 1}/{config.steps}: loss {losses[-1]:.4f}, held-out accuracy {v['accuracy']:.3f} "
                     f"(n={v['n']}), mean length {v['length_mean']:.1f} tokens")
            log_lines.append({"step": step + 1, **{f"val/{k}": x for k, x in v.items() if k != "step"}})
        if bar is not None:
            post = {"loss": f"{losses[-1]:.3f}"}
            if validation:
                post["val_acc"] = f"{validation[-1]['accuracy']:.2f}"
            bar.set_postfix(post)
            bar.update(1)
    if bar is not None:
        bar.close()
    model.eval()
    seconds = time.time() - t0
    cpu_seconds = time.process_time() - c0
    path = None
    if output_dir is not None:
        meta = {**config.to_dict(), "chat_template_applied": chat, "task_kwargs_resolved": data.knobs, "train_rows": len(examples),
                "seconds": seconds, "cpu_seconds": cpu_seconds,
                "eval_seconds": eval_time, "torch_threads": torch.get_num_threads(), "machine": cpu_record(),
                "validation": validation}
        path = save_model_and_tokenizer(model, tokenizer, output_dir, extra_files={
            "sft_config.json": json.dumps(meta, indent=2),
            "sft_log.jsonl": "".join(json.dumps(line) + "\n" for line in log_lines),
        })
    if log_file is not None:
        with open(log_file, "w") as f:
            for line in log_lines:
                f.write(json.dumps(line) + "\n")
    return SFTResult(path=path, losses=losses, validation=validation, seconds=seconds,
                     num_parameters=count_parameters(model), cpu_seconds=cpu_seconds)
