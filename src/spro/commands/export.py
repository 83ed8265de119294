"""`spro export`: write a plain Hugging Face model folder from any model spro can load.

    spro export --model runs/lora --output models/merged      # LoRA adapters merged into their base
    spro export --model path/to/model.Q4_1.gguf --output DIR  # a GGUF file dequantised to safetensors

``--model`` takes what ``spro eval --model`` takes: a run folder (its latest checkpoint), a
checkpoint or model folder, a ``.gguf`` file, ``warmstart:NAME``. The result loads with
``AutoModelForCausalLM.from_pretrained(DIR)`` and works as ``model.name_or_path``. An earlier
model folder at ``--output`` is replaced; a run, a checkpoint, a folder a trainer uses or any
other folder is refused (``--overwrite`` moves it aside to ``DIR.old-N``;
``spro.trainer.rundir.check_output_folder``).
"""

from __future__ import annotations

import argparse
import sys

HELP = "Write a full HF model folder: LoRA adapters merged into their base, or a GGUF file dequantised."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True,
                        help="A run folder (latest checkpoint), a checkpoint with LoRA adapters, a model folder, a "
                        ".gguf file or warmstart:NAME.")
    parser.add_argument("--output", "-o", required=True, help="Folder to write (model + tokenizer, safetensors).")
    parser.add_argument("--overwrite", action="store_true",
                        help="If --output holds a run, a checkpoint or other files (not a model folder, which is replaced), "
                        "move them aside to OUTPUT.old-N first (nothing is deleted); without it such a folder is refused.")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"],
                        help="Dtype of the written weights (default float32).")


def run(args: argparse.Namespace) -> int:
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import json

    from spro.commands.eval import _resolve_model
    from spro.data.prompts import PROMPTS_RECORD, warm_start_rendering
    from spro.models.loading import load_model, save_model_and_tokenizer
    from spro.trainer.rundir import check_output_folder

    try:
        check_output_folder(args.output, overwrite=args.overwrite)
        source = _resolve_model(args.model)
        model, tok = load_model(str(source), dtype=args.dtype)  # LoRA adapters merged ("merge" is the default)
        # how spro rendered prompts for the source (a warm start's or a checkpoint's record) travels with it
        record = warm_start_rendering(str(source))
        extra = None if record is None else {PROMPTS_RECORD: json.dumps(
            {"source": str(args.model), "chat_template_applied": record[0]})}
        path = save_model_and_tokenizer(model, tok, args.output, extra_files=extra)
    except ValueError as exc:
        print(f"spro export: error: {exc}", file=sys.stderr)
        return 2
    except (OSError, RuntimeError) as exc:  # a full disk: one line (the partial folder is removed)
        from spro.trainer.checkpoint import disk_full_line

        line = disk_full_line(exc, args.output)
        if line is None:
            raise
        print(f"spro export: error: {line}", file=sys.stderr)
        return 1
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {path} ({type(model).__name__}, {n:,} parameters, from {source})")
    return 0
