"""`spro diagnose`: does a trained policy's self-guided process reward locate the first wrong step?

    spro diagnose --model runs/spro/checkpoints/step-000400 --ref warmstart:long-weak --task arithmetic_long

Samples --k responses per problem from the model, and for the wrong ones with a known first wrong
step reports, per signal (the self-guided reward log pi - log pi_ref, its MSA, the model's own
log-probs, random), how often the lowest-scoring step is the first wrong one (top-1, with its
chance level) and how often the first wrong step scores below an earlier step (AUROC): a
ProcessBench-style table. ``--out FILE`` writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import sys

HELP = "Process-reward diagnostics of a saved model against a reference (ProcessBench-style table)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="The policy: an HF folder, a checkpoint, or warmstart:NAME.")
    parser.add_argument("--ref", required=True, help="The reference pi_ref (e.g. the policy's starting point).")
    parser.add_argument("--task", default="arithmetic", help="Built-in task with a step checker (default: arithmetic).")
    parser.add_argument("--split", default="test", help="Split (default: test).")
    parser.add_argument("--n", type=int, default=200, help="Problems (default 200).")
    parser.add_argument("--k", type=int, default=4, help="Samples per problem (default 4; MSA needs >= 2).")
    parser.add_argument("--temperature", type=float, default=1.0, help="Sampling temperature (default 1.0).")
    parser.add_argument("--max-new-tokens", type=int, default=96, help="Generation budget (default 96).")
    parser.add_argument("--seed", type=int, default=0, help="Sampling seed.")
    parser.add_argument("--out", default=None, help="Write the JSON to this file.")
    parser.add_argument("--task-knob", action="append", default=[], metavar="KEY=VALUE",
                        help="A task knob (YAML value), e.g. value_range=[10,99]; repeatable.")
    parser.add_argument("--chat-template", default=None, choices=("auto", "on", "off"),
                        help="Prompts through the tokenizer's chat template, by spro train's data.chat_template rule "
                        "(auto: as spro trained --model when it saved it, else on for a model named instruct/chat/it). "
                        "Default: the setting of the run a checkpoint comes from, else auto (as spro eval).")


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from rich.console import Console
    from types import SimpleNamespace

    import yaml
    from rich.table import Table

    from spro.commands.eval import _chat_template, _resolve_model
    from spro.data.tasks import get_task
    from spro.experiments.diagnose import diagnose
    from spro.models.loading import load_model
    from spro.options import ConfigError

    try:
        knobs = {}
        for kv in args.task_knob:
            key, sep, value = kv.partition("=")
            if not sep or not key:
                raise ValueError(f"--task-knob expects KEY=VALUE, got {kv!r}")
            try:
                knobs[key] = yaml.safe_load(value)
            except yaml.YAMLError as e:
                raise ValueError(f"--task-knob {kv!r}: the value is not YAML ({str(e).splitlines()[0]})") from None
        task = get_task(args.task, **knobs)
        path = _resolve_model(args.model)  # a run folder: its latest checkpoint (LoRA ones too)
        model, tok = load_model(str(path))
        ref, _ = load_model(str(_resolve_model(args.ref)))
        chat, why = _chat_template(SimpleNamespace(chat_template=args.chat_template, model=args.model), path, tok)
        print(f"spro diagnose: prompts {'through the chat template' if chat else 'used as they are'} ({why})",
              file=sys.stderr)
        result = diagnose(model, ref, tok, task, split=args.split, n=args.n, k=args.k,
                          temperature=args.temperature, max_new_tokens=args.max_new_tokens, seed=args.seed,
                          chat_template=chat)
    except (ValueError, ConfigError) as e:
        print(f"spro diagnose: error: {e}", file=sys.stderr)
        return 2
    result = {"model": args.model, "ref": args.ref, "chat_template": chat, **result}
    table = Table(title=f"first wrong step: {args.model} vs {args.ref} ({args.task} {args.split}, accuracy "
                        f"{result['accuracy']:.3f})")
    for col in ("signal", "wrong responses", "top-1", "top-1 chance", "AUROC", "pairs"):
        table.add_column(col, justify="right" if col != "signal" else "left")

    def fmt(v):
        return "n/a" if v is None else f"{v:.3f}"

    for name, row in result["signals"].items():
        table.add_row(name, f"{row['n']:.0f}", fmt(row["top1"]), fmt(row["top1_chance"]), fmt(row["auroc"]),
                      f"{row['auroc_pairs']:.0f}")
    Console().print(table)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return 0
