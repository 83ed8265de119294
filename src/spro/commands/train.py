"""`spro train`: RL-train a causal LM with SPRO, GRPO, Dr. GRPO, RLOO (or PRIME)."""

from __future__ import annotations

import argparse
import sys

HELP = "RL-train a causal LM (spro, grpo, dr_grpo, rloo, prime)."

EPILOG = """\
Settings come from (later wins): the defaults < --preset NAME < --config FILE < key=value
overrides, e.g.

  spro train --preset tiny-arithmetic algorithm.name=grpo output_dir=runs/grpo
  spro train --config run.yaml optim.lr=2e-5 rollout.num_generations=8
  spro train --resume runs/grpo                 # continue from the latest checkpoint that verifies
  spro train --config run.yaml --print-config   # show the full resolved config and exit
  accelerate launch -m spro train --config run.yaml   # data parallel over processes
  accelerate launch --multi_gpu --num_processes 2 -m spro train --config run.yaml device=cpu
                                                # two CPU processes (torchrun + gloo)

rollout.prompts_per_step is the global number of prompts per step; it must be divisible by the
number of processes (each process generates whole groups).

A run folder (output_dir) is used by one trainer at a time (a lock file). A new run into a folder
that holds a run (checkpoints or logged metrics) stops with an error: resume it with --resume, pick
another output_dir, or pass --overwrite to move that run aside to OUTPUT_DIR.old-N first. A folder
with records but no checkpoint yet (stopped before its first save) resumes from step 0.

Ctrl-C (SIGINT) or SIGTERM: the step under way finishes, a checkpoint is saved, the folder is
released and one line gives the --resume command (exit status 130 / 143); a second one stops at
once (the checkpoints saved so far are intact).

Override values use YAML syntax (true, 1e-5, null, [a, b], {k: v}); ${key} in a value is the value
of another key (OmegaConf interpolation, e.g. output_dir=runs/${algorithm.name}). An algorithm of
your own shows its options here when named: spro train algorithm.name=my_algos:MyAlgo --help.
Every key, with its default and help text:

"""


def plugin_algorithms(argv: list[str]) -> list[str]:
    """The ``module:attr`` algorithms named in ``argv`` (``algorithm.name=...`` overrides, --config's
    ``algorithm.name``), so that `spro train ... --help` lists their options too."""
    specs = [a.split("=", 1)[1] for a in argv if a.startswith("algorithm.name=")]
    if "--config" in argv[:-1]:
        from spro.config import ConfigError, options

        try:
            data = options.read_yaml(argv[argv.index("--config") + 1])
            specs.append(str((data.get("algorithm") or {}).get("name", data.get("algorithm.name", ""))))
        except (ConfigError, AttributeError):
            pass
    return [s for s in specs if ":" in s]


def add_arguments(parser: argparse.ArgumentParser, argv: list[str] = ()) -> None:
    from spro.config import describe_options, list_presets

    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    try:
        keys_help = describe_options(extra=plugin_algorithms(list(argv)))
    except ValueError as e:  # a plugin that does not import: say so under the built-in ones
        keys_help = describe_options() + f"\n\n(not listed: {e})"
    parser.epilog = EPILOG + keys_help
    parser.add_argument("--config", metavar="FILE", help="YAML file with config keys (nested or dotted).")
    parser.add_argument(
        "--preset", metavar="NAME",
        help=f"A shipped preset (spro/presets/NAME.yaml): {', '.join(list_presets())}.",
    )
    parser.add_argument(
        "--resume", metavar="DIR",
        help="Continue from a run folder (its newest checkpoint that verifies against the checksums saved with it) "
        "or a checkpoint folder, writing into that run folder (a copied run resumes into the copy). Without "
        "--config / --preset the checkpoint's own config is used.",
    )
    parser.add_argument(
        "--overwrite", action="store_true",
        help="Start a new run even if output_dir holds one: that run is moved aside to OUTPUT_DIR.old-N "
        "(nothing is deleted).",
    )
    parser.add_argument("--print-config", action="store_true", help="Print the resolved config as YAML and exit.")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="Config overrides, e.g. optim.lr=2e-5.")


def resolve_config(args: argparse.Namespace):
    from spro.config import load_config

    if args.resume and not args.config and not args.preset:
        from spro.trainer.rundir import resume_config_data

        return load_config(overrides=args.overrides, base=resume_config_data(args.resume))
    return load_config(args.config, args.overrides, preset=args.preset)


def run(args: argparse.Namespace) -> int:
    try:
        return _run(args)
    except KeyboardInterrupt:  # Ctrl-C outside the trainer's own handling (while importing, say): no traceback
        print("spro train: interrupted; the checkpoints saved so far are kept (resume with --resume OUTPUT_DIR)",
              file=sys.stderr)
        return 130


def _run(args: argparse.Namespace) -> int:
    from spro.trainer.checkpoint import CheckpointError
    from spro.config import ConfigError, dump_yaml

    try:
        if args.resume and args.overwrite:
            raise ConfigError("--resume continues the run in its folder and --overwrite starts a new one: give one")
        cfg = resolve_config(args)
    except (ConfigError, CheckpointError) as e:
        print(f"spro train: error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(dump_yaml(cfg), end="")
        return 0
    from spro.trainer import TrainingDivergedError, train
    from spro.trainer.checkpoint import DiskFullError, disk_full_line
    from spro.trainer.signals import TrainingStopped

    try:
        out = train(cfg, resume=args.resume, overwrite=args.overwrite)
    except (ValueError, TrainingDivergedError, DiskFullError) as e:  # ConfigError, CheckpointError, RewardFunctionError, ...
        print(f"spro train: error: {e}", file=sys.stderr)
        return 1
    except TrainingStopped as e:  # SIGINT / SIGTERM: a checkpoint was saved
        from spro.trainer.signals import say

        say(f"spro train: {e}")
        return e.exit_code
    except (OSError, RuntimeError) as e:  # a full disk elsewhere (config.yaml, TensorBoard): one line too
        line = disk_full_line(e, cfg.output_dir)
        if line is None:
            raise
        print(f"spro train: error: {line}", file=sys.stderr)
        return 1
    print(f"run folder: {out}")
    return 0
