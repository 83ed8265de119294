"""Mixed precision: bf16 autocast over fp32 master weights, log-probs in fp32.

``model.precision=bf16`` (:func:`apply_precision`) makes every forward pass of the model run under
``torch.autocast(device_type, dtype=torch.bfloat16)``: matrix multiplications in bf16, the weights
(the "master weights" the optimizer updates) and the optimizer state in fp32. The output layer
(``get_output_embeddings()``) is excluded from autocast and computes the logits in fp32 from the
fp32 weights; ``spro.models.logprobs`` takes the log-softmax of those fp32 logits, so the log-probs
of the PPO ratio, the KL term and SPRO's process reward ``beta * (log pi_old - log pi_ref)`` are
fp32 numbers.

``model.precision=auto`` (:func:`resolve_precision`) is bf16 where the hardware runs bf16 matmuls
natively and faster than fp32: a CUDA GPU with bf16 (compute capability 8.0 or newer), or a CPU with
AMX-BF16 (Sapphire Rapids and newer Xeons) or an AMD CPU with AVX512-BF16 (Zen 4), not an Intel CPU that
shows AVX512-BF16 without AMX (:func:`bf16_native` has the measurements), and the run does not train on a
log-ratio to the reference (SPRO's and PRIME's process rewards, a KL term with ``kl_coef > 0``), for which
bf16's parity does not hold (below); fp32 everywhere else, and fp32 when ``model.dtype`` is not
float32. It is the setting for real models (SmolLM2-135M on such a CPU: a forward pass ~3x faster
than fp32). The default stays ``fp32``: the tiny presets and every
committed fixed-seed result keep their numbers on every machine, and a config that names
``fp32`` or ``bf16`` gives the same numbers wherever it runs on the same kind of machine; ``auto``
gives the same numbers on one machine (it is resolved from the hardware, not from timing).

This differs from ``model.dtype=bfloat16``, which casts the weights themselves (no fp32 copy: less
memory, but updates smaller than bf16's resolution are lost).

The forward is replaced on the model object (a bound method, so ``copy.deepcopy`` of the model,
e.g. the frozen reference or PRIME's PRM, keeps it bound to the copy), which also covers
``generate`` and wrappers such as peft's ``PeftModel`` and DDP; it keeps the model's signature,
which ``generate`` reads. Autocast runs on GPUs and CPUs; on a CPU without bf16 in hardware (no
AMX-BF16 / AVX512-BF16) bf16 is slower than fp32, and so it is for the tiny model's small matrices
everywhere. What stays fp32 under bf16 costs time too: the output layer (for SmolLM2, 49152 x 576,
a fifth of the model's FLOPs per token, at the fp32 rate), the optimizer step, the casts.

Bit-comparability under bf16: pi_old and pi_ref run the same code on the same inputs, so at step 1
(pi_old == pi_ref) the process reward is exactly 0 under bf16 as under fp32
(tests/models/test_precision.py). Later, bf16 rounding of the inputs of each matmul adds noise to
each log-prob (~1e-2 for SmolLM2, benchmarks/roofline.py prints it); the process term is a
difference of two such log-probs, and weights that differ by less than bf16's resolution cast to
the same bf16 numbers: early in training (small weight changes) the bf16 process term is mostly
noise. Measured with benchmarks/roofline.py on SmolLM2-135M (a policy whose every weight moved by
1e-4, about 10 Adam steps of lr 1e-5, from the reference): the bf16 error of
log pi_old - log pi_ref was 3.6x to 4.1x the term itself (three runs); at 1e-3 (about 100 steps),
0.43x to 0.5x. So ``auto``
keeps fp32 for runs that train on that log-ratio, and ``bf16`` for SPRO is a choice to make
knowingly.
"""

from __future__ import annotations

import contextlib
import functools
import os
import types
from typing import Any, Iterator

import torch

__all__ = ["PRECISIONS", "apply_precision", "autocast_dtype", "autocast_scope", "bf16_native", "cpu_record",
           "precision_of", "resolve_precision"]

PRECISIONS = ("fp32", "bf16", "auto")


def _cpuinfo_field(*names: str) -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(names):
                    return line.split(":", 1)[1]
    except OSError:
        pass
    return ""


def _cpu_flags() -> set[str]:
    return set(_cpuinfo_field("flags", "Features").split())


def _cpu_vendor() -> str:
    return _cpuinfo_field("vendor_id").strip()


def cpu_record() -> dict[str, object]:
    """What decides this CPU's float32 kernels, for the record of a build whose result depends on them (a tiny SFT
    warm start that stops inside a sharp rise in accuracy lands elsewhere on another CPU, docs/results.md section 1):
    the CPU's name and vendor, torch's kernel level, AMX and AVX-512 flags, and MKL_ENABLE_INSTRUCTIONS if set."""
    flags = _cpu_flags()
    return {"cpu": " ".join(_cpuinfo_field("model name").split()), "vendor": _cpu_vendor(),
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "flags": sorted(f for f in flags if f.startswith(("avx512f", "avx512_bf16", "amx", "avx2"))),
            "mkl_enable_instructions": os.environ.get("MKL_ENABLE_INSTRUCTIONS")}


def bf16_native(device_type: str) -> bool:
    """Whether ``device_type`` ("cpu", "cuda", ...) runs bf16 matrix multiplications in hardware, faster than
    fp32: a CUDA device with native bf16; a CPU with AMX-BF16, an AMD CPU with AVX512-BF16 (Zen 4 and newer),
    or an Arm CPU with the BF16 extension ("bf16" in /proc/cpuinfo). An Intel CPU that shows AVX512-BF16
    without AMX is not counted: measured on one (a virtual machine's Xeon with AVX512-BF16 and AVX512-FP16 but
    no AMX flags), torch's bf16 matmul ran at 0.53x fp32's rate (576 x 1536 at 2048 rows, one thread: 80
    against 149 GFLOP/s) and a SmolLM2-135M forward pass under bf16 autocast took 1.35x fp32's time. torch
    runs bf16 on other CPUs too, by emulation, usually slower than fp32."""
    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if device_type == "cpu":
        flags = _cpu_flags()
        if "amx_bf16" in flags or "bf16" in flags:
            return True
        return "avx512_bf16" in flags and _cpu_vendor() == "AuthenticAMD"
    return False


def resolve_precision(precision: str, device_type: str, dtype: str = "float32", *, logratio: bool = False) -> str:
    """``"fp32"`` or ``"bf16"``: ``precision`` itself, or for ``"auto"`` bf16 when the weights are float32,
    :func:`bf16_native` holds for ``device_type`` and the run does not train on a log-ratio to the reference
    (``logratio``: SPRO's and PRIME's process rewards, a KL term), where bf16's parity does not hold (see the
    module docstring); fp32 otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"model.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bf16" if dtype == "float32" and not logratio and bf16_native(device_type) else "fp32"


def precision_of(model: Any) -> str | None:
    """The precision :func:`apply_precision` resolved for ``model`` (None: not applied)."""
    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    return getattr(inner, "_spro_precision", None)


def autocast_dtype(model: Any) -> torch.dtype | None:
    """The autocast dtype :func:`apply_precision` gave ``model`` (None: plain precision)."""
    return getattr(model, "_spro_autocast", (None, None))[1]


@contextlib.contextmanager
def autocast_scope(model: Any) -> Iterator[None]:
    """One autocast region around many forward passes of ``model`` (``generate``'s decode steps): autocast
    caches the bf16 copies of the fp32 weights until its outermost region ends, so each weight is cast once
    per region instead of once per forward pass (each pass's own region is nested in this one). Same
    numbers (a cast is a cast); 2.6x faster bf16 generation of SmolLM2-135M on CPU (16 x 16 tokens).
    Nothing for a model without :func:`apply_precision`'s autocast. Weights must not change inside.
    """
    inner = getattr(model, "module", model)  # DDP
    if hasattr(inner, "get_base_model"):  # peft
        inner = inner.get_base_model()
    state = getattr(inner, "_spro_autocast", None)
    if state is None:
        yield
        return
    with torch.autocast(state[0], dtype=state[1]):
        yield


def _autocast_forward(cls: type) -> Any:
    """``cls.forward`` under the instance's autocast, with ``cls.forward``'s signature (``functools.wraps``):
    ``generate`` reads the signature to decide what to pass (``logits_to_keep=1`` in the pre-fill; without it
    the pre-fill computed the output layer at every prompt position) and spro reads the cache argument's name."""

    @functools.wraps(cls.forward)
    def forward(self: Any, *args: Any, **kwargs: Any) -> Any:
        device_type, dtype = self._spro_autocast
        with torch.autocast(device_type, dtype=dtype):
            return cls.forward(self, *args, **kwargs)

    return forward


def _fp32_head_forward(cls: type) -> Any:
    @functools.wraps(cls.forward)
    def forward(self: Any, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(self._spro_autocast[0], enabled=False):
            return cls.forward(self, hidden.float(), *args, **kwargs)

    return forward


def apply_precision(model: Any, precision: str, device_type: str, *, logratio: bool = False) -> Any:
    """Make ``model`` (a transformers causal LM, in place) run its forward passes in ``precision``.

    ``"fp32"``: nothing changes. ``"bf16"``: bf16 autocast on ``device_type`` ("cuda", "cpu") with
    the output layer in fp32; the weights must be fp32 (they are the master weights). ``"auto"``:
    :func:`resolve_precision` picks one of them (``logratio``: see there). Returns ``model``.
    """
    if precision == "auto":
        dtypes = {p.dtype for p in model.parameters()}
        precision = resolve_precision("auto", device_type, "float32" if dtypes <= {torch.float32} else "other",
                                      logratio=logratio)
    elif precision not in PRECISIONS:
        raise ValueError(f"model.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
    model._spro_precision = precision
    if precision == "fp32":
        return model
    if device_type not in ("cuda", "cpu", "xpu", "mps"):
        raise ValueError(f"model.precision=bf16: autocast is not available on device type {device_type!r}")
    wrong = sorted({str(p.dtype) for p in model.parameters() if p.dtype != torch.float32})
    if wrong:
        raise ValueError(f"model.precision=bf16 keeps fp32 master weights, but the model has {', '.join(wrong)} "
                         "weights; set model.dtype=float32")
    state = (device_type, torch.bfloat16)
    model._spro_autocast = state
    model.forward = types.MethodType(_autocast_forward(type(model)), model)
    head = model.get_output_embeddings()
    if head is not None:
        head._spro_autocast = state
        head.forward = types.MethodType(_fp32_head_forward(type(head)), head)
    return model
