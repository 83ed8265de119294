"""SPRO inside TRL: train a tiny Llama on arithmetic with ``SPROTrainer`` on CPU, offline.

    pip install 'spro[trl]'
    python examples/trl_spro.py                      # random tiny model, 5 steps, about a minute on CPU
    python examples/trl_spro.py --warm-start weak    # start from spro's SFT warm start (built once, cached)

``SPROTrainer`` is TRL's ``GRPOTrainer`` with SPRO's per-token advantage; everything else (generation,
reward functions, accelerate / DeepSpeed, logging) is TRL's. To use it on your own model, replace the
model and tokenizer below with yours (``model="Qwen/..."`` works as with GRPOTrainer) and drop
``use_cpu``. A randomly initialised model never answers right, so next to the verifier this example adds
a small dense shaping reward (the share of arithmetic characters in the completion, weight 0.1) so that
the policy moves at all; once it has moved away from the reference, SPRO's process term (the
``process/*`` metrics) is non-zero. ``--warm-start`` gives a model that is sometimes right.
"""

from __future__ import annotations

import argparse
import os
import tempfile

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from spro.integrations.trl import SPROConfig, SPROTrainer  # noqa: E402
from spro.data.tasks import get_task  # noqa: E402
from spro.data.tasks.arithmetic import arithmetic_reward  # noqa: E402
from spro.models.tiny import build_char_tokenizer, build_tiny_model  # noqa: E402


ARITHMETIC_CHARS = set("0123456789+-*=;:A")


def arithmetic_charset_reward(prompts, completions, **kwargs) -> list[float]:
    """Share of arithmetic characters in each completion: a dense shaping signal for an untrained model."""
    return [sum(ch in ARITHMETIC_CHARS for ch in c) / max(len(c), 1) for c in completions]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="optimizer steps (default 5)")
    parser.add_argument("--warm-start", choices=["weak", "strong"], default=None,
                        help="start from spro's cached SFT warm start instead of a random tiny model")
    parser.add_argument("--spro-beta", type=float, default=0.05, help="SPRO's process-reward weight (default 0.05)")
    parser.add_argument("--num-generations", type=int, default=4, help="completions per prompt (default 4)")
    parser.add_argument("--batch-size", type=int, default=8, help="completions per step (default 8)")
    parser.add_argument("--output-dir", default=None, help="where TRL writes its outputs (default: a temp dir)")
    args = parser.parse_args()

    if args.warm_start:
        from transformers import AutoTokenizer

        from spro.trainer.warmstart import warm_start

        path = warm_start(args.warm_start)
        model, tokenizer = str(path), AutoTokenizer.from_pretrained(path)
    else:
        tokenizer = build_char_tokenizer()
        model = build_tiny_model(tokenizer, seed=0)

    # Columns: prompt ("Q:48+26+2="), answer ("76"), solution. TRL passes `answer` to the reward function.
    dataset = get_task("arithmetic").split("train", n=64)

    config = SPROConfig(
        output_dir=args.output_dir or tempfile.mkdtemp(prefix="trl_spro_"),
        # SPRO's options (see `SPROConfig`): process-reward weight, outcome scaling, ablations.
        spro_beta=args.spro_beta,
        spro_outcome_scale="group",
        # The usual GRPO knobs.
        num_generations=args.num_generations,
        per_device_train_batch_size=args.batch_size,
        max_completion_length=24,
        reward_weights=[1.0, 0.1],  # verifier, shaping
        temperature=1.0,
        learning_rate=1e-3,
        max_steps=args.steps,
        logging_steps=1,
        # CPU, no mixed precision, nothing sent anywhere.
        use_cpu=True,
        bf16=False,
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        seed=0,
    )
    trainer = SPROTrainer(
        model=model,
        reward_funcs=[arithmetic_reward, arithmetic_charset_reward],
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
    )
    trainer.train()

    keys = ("reward", "process/cpr_final_mean", "process/msa_abs_mean", "entropy", "loss")
    for entry in trainer.state.log_history:
        if "process/msa_abs_mean" in entry:
            print(f"step {entry['step']}: " + ", ".join(f"{k}={entry[k]:.4g}" for k in keys if k in entry))


if __name__ == "__main__":
    main()
