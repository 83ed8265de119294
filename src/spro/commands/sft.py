"""`spro sft`: supervised warm start of a causal LM on reference solutions, of a built-in task or a dataset.

    spro sft --output models/weak --preset weak                                 # the built-in arithmetic task
    spro sft --output models/sft data=train.jsonl model=models/base schema=gsm8k eval_data=dev.jsonl
    spro sft --output models/sft --data train.jsonl --model models/base         # the same keys as flags

Settings (later wins): the preset < the flags (short aliases of keys) < ``key=value`` overrides, the
convention of `spro train`, loaded by the same loader (:func:`spro.options.build`). The keys are the
fields of :class:`spro.trainer.sft.SFTConfig`, each listed with its help by `spro sft --help`.
"""

from __future__ import annotations

import argparse

HELP = "Supervised warm start of a causal LM on a task's or a dataset's solutions."

FLAGS = ("model", "task", "steps", "batch_size", "lr", "eval_every", "eval_n", "seed", "threads", "max_new_tokens",
         "chat_template")
DATA_FLAGS = ("data", "schema", "solution_column", "prompt_template", "eval_data", "reward")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from spro.options import add_flags, describe
    from spro.trainer.sft import FINETUNE, PRESETS, SFTConfig

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    weak = PRESETS["weak"]
    tiny = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "max_position_embeddings")  # no use with --model
    finetune = ", ".join(f"{k}={v}" for k, v in FINETUNE.to_dict().items() if v != getattr(weak, k) and k not in tiny)
    parser.epilog = ("Settings (later wins): --preset < the flags above < key=value overrides (YAML values), e.g.\n"
                     "  spro sft -o models/w steps=200 task_kwargs.num_operands=[3,5]\n\nEvery key, with its value "
                     "in the preset 'weak' (the default without --model) and help text; with --model the default "
                     "preset is 'finetune': " + finetune + "\n\n" + "\n".join(describe(SFTConfig, weak)))
    parser.add_argument("--output", "-o", required=True, help="Folder to save the fine-tuned model + tokenizer (HF format).")
    parser.add_argument("--overwrite", action="store_true",
                        help="If --output holds a run, a checkpoint or other files (not a model folder, which is replaced), "
                        "move them aside to OUTPUT.old-N first (nothing is deleted); without it such a folder is refused.")
    parser.add_argument("--preset", choices=sorted(PRESETS) + ["finetune"], default=None,
                        help="Start from this preset's settings; flags and key=value override it. Default: finetune "
                        "(lr 1e-5, batch 8, 100 steps, 256 new tokens) with --model (a pretrained model, on a dataset "
                        "or the built-in task), weak (a fresh tiny model's settings, lr 5e-3) otherwise.")
    add_flags(parser, SFTConfig, FLAGS)
    parser.add_argument("--task-knob", action="append", default=[], metavar="KEY=VALUE",
                        help="A task knob, short for task_kwargs.KEY=VALUE (YAML value), e.g. num_operands=[3,5]. "
                        "Repeatable.")
    data = parser.add_argument_group("a dataset instead of the built-in task")
    add_flags(data, SFTConfig, DATA_FLAGS)
    data.add_argument("--column-map", action="append", default=[], metavar="OURS=THEIRS",
                      help="Rename a column first, short for column_map.OURS=THEIRS, e.g. prompt=instruction, "
                      "solution=response. Repeatable.")
    parser.add_argument("--no-progress", action="store_true", help="No progress bar (a line per held-out evaluation instead).")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="Settings (the keys listed below), e.g. lr=1e-5 task_kwargs.value_range=[0,9].")


def resolve_config(args: argparse.Namespace):
    """``(preset name, SFTConfig)`` from the preset, the flags and the key=value overrides."""
    from omegaconf import OmegaConf

    from spro import options
    from spro.trainer.sft import FINETUNE, PRESETS, SFTConfig

    for flag, items, form in (("--column-map", args.column_map, "OURS=THEIRS, e.g. solution=response"),
                              ("--task-knob", args.task_knob, "KEY=VALUE")):
        bad = [item for item in items if "=" not in item]
        if bad:
            raise ValueError(f"{flag} {bad[0]!r}: expected {form}")
    given = OmegaConf.merge(options.flags_layer(args, SFTConfig), options.overrides_layer(
        [f"column_map.{i}" for i in args.column_map] + [f"task_kwargs.{i}" for i in args.task_knob] + args.overrides))
    if given.get("data") is not None and given.get("task") is not None:
        raise ValueError("give data (a dataset) or task (a built-in task), not both")
    # a model of your own is a pretrained one: the tiny presets' lr (5e-3) would wreck it
    preset = args.preset or ("finetune" if given.get("model") else "weak")
    base = FINETUNE if preset == "finetune" else PRESETS[preset]
    return preset, options.build(SFTConfig, OmegaConf.merge(options.layer(base.to_dict()), given))


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rich.console import Console

    from spro.trainer.rundir import check_output_folder
    from spro.trainer.sft import sft

    console = Console(stderr=True)
    try:
        check_output_folder(args.output, overwrite=args.overwrite)  # at once, before training
        preset, cfg = resolve_config(args)
        result = sft(cfg, args.output, progress=not args.no_progress,
                     echo=(lambda line: print(line, flush=True)) if args.no_progress else None)
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
