"""`spro eval`: evaluate a causal LM on a built-in task or a prompt dataset.

    spro eval --model DIR --task arithmetic [--split test] [--n N] [--k K]
    spro eval --model RUN_DIR ...       (a `spro train` run folder: its latest checkpoint)
    spro eval --model DIR --data FILE [--schema auto] [--reward NAME] [--k K]

Greedy pass@1, sampled mean@k and pass@k (``--k``, ``--temperature``, ``--top-p``), mean
response length, a per-``data_source`` breakdown when that column exists and, for the arithmetic
task, first-wrong-step statistics. A table on screen; ``--out FILE`` writes the JSON.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

HELP = "Evaluate a model: greedy pass@1, sampled mean@k, length."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="HF folder of a causal LM, a run folder of `spro train` (its latest checkpoint), a "
                        "checkpoint folder (LoRA adapters are loaded onto their base model), or warmstart:weak / "
                        "warmstart:strong (built and cached if needed).")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--task", default=None, help="Built-in task (e.g. arithmetic). Default when --data is not given.")
    src.add_argument("--data", default=None, help="Prompt dataset: a local jsonl/json/parquet/csv file or saved dataset "
                     "folder, or reasoning_gym:NAME (the held-out questions of a training run with the default "
                     "data.reasoning_gym seed and size; --task-knob sets the task's config keys).")
    parser.add_argument("--task-knob", action="append", default=[], metavar="KEY=VALUE",
                        help="Task knob (JSON value), e.g. num_operands=[3,5], or a reasoning-gym config key. Repeatable.")
    parser.add_argument("--split", default="test", help="Split to evaluate (default: test).")
    parser.add_argument("--schema", default="auto", help="--data schema for spro.data.load_prompt_dataset (default: auto).")
    parser.add_argument("--reward", default=None,
                        help="Reward name or module:function (a module in the working directory or on the Python "
                        "path). Default: the one spro train would use (spro.data.default_reward): the task's "
                        "verifier; for --data the reward its schema implies (gsm8k, math: math; eurus: eurus; "
                        "reasoning_gym:NAME: reasoning_gym; plain: none, give --reward).")
    parser.add_argument("--chat-template", default=None, choices=("auto", "on", "off"),
                        help="String prompts through the tokenizer's chat template, by data.chat_template's rule "
                        "(auto: the tokenizer has one and the model's name says Instruct, chat or it). Default: the "
                        "setting of the run a checkpoint comes from, else auto.")
    parser.add_argument("--n", type=int, default=None, help="Evaluate only the first N prompts.")
    parser.add_argument("--k", type=int, default=0, help="Samples per prompt for mean@k / pass@k (0: greedy only).")
    parser.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature for --k (default 1.0).")
    parser.add_argument("--top-p", type=float, default=1.0, help="Nucleus sampling for --k (default 1.0).")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Generation budget (default: 96 for tasks, 512 for --data).")
    parser.add_argument("--batch-size", type=int, default=256, help="Sequences per generate() call (default 256; lower it for big models).")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed.")
    parser.add_argument("--out", default=None, help="Write the results as JSON to this file.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")


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
            raise ValueError(f"--model {spec}: neither a model folder (no config.json or adapter_config.json) nor a "
                             f"run folder with checkpoints") from None
    return path


def _chat_template(args: argparse.Namespace, model_dir: Any, tokenizer: Any) -> tuple[bool, str]:
    """``--chat-template``, else the ``data.chat_template`` of the run a checkpoint comes from (``off`` for runs
    from before that key), else ``auto``; ``auto`` looks at the run's ``model.name_or_path`` / ``gguf_file``."""
    from spro.data.prompts import resolve_chat_template
    from spro.trainer.checkpoint import CheckpointError, read_run_config

    mode, names = args.chat_template, [args.model, str(model_dir)]
    try:
        run = read_run_config(model_dir)
    except CheckpointError:
        run = None
    if run is not None:
        mode = mode or run.get("data", {}).get("chat_template", "off")
        names = [run.get("model", {}).get("name_or_path"), run.get("model", {}).get("gguf_file")]
    return resolve_chat_template(mode or "auto", tokenizer, *names)


def _reasoning_gym_split(args: argparse.Namespace):
    """--data reasoning_gym:NAME: the held-out questions of a run with the default data.reasoning_gym seed and
    size (--split train: its training questions); --task-knob sets the task's config keys."""
    from spro.commands.sft import parse_knobs
    from spro.config import DataConfig, ReasoningGymConfig
    from spro.data.reasoning_gym import load_reasoning_gym

    knobs = {k: list(v) if isinstance(v, tuple) else v for k, v in parse_knobs(args.task_knob).items()}
    data = DataConfig(task=None, source=args.data, eval_size=args.n or 200, reasoning_gym=ReasoningGymConfig(config=knobs))
    train, held_out = load_reasoning_gym(data, with_eval=args.split != "train")
    return train if args.split == "train" else held_out


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rich.console import Console
    from rich.table import Table

    from spro.experiments.evaluation import evaluate
    from spro.models.loading import load_model

    console = Console(stderr=True)
    try:
        if args.n is not None and args.n < 1:
            raise ValueError(f"--n must be >= 1, got {args.n}")
        from spro.data import default_reward
        from spro.rewards import get_reward

        step_checker = None
        if args.data is not None:
            from spro.data import load_prompt_dataset
            from spro.data.reasoning_gym import is_reasoning_gym

            if is_reasoning_gym(args.data):
                dataset = _reasoning_gym_split(args)
            else:
                dataset = load_prompt_dataset(args.data, schema=args.schema, split=args.split)
            if args.n is not None:
                dataset = dataset.select(range(min(args.n, len(dataset))))
            reward = args.reward or default_reward(source=args.data, dataset=dataset, how="--reward NAME")
            source = {"data": args.data, "schema": args.schema, "reward": reward}
            max_new = args.max_new_tokens or 512
        else:
            from spro.commands.sft import parse_knobs
            from spro.data.loader import DEFAULT_TASK
            from spro.data.tasks import get_task

            name = args.task or DEFAULT_TASK
            task = get_task(name, **parse_knobs(args.task_knob))
            dataset = task.split(args.split, n=args.n)
            reward = args.reward or default_reward(task=name)
            step_checker = getattr(task, "first_wrong_step", None)
            source = {"task": name, "split": args.split, "reward": reward,
                      "knobs": task.knobs() if hasattr(task, "knobs") else None}
            max_new = args.max_new_tokens or 96
        reward_fn = get_reward(reward)
        model_dir = _resolve_model(args.model)
        model, tokenizer = load_model(str(model_dir))  # LoRA adapters merged into their base
        chat, why = _chat_template(args, model_dir, tokenizer)
        console.print(f"string prompts {'through the chat template' if chat else 'used as they are'} ({why})")
        source["chat_template"] = chat
        result = evaluate(
            model, tokenizer, dataset, reward_fn, k=args.k, temperature=args.temperature, top_p=args.top_p,
            max_new_tokens=max_new, batch_size=args.batch_size, seed=args.seed, step_checker=step_checker,
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

    keys = ["n", "pass@1"] + ([f"mean@{args.k}", f"pass@{args.k}"] if args.k else []) + \
        ["length_mean"] + (["sampled_length_mean"] if args.k else []) + ["truncated_frac", "reward_none"]
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
        cols = ["n", "pass@1", "length_mean"] + ([f"mean@{args.k}", f"pass@{args.k}"] if args.k else [])
        bt.add_column("data_source")
        for c in cols:
            bt.add_column(c, justify="right")
        for src_name, entry in result["by_source"].items():
            bt.add_row(src_name, *[fmt(entry.get(c)) for c in cols])
        Console().print(bt)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        console.print(f"wrote {args.out}")
    return 0
