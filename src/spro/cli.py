"""The `spro` command line.

Each sub-command lives in its own module, imported only when that sub-command runs, so
`spro --help` stays fast. A sub-command module provides:

    HELP: str                                   one line for `spro --help`
    add_arguments(parser: argparse.ArgumentParser[, argv: list[str]]) -> None   (argv: the sub-command's
                                                arguments, e.g. for `spro train algorithm.name=mod:Algo --help`)
    run(args: argparse.Namespace) -> int        exit status
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import sys

# name -> (module, one-line help). The help is repeated here so `spro --help` needs no imports.
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("spro.commands.train", "RL-train a causal LM (spro, grpo, dr_grpo, rloo, prime)."),
    "sft": ("spro.commands.sft", "Supervised warm start of a causal LM on a task's or a dataset's solutions."),
    "eval": ("spro.commands.eval", "Evaluate a model: greedy pass@1, sampled mean@k, length."),
    "export": ("spro.commands.export", "Write a full HF model folder: LoRA adapters merged into their base, or a "
               "GGUF file dequantised."),
    "compare": ("spro.commands.compare", "Multi-seed comparison of algorithms with a claims report."),
    "demo": ("spro.commands.demo", "The offline demo: SPRO against GRPO on the built-in task."),
    "diagnose": ("spro.commands.diagnose", "Process-reward diagnostics of a saved model against a reference."),
    "doctor": ("spro.commands.doctor", "Check the code sandbox: active isolation and an attack suite against it."),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="spro",
        description="Process-reward RL for language models: SPRO and its baselines.",
    )
    from spro import __version__

    parser.add_argument("--version", action="version", version=f"spro {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv or ["--help"])  # prints help / version / error and exits
        return 2
    name, rest = argv[0], argv[1:]
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"spro {name}", description=COMMANDS[name][1])
    if len(inspect.signature(module.add_arguments).parameters) > 1:
        module.add_arguments(sub, rest)
    else:
        module.add_arguments(sub)
    args = sub.parse_intermixed_args(rest)  # key=value overrides may come before or after the options
    return int(module.run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
