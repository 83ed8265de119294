"""`spro eval`: evaluate a causal LM on a built-in task or a prompt dataset.

    spro eval model=DIR task=arithmetic [split=test] [n=N] [k=K] [task_kwargs.num_operands=[3,5]]
    spro eval model=RUN_DIR ...         (a `spro train` run folder: its latest checkpoint)
    spro eval model=DIR data=FILE [schema=auto] [reward=NAME] [k=K]
    spro eval --model DIR --data FILE --k 4     (every key is also a flag, its short alias)

The settings are the keys of :class:`EvalConfig`, loaded like `spro train`'s
(:func:`spro.options.build`: ``key=value`` with YAML values, did-you-mean for unknown keys, each
value checked). Greedy pass@1, sampled mean@k and pass@k (``k``, ``temperature``, ``top_p``), mean
response length, a per-``data_source`` breakdown when that column exists and, for the arithmetic
task, first-wrong-step statistics. A table on screen; ``out=FILE`` writes the JSON.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from spro.options import option

HELP = "Evaluate a model: greedy pass@1, sampled mean@k, length."


@dataclass
class EvalConfig:
    """The settings of `spro eval` (keys of ``key=value``; each also a ``--flag``)."""

    model: str = option(help="HF folder of a causal LM, a run folder of `spro train` (its latest checkpoint), a "
                        "checkpoint folder (LoRA adapters are loaded onto their base model), or warmstart:PRESET "
                        "(weak, strong, long-weak, long-mid, mult-weak; built and cached if needed).")
    task: str | None = option(None, help="Built-in task (e.g. arithmetic). Default when data is not given.")
    data: str | None = option(None, help="Prompt dataset: a local jsonl/json/parquet/csv file or saved dataset "
                              "folder, or reasoning_gym:NAME (the held-out questions of a training run with the default "
                              "data.reasoning_gym seed and size; task_kwargs sets the task's config keys).")
    task_kwargs: dict[str, Any] = option(help="Keyword arguments of the task (get_task(task, **task_kwargs)), or a "
                                         "reasoning-gym task's config keys, e.g. {num_operands: [3, 5]}.", factory=dict)
    split: str = option("test", help="Split to evaluate.")
    schema: str = option("auto", help="Schema of data for spro.data.load_prompt_dataset.")
    reward: str | None = option(None, help="Reward name or module:function (a module in the working directory or on "
                                "the Python path). null: the one spro train would use (spro.data.default_reward): "
                                "the task's verifier; for data the reward its schema implies (gsm8k, math: math; eurus: "
                                "eurus; reasoning_gym:NAME: reasoning_gym; plain: none, give reward).")
    n: int | None = option(None, help="Evaluate only the first N prompts (null: all).",
                           check=(lambda v: v is None or v >= 1, ">= 1 or null"))
    k: int = option(0, help="Samples per prompt for mean@k / pass@k (0: greedy only).", check=(lambda v: v >= 0, ">= 0"))
    temperature: float = option(1.0, help="Sampling temperature for k.", check=(lambda v: v > 0, "> 0"))
    top_p: float = option(1.0, help="Nucleus sampling for k.", check=(lambda v: 0 < v <= 1, "in (0, 1]"))
    max_new_tokens: int | None = option(None, help="Generation budget (null: 96 for tasks, 512 for data).",
                                        check=(lambda v: v is None or v >= 1, ">= 1 or null"))
    batch_size: int = option(256, help="Sequences per generate() call (lower it for big models).",
                             check=(lambda v: v >= 1, ">= 1"))
    seed: int = option(0, help="Sampling seed.", check=(lambda v: v >= 0, ">= 0"))
    out: str | None = option(None, help="Write the results as JSON to this file.")
    chat_template: str | bool | None = option(  # (YAML reads on / off as true / false)
        None, help="String prompts through the tokenizer's chat template, by data.chat_template's rule: on, off, or "
        "auto (as spro trained the model when it is a folder spro saved: a spro sft warm start or a spro train "
        "checkpoint records it; else on when the tokenizer has one and the model's name says Instruct, chat or it). "
        "null: the setting of the run a checkpoint comes from, else auto.",
        check=(lambda v: v in ("auto", "on", "off", True, False, None), "auto, on, off or null"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from spro.options import add_flags, describe

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = ("Settings: key=value (YAML values) or the flags above, their short aliases (key=value wins), e.g.\n"
                     "  spro eval model=runs/spro task=arithmetic k=4 task_kwargs.num_operands=[3,5]\n\n"
                     "Every key, with its default and help text:\n\n" + "\n".join(describe(EvalConfig)))
    add_flags(parser, EvalConfig, [f for f in EvalConfig.__dataclass_fields__ if f != "task_kwargs"])
    parser.add_argument("--task-knob", action="append", default=[], metavar="KEY=VALUE",
                        help="A task knob, short for task_kwargs.KEY=VALUE (YAML value), e.g. num_operands=[3,5], or a "
                        "reasoning-gym config key. Repeatable.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="Settings (the keys listed below).")


def resolve_config(args: argparse.Namespace) -> EvalConfig:
    """The EvalConfig of the flags and the key=value overrides (later wins)."""
    from omegaconf import OmegaConf

    from spro import options

    bad = [item for item in args.task_knob if "=" not in item]
    if bad:
        raise ValueError(f"--task-knob {bad[0]!r}: expected KEY=VALUE")
    cfg = options.build(EvalConfig, OmegaConf.merge(options.flags_layer(args, EvalConfig), options.overrides_layer(
        [f"task_kwargs.{i}" for i in args.task_knob] + args.overrides)))
    if cfg.task is not None and cfg.data is not None:
        raise ValueError(f"task={cfg.task} and data={cfg.data}: give one")
    return cfg


def _resolve_model(spec: str):
    """The model folder ``--model`` names: a run folder becomes its latest checkpoint."""
    from pathlib import Path

    from spro.trainer.checkpoint import CheckpointError, find_checkpoint
    from spro.trainer.warmstart import resolve_model

    path = Path(resolve_model(spec))
    if path.is_dir() and not any((path / f).is_file() for f in ("config.json", "adapter_config.json")):
        try:
            return find_checkpoint(path)
        except CheckpointError:
            raise ValueError(f"model={spec}: neither a model folder (no config.json or adapter_config.json) nor a "
                             f"run folder with checkpoints") from None
    return path


def _chat_template(cfg: EvalConfig, model_dir: Any, tokenizer: Any) -> tuple[bool, str]:
    """``chat_template``, else the ``data.chat_template`` of the run a checkpoint comes from (``off`` for runs
    from before that key), else ``auto``; ``auto`` follows the record of the checkpoint (or of the warm start it
    came from), else looks at the run's ``model.name_or_path`` / ``gguf_file``."""
    from spro.data.prompts import resolve_chat_template
    from spro.trainer.checkpoint import CheckpointError, read_run_config

    mode, names = cfg.chat_template, [cfg.model, str(model_dir)]
    try:
        run = read_run_config(model_dir)
    except CheckpointError:
        run = None
    if run is not None:
        mode = run.get("data", {}).get("chat_template", "off") if mode is None else mode
        # the checkpoint's own record first (spro train writes how it rendered prompts), then the run's model
        names = [str(model_dir), run.get("model", {}).get("name_or_path"), run.get("model", {}).get("gguf_file")]
    return resolve_chat_template("auto" if mode is None else mode, tokenizer, *names, key="--chat-template")


def _reasoning_gym_split(cfg: EvalConfig):
    """data=reasoning_gym:NAME: the held-out questions of a run with the default data.reasoning_gym seed and
    size (split=train: its training questions); task_kwargs sets the task's config keys."""
    from spro.config import DataConfig, ReasoningGymConfig
    from spro.data.reasoning_gym import load_reasoning_gym

    data = DataConfig(task=None, source=cfg.data, eval_size=cfg.n or 200,
                      reasoning_gym=ReasoningGymConfig(config=dict(cfg.task_kwargs)))
    train, held_out = load_reasoning_gym(data, with_eval=cfg.split != "train")
    return train if cfg.split == "train" else held_out


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rich.console import Console
    from rich.table import Table

    from spro.experiments.evaluation import evaluate
    from spro.models.loading import load_model

    console = Console(stderr=True)
    try:
        cfg = resolve_config(args)
        from spro.data import default_reward
        from spro.rewards import get_reward

        step_checker = None
        if cfg.data is not None:
            from spro.data import load_prompt_dataset
            from spro.data.reasoning_gym import is_reasoning_gym

            if is_reasoning_gym(cfg.data):
                dataset = _reasoning_gym_split(cfg)
            else:
                dataset = load_prompt_dataset(cfg.data, schema=cfg.schema, split=cfg.split)
            if cfg.n is not None:
                dataset = dataset.select(range(min(cfg.n, len(dataset))))
            reward = cfg.reward or default_reward(source=cfg.data, dataset=dataset, how="--reward NAME")
            source = {"data": cfg.data, "schema": cfg.schema, "reward": reward}
            max_new = cfg.max_new_tokens or 512
        else:
            from spro.data.loader import DEFAULT_TASK
            from spro.data.tasks import get_task

            name = cfg.task or DEFAULT_TASK
            task = get_task(name, **cfg.task_kwargs)
            dataset = task.split(cfg.split, n=cfg.n)
            reward = cfg.reward or default_reward(task=name)
            step_checker = getattr(task, "first_wrong_step", None)
            source = {"task": name, "split": cfg.split, "reward": reward,
                      "knobs": task.knobs() if hasattr(task, "knobs") else None}
            max_new = cfg.max_new_tokens or 96
        reward_fn = get_reward(reward)
        model_dir = _resolve_model(cfg.model)
        model, tokenizer = load_model(str(model_dir))  # LoRA adapters merged into their base
        chat, why = _chat_template(cfg, model_dir, tokenizer)
        console.print(f"string prompts {'through the chat template' if chat else 'used as they are'} ({why})")
        source["chat_template"] = chat
        result = evaluate(
            model, tokenizer, dataset, reward_fn, k=cfg.k, temperature=cfg.temperature, top_p=cfg.top_p,
            max_new_tokens=max_new, batch_size=cfg.batch_size, seed=cfg.seed, step_checker=step_checker,
            progress=not args.no_progress, chat_template=chat,
        )
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    result = {"model": str(model_dir), **source, **result}

    table = Table(title=f"spro eval: {model_dir}")
    table.add_column("metric")
    table.add_column("value", justify="right")

    def fmt(v):
        return f"{v:.4f}" if isinstance(v, float) else str(v)

    keys = ["n", "pass@1"] + ([f"mean@{cfg.k}", f"pass@{cfg.k}"] if cfg.k else []) + \
        ["length_mean"] + (["sampled_length_mean"] if cfg.k else []) + ["truncated_frac", "reward_none"]
    for key in keys:
        table.add_row(key, fmt(result.get(key)))
    sc = result.get("step_checker")
    if sc:
        table.add_row("wrong greedy answers", str(sc["wrong_n"]))
        table.add_row("  first wrong step found", fmt(sc["found_frac"]))
        table.add_row("  position counts", ", ".join(f"{p}:{c}" for p, c in sc["positions"].items()) or "-")
        table.add_row("right answers with all steps right", fmt(sc["right_answer_all_steps_right_frac"]))
    Console().print(table)
    if "by_source" in result:
        bt = Table(title="by data_source")
        cols = ["n", "pass@1", "length_mean"] + ([f"mean@{cfg.k}", f"pass@{cfg.k}"] if cfg.k else [])
        bt.add_column("data_source")
        for c in cols:
            bt.add_column(c, justify="right")
        for src_name, entry in result["by_source"].items():
            bt.add_row(src_name, *[fmt(entry.get(c)) for c in cols])
        Console().print(bt)
    if cfg.out:
        with open(cfg.out, "w") as f:
            json.dump(result, f, indent=2)
        console.print(f"wrote {cfg.out}")
    return 0
