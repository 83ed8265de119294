"""Linear layers on pre-packed weights for decoding on a CPU (oneDNN's blocked layout).

At decode time each linear layer multiplies a handful of rows (the responses being sampled) by a
large weight matrix. torch's CPU ``linear`` reads the weight in its plain row-major layout; oneDNN's
blocked ("packed") layout is faster at so few rows: on one core of an AMD EPYC with AVX512-BF16, for
SmolLM2-135M's 576 x 1536 projections at 16 rows, 0.60 ms plain and 0.36 ms packed in fp32 (0.21 ms
packed in bf16). Packing costs one pass over the weights (about 0.2 to 0.7 s for SmolLM2-135M on one
core), so :func:`packed_linears` packs once per generation call, after the update that changed the
weights, and restores the modules when the call ends. benchmarks/roofline.py prints the generation
stage with and without (``--backends hf,decode``).

Same numbers up to rounding: oneDNN sums the products in another order (fp32: differences of order
1e-6, tests/rollout/test_decode.py), so the sampled tokens follow the same distribution; the
log-probs of the loss come from the plain forward passes, never from these layers.

Packed are ``torch.nn.Linear`` modules with float32 weights on a CPU; under ``model.precision=bf16`` they
multiply as autocast would, in bf16 (packed bf16 copies; 0.21 ms for the projection above), the output
layer in fp32 as that precision keeps it. It uses
``torch.ops.mkldnn._reorder_linear_weight`` and ``torch.ops.mkldnn._linear_pointwise``, the ops
torch's own compiler uses for frozen CPU linear layers; where torch is built without them nothing is
packed (:func:`packing_available`).
"""

from __future__ import annotations

import contextlib
import types
from typing import Any, Iterator

import torch

__all__ = ["packable", "packed_linears", "packing_available"]


def packing_available() -> bool:
    """Whether this torch build has oneDNN's packed linear ops."""
    try:
        return (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
                and hasattr(torch.ops.mkldnn, "_linear_pointwise"))
    except (AttributeError, RuntimeError):
        return False


def packable(model: Any) -> list[tuple[torch.nn.Linear, torch.dtype]]:
    """The linear layers of ``model`` that :func:`packed_linears` packs, each with the dtype it multiplies in:
    float32 weights on a CPU; under :func:`spro.models.precision.apply_precision`'s bf16 autocast the layers
    multiply in bf16 as autocast would (bf16 inputs and weights, bf16 output), and the output layer, which that
    keeps in fp32, in fp32. Empty where packing is unavailable."""
    from spro.models.precision import autocast_dtype

    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    if not packing_available():
        return []
    cast = autocast_dtype(inner)
    if cast not in (None, torch.bfloat16):
        return []
    out = []
    for m in model.modules():
        if type(m) is not torch.nn.Linear or m.weight.device.type != "cpu" or m.weight.dtype != torch.float32:
            continue
        if "forward" in vars(m) and not hasattr(m, "_spro_autocast"):
            continue  # a forward of someone else's on the instance: left alone
        out.append((m, torch.float32 if cast is None or hasattr(m, "_spro_autocast") else cast))
    return out


def _packed_forward(self: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` from the packed weight, in the packed dtype; x [..., in] -> [..., out]."""
    flat = x.reshape(-1, x.shape[-1])
    if flat.dtype != self._spro_packed_dtype or not flat.is_contiguous():
        flat = flat.to(self._spro_packed_dtype).contiguous()
    y = torch.ops.mkldnn._linear_pointwise(flat, self._spro_packed, self._spro_packed_bias, "none", [], "")
    return y.reshape(*x.shape[:-1], y.shape[-1])


@contextlib.contextmanager
def packed_linears(model: Any, rows: int) -> Iterator[int]:
    """Inside, every :func:`packable` layer of ``model`` multiplies by a packed copy of its current weight
    (``rows``: the number of rows each call will multiply, oneDNN's hint). Yields how many layers were packed.
    The weights must not change inside (the copies would be stale); gradients do not flow through them."""
    done = []
    try:
        with torch.no_grad():
            for m, dtype in packable(model):
                saved = vars(m).get("forward")
                done.append((m, saved))  # first: a failure below still undoes this layer
                m._spro_packed = torch.ops.mkldnn._reorder_linear_weight(m.weight.detach().to(dtype), max(1, rows))
                m._spro_packed_bias = None if m.bias is None else m.bias.detach().to(dtype)
                m._spro_packed_dtype = dtype
                m.forward = types.MethodType(_packed_forward, m)
        yield len(done)
    finally:
        for m, saved in done:
            if saved is None:
                vars(m).pop("forward", None)  # back to the class's forward
            else:
                m.forward = saved  # (the fp32 output layer of model.precision=bf16)
            for k in ("_spro_packed", "_spro_packed_bias", "_spro_packed_dtype"):
                vars(m).pop(k, None)
