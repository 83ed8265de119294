"""GPU check: a few SPRO and GRPO steps on a randomly initialised ~100M-parameter Llama with bf16 autocast.

No download: the model is built from a transformers config (spro.models.tiny's Llama with the
character tokenizer, 12 layers x 768 wide by default, ~99M parameters) and trained on the built-in
arithmetic task with model.precision=bf16 (autocast over fp32 master weights). For each algorithm,
after one warm-up step, ``--steps`` timed steps; printed per algorithm (medians over the steps): time
per stage (rollout, log-probs, update, whole step), generated tokens per second (response tokens /
rollout time), training tokens per second, and peak GPU memory; then the SPRO / GRPO step-time
ratio (SPRO's process reward reuses the reference log-probs, so the ratio should be close to 1); then
the same stages against the roofline, as benchmarks/roofline.py prints them (achieved FLOP/s against the
matmul peak of the dtype in use measured in the same run, and against the peak of each stage's own
matmul shape, and the fraction of the roofline time; tokens/s; peak memory).

    python benchmarks/gpu_check.py                 # on a machine with CUDA
    python benchmarks/gpu_check.py --allow-cpu --hidden 64 --layers 2 --heads 2 --intermediate 128 \\
        --prompts 2 --generations 4 --new-tokens 8 --steps 1   # a smoke run of the script itself on CPU

The algorithms run one after the other, each with a fresh trainer, so the peak memory of one does not
include the other's model.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STAGES = ("time/rollout", "time/logprob", "time/update", "time/step")

sys.path.insert(0, str(Path(__file__).resolve().parent))
import roofline  # noqa: E402  (benchmarks/roofline.py: the stage breakdown against the roofline)


def roofline_dtype(precision: str):
    import torch

    return torch.bfloat16 if precision == "bf16" else torch.float32


def build_model(folder: Path, args: argparse.Namespace) -> int:
    """A random Llama with the character tokenizer saved in ``folder``; returns its parameter count."""
    from spro.models.tiny import build_char_tokenizer, build_tiny_model

    tok = build_char_tokenizer()
    model = build_tiny_model(tok, hidden_size=args.hidden, num_layers=args.layers, num_heads=args.heads,
                             intermediate_size=args.intermediate, max_position_embeddings=512, seed=0)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return sum(p.numel() for p in model.parameters())


def run_algorithm(name: str, model_dir: Path, out: Path, args: argparse.Namespace, device: str,
                  peaks: "roofline.Peaks | None" = None) -> list[dict]:
    """The metrics of ``args.steps`` timed steps (after one warm-up step) of a fresh trainer; with ``peaks``,
    the roofline stage rows of benchmarks/roofline.py (:func:`roofline.stage_rows`) are attached to the
    first record as ``"_stages"``."""
    import torch

    from spro.config import load_config
    from spro.trainer import Trainer

    cfg = load_config(overrides=[
        f"model.name_or_path={model_dir}", f"output_dir={out / name}", f"algorithm.name={name}", f"device={device}",
        f"model.precision={args.precision}", "total_steps=1000", "eval_every=-1", "data.task=arithmetic",
        "data.train_size=4096", f"rollout.prompts_per_step={args.prompts}", f"rollout.num_generations={args.generations}",
        f"rollout.max_new_tokens={args.new_tokens}", "optim.lr=1e-5", "logging.tensorboard=false",
        "logging.progress_bar=false"])
    trainer = Trainer(cfg)
    batches = []
    generate = trainer.backend.generate
    trainer.backend.generate = lambda prompts, G: batches.append(generate(prompts, G)) or batches[-1]
    trainer.train_step()  # warm-up: allocator, kernels
    records = []
    for _ in range(args.steps):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        m = trainer.train_step()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        m["gen_tokens_per_sec"] = m["length/mean"] * args.prompts * args.generations / m["time/rollout"]
        records.append(m)
    if peaks is not None:
        import torch

        shapes = [roofline.batch_shape(trainer, b) for b in batches[1:]]
        dtype = torch.bfloat16 if args.precision == "bf16" else torch.float32
        peaks.measure(dtype, sorted({s[k] for s in shapes for k in ("decode_shape", "pass_shape")}))
        records[0]["_stages"] = roofline.stage_rows(trainer, records, shapes, peaks, args.precision)
        records[0]["_floor"] = roofline.step_floor(trainer, records, shapes, peaks, args.precision)
    del trainer
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return records


def table(results: dict[str, list[dict]]) -> str:
    cols = ("step s", "rollout s", "logprob s", "update s", "gen tok/s", "train tok/s", "peak MB")
    keys = STAGES[3:] + STAGES[:3] + ("gen_tokens_per_sec", "perf/tokens_per_sec", "memory/peak_mb")
    lines = [f"{'algorithm':<10}" + "".join(f"{c:>13}" for c in cols)]
    for name, recs in results.items():
        med = [statistics.median(r[k] for r in recs) for k in keys]
        peak = max(r["memory/peak_mb"] for r in recs)
        lines.append(f"{name:<10}" + "".join(f"{v:>13.3f}" for v in med[:4]) + f"{med[4]:>13.0f}{med[5]:>13.0f}"
                     f"{peak:>13.0f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=5, help="timed steps per algorithm, after one warm-up step (default 5)")
    ap.add_argument("--hidden", type=int, default=768, help="model width (default 768)")
    ap.add_argument("--layers", type=int, default=12, help="model depth (default 12)")
    ap.add_argument("--heads", type=int, default=12, help="attention heads (default 12)")
    ap.add_argument("--intermediate", type=int, default=2560, help="MLP width (default 2560: ~99M parameters)")
    ap.add_argument("--prompts", type=int, default=16, help="prompts per step (default 16)")
    ap.add_argument("--generations", type=int, default=8, help="responses per prompt (default 8)")
    ap.add_argument("--new-tokens", type=int, default=128, help="max new tokens per response (default 128)")
    ap.add_argument("--precision", default="bf16", choices=["bf16", "fp32"], help="model.precision (default bf16)")
    ap.add_argument("--allow-cpu", action="store_true", help="run on CPU when there is no CUDA (a smoke run)")
    ap.add_argument("--out", default=None, help="scratch folder (default: a temporary one)")
    args = ap.parse_args(argv)
    import torch

    cuda = torch.cuda.is_available()
    if not cuda and not args.allow_cpu:
        print("gpu_check: no CUDA device here; nothing was run (--allow-cpu runs the script on CPU as a smoke test)",
              file=sys.stderr)
        return 1
    device = "cuda" if cuda else "cpu"
    root = Path(args.out or tempfile.mkdtemp(prefix="spro-gpu-check-"))
    root.mkdir(parents=True, exist_ok=True)
    n_params = build_model(root / "model", args)
    where = torch.cuda.get_device_name() if cuda else "CPU (smoke run, not a GPU measurement)"
    print(f"{where}; torch {torch.__version__}; random Llama {n_params / 1e6:.1f}M parameters; precision "
          f"{args.precision}; {args.prompts} prompts x {args.generations} responses, {args.new_tokens} new tokens; "
          f"{args.steps} timed steps per algorithm (medians)", flush=True)
    peaks = roofline.Peaks(device)
    results = {name: run_algorithm(name, root / "model", root, args, device, peaks) for name in ("grpo", "spro")}
    print(table(results))
    print(f"\nstages against the roofline (benchmarks/roofline.py; %peak: of the {args.precision} matmul peak at "
          f"{'x'.join(map(str, roofline.REF_SHAPE))}, %shape: of the peak at the stage's own matmul shape, %roof: "
          f"roofline time / stage time)\n{roofline.HEADER}")
    for name, recs in results.items():
        print(roofline.format_rows(f"{name}/{args.precision}", recs[0]["_stages"]))
    for name, recs in results.items():
        print(f"{name}/{args.precision}: {recs[0]['_floor']}")
    dtype = "bf16" if args.precision == "bf16" else "fp32"
    print(f"{dtype} matmul peak {'x'.join(map(str, roofline.REF_SHAPE))}: "
          f"{peaks.get(roofline_dtype(args.precision), roofline.REF_SHAPE):.0f} GFLOP/s; copy bandwidth "
          f"{peaks.bw / 1e9:.0f} GB/s")
    ratio = statistics.median(r["time/step"] for r in results["spro"]) / \
        statistics.median(r["time/step"] for r in results["grpo"])
    print(f"SPRO / GRPO step time: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
