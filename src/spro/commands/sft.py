"""`spro sft`: supervised warm start of a causal LM on reference solutions, of a built-in task or a dataset.

    spro sft --output models/weak --preset weak                      # the built-in arithmetic task
    spro sft --data train.jsonl --model models/base --output models/sft [--schema gsm8k] [--eval-data dev.jsonl]
"""

from __future__ import annotations

import argparse
import dataclasses
import json

HELP = "Supervised warm start of a causal LM on a task's or a dataset's solutions."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from spro.trainer.sft import PRESETS

    parser.add_argument("--output", "-o", required=True, help="Folder to save the fine-tuned model + tokenizer (HF format).")
    parser.add_argument("--overwrite", action="store_true",
                        help="If --output holds a run, a checkpoint or other files (not a model folder, which is replaced), "
                        "move them aside to OUTPUT.old-N first (nothing is deleted); without it such a folder is refused.")
    parser.add_argument("--preset", choices=sorted(PRESETS) + ["finetune"], default=None,
                        help="Start from this preset's settings; flags below override it. Default: finetune (lr 1e-5, "
                        "batch 8, 100 steps, 256 new tokens) with --data and --model, weak (a tiny model's settings) "
                        "otherwise.")
    parser.add_argument("--model", default=None,
                        help="HF folder (or .gguf file) of a causal LM to fine-tune (default: a fresh tiny Llama with a "
                        "character tokenizer).")
    parser.add_argument("--task", default=None, help="Task name (default: arithmetic; not with --data).")
    data = parser.add_argument_group("a dataset instead of the built-in task")
    data.add_argument("--data", default=None,
                      help="Dataset with solutions: a jsonl/json/parquet/csv file or saved dataset folder "
                      "(spro.data.load_prompt_dataset).")
    data.add_argument("--schema", default="auto",
                      help="Its schema: auto, gsm8k, math, eurus, plain (default: auto).")
    data.add_argument("--column-map", action="append", default=[], metavar="OURS=THEIRS",
                      help="Rename a column first, e.g. prompt=instruction, answer=gold, solution=response. Repeatable.")
    data.add_argument("--solution-column", default="solution",
                      help="Column with the target text (default: solution; GSM8K's gets its '#### answer' line back).")
    data.add_argument("--prompt-template", default=None, help="Format string for each prompt, e.g. '{prompt}\\nAnswer:'.")
    data.add_argument("--eval-data", default=None,
                      help="Held-out dataset for the accuracy (default: min(--eval-n, 10%%) of --data's rows, seeded).")
    data.add_argument("--reward", default=None,
                      help="Reward of the held-out accuracy (default: math; code for rows with tests; eurus for Eurus data).")
    parser.add_argument("--max-new-tokens", type=int, default=None, help="Generation budget of the held-out accuracy.")
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

    from spro.trainer.rundir import check_output_folder
    from spro.trainer.sft import FINETUNE, get_preset, sft

    console = Console(stderr=True)
    try:
        check_output_folder(args.output, overwrite=args.overwrite)  # at once, before training
        if args.data and args.task:
            raise ValueError("give --data or --task, not both")
        preset = args.preset or ("finetune" if args.data and args.model else "weak")
        cfg = dataclasses.replace(FINETUNE) if preset == "finetune" else get_preset(preset)
        bad = [item for item in args.column_map if "=" not in item]
        if bad:
            raise ValueError(f"--column-map {bad[0]!r}: expected OURS=THEIRS, e.g. solution=response")
        column_map = dict(item.split("=", 1) for item in args.column_map) or None
        overrides = {
            "model": args.model, "task": args.task, "steps": args.steps, "batch_size": args.batch_size,
            "lr": args.lr, "eval_every": args.eval_every, "eval_n": args.eval_n, "seed": args.seed,
            "threads": args.threads, "data": args.data, "schema": args.schema, "column_map": column_map,
            "solution_column": args.solution_column, "prompt_template": args.prompt_template,
            "eval_data": args.eval_data, "reward": args.reward, "max_new_tokens": args.max_new_tokens,
        }
        cfg = dataclasses.replace(cfg, **{k: v for k, v in overrides.items() if v is not None})
        if args.task_knob:
            cfg = dataclasses.replace(cfg, task_knobs={**cfg.task_knobs, **parse_knobs(args.task_knob)})
        result = sft(cfg, args.output, progress=not args.no_progress)
    except ValueError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    except (OSError, RuntimeError) as exc:  # a full disk: one line (the partial folder is removed)
        from spro.trainer.checkpoint import disk_full_line

        line = disk_full_line(exc, args.output)
        if line is None:
            raise
        console.print(f"[red]error:[/red] {line}")
        return 1
    last = result.validation[-1] if result.validation else {}
    console.print(
        f"saved {result.path}  (preset {preset}, {result.num_parameters:,} params, {result.seconds:.1f}s, "
        f"final loss {result.losses[-1]:.4f}, held-out accuracy {last.get('accuracy', float('nan')):.3f} "
        f"on {last.get('n', 0)} rows)"
    )
    return 0
