"""Mixed precision: bf16 autocast over fp32 master weights, log-probs in fp32.

``model.precision=bf16`` (:func:`apply_precision`) makes every forward pass of the model run under
``torch.autocast(device_type, dtype=torch.bfloat16)``: matrix multiplications in bf16, the weights
(the "master weights" the optimizer updates) and the optimizer state in fp32. The output layer
(``get_output_embeddings()``) is excluded from autocast and computes the logits in fp32 from the
fp32 weights; ``spro.models.logprobs`` takes the log-softmax of those fp32 logits, so the log-probs
of the PPO ratio, the KL term and SPRO's process reward ``beta * (log pi_old - log pi_ref)`` are
fp32 numbers.

This differs from ``model.dtype=bfloat16``, which casts the weights themselves (no fp32 copy: less
memory, but updates smaller than bf16's resolution are lost).

The forward is replaced on the model object (a bound method, so ``copy.deepcopy`` of the model,
e.g. the frozen reference or PRIME's PRM, keeps it bound to the copy), which also covers
``generate`` and wrappers such as peft's ``PeftModel`` and DDP. Autocast is a GPU feature first;
torch also implements it on CPU (used by the tests), where bf16 is usually slower than fp32.
"""

from __future__ import annotations

import types
from typing import Any

import torch

__all__ = ["PRECISIONS", "apply_precision", "autocast_dtype"]

PRECISIONS = ("fp32", "bf16")


def autocast_dtype(model: Any) -> torch.dtype | None:
    """The autocast dtype :func:`apply_precision` gave ``model`` (None: plain precision)."""
    return getattr(model, "_spro_autocast", (None, None))[1]


def _autocast_forward(self: Any, *args: Any, **kwargs: Any) -> Any:
    device_type, dtype = self._spro_autocast
    with torch.autocast(device_type, dtype=dtype):
        return type(self).forward(self, *args, **kwargs)


def _fp32_head_forward(self: Any, hidden: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
    with torch.autocast(self._spro_autocast[0], enabled=False):
        return type(self).forward(self, hidden.float(), *args, **kwargs)


def apply_precision(model: Any, precision: str, device_type: str) -> Any:
    """Make ``model`` (a transformers causal LM, in place) run its forward passes in ``precision``.

    ``"fp32"``: nothing changes. ``"bf16"``: bf16 autocast on ``device_type`` ("cuda", "cpu") with
    the output layer in fp32; the weights must be fp32 (they are the master weights). Returns ``model``.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"model.precision: {precision!r} is not one of {', '.join(PRECISIONS)}")
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
    model.forward = types.MethodType(_autocast_forward, model)
    head = model.get_output_embeddings()
    if head is not None:
        head._spro_autocast = state
        head.forward = types.MethodType(_fp32_head_forward, head)
    return model
