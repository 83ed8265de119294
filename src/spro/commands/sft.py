"""`spro sft`: supervised warm start of a causal LM on a task's reference solutions."""

from __future__ import annotations

import argparse
import dataclasses
import json

HELP = "Supervised warm start of a causal LM on a task's solutions."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", "-o", required=True, help="Folder to save the fine-tuned model + tokenizer (HF format).")
    parser.add_argument("--preset", choices=["weak", "strong"], default="weak",
                        help="Start from this preset's settings (default: weak); flags below override it.")
    parser.add_argument("--model", default=None,
                        help="HF folder of a causal LM to fine-tune (default: a fresh tiny Llama with a character tokenizer).")
    parser.add_argument("--task", default=None, help="Task name (default: arithmetic).")
    parser.add_argument("--task-knob", action="append", default=[], metavar="KEY=VALUE",
                        help="Task knob, value parsed as JSON when possible, e.g. num_operands=[3,5] or value_range=[0,9]. Repeatable.")
    parser.add_argument("--steps", type=int, default=None, help="Optimizer steps.")
    parser.add_argument("--batch-size", type=int, default=None, help="Examples per step.")
    parser.add_argument("--lr", type=float, default=None, help="Peak AdamW learning rate.")
    parser.add_argument("--eval-every", type=int, default=None, help="Validation accuracy every N steps (0: only at the end).")
    parser.add_argument("--eval-n", type=int, default=None, help="Validation problems per evaluation.")
    parser.add_argument("--seed", type=int, default=None, help="Seed of model init and batch order.")
    parser.add_argument("--threads", type=int, default=None, help="torch threads.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar.")


def parse_knobs(items: list[str]) -> dict:
    knobs = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--task-knob {item!r}: expected KEY=VALUE")
        key, value = item.split("=", 1)
        try:
            v = json.loads(value)
        except json.JSONDecodeError:
            v = value
        if isinstance(v, list):
            v = tuple(v)
        knobs[key.strip()] = v
    return knobs


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rich.console import Console

    from spro.trainer.sft import get_preset, sft

    console = Console(stderr=True)
    try:
        cfg = get_preset(args.preset)
        overrides = {
            "model": args.model, "task": args.task, "steps": args.steps, "batch_size": args.batch_size,
            "lr": args.lr, "eval_every": args.eval_every, "eval_n": args.eval_n, "seed": args.seed,
            "threads": args.threads,
        }
        cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        if args.task_knob:
            cfg = dataclasses.replace(cfg, task_knobs={**cfg.task_knobs, **parse_knobs(args.task_knob)})
        result = sft(cfg, args.output, progress=not args.no_progress)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    last = result.validation[-1] if result.validation else {}
    console.print(
        f"saved {result.path}  ({result.num_parameters:,} params, {result.seconds:.1f}s, "
        f"final loss {result.losses[-1]:.4f}, validation accuracy {last.get('accuracy', float('nan')):.3f})"
    )
    return 0
