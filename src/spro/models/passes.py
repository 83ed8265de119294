"""How the trainer runs its models outside the update: without dropout, and bit-comparably.

* Sampling and every no-grad pass (pi_old, pi_ref, evaluation) run in eval mode
  (:func:`eval_mode`), so that log pi_old is the policy that sampled, not a dropout-perturbed copy
  of it: at step 1 policy and reference are the same model and SPRO's process reward
  ``beta * (log pi_old - log pi_ref)`` must be exactly 0.
* The update's forward pass runs in train mode; it doubles as the pi_old pass (the trainer's
  ``fused`` path) only when that pass is deterministic, i.e. the model has no active dropout
  (:func:`has_dropout`).
* The frozen reference keeps the ``requires_grad`` flags of the policy (:func:`match_grad_flags`)
  and is only ever run under ``torch.no_grad``. The flags are not only about gradients: PyTorch
  picks the matmul kernel by them (``matmul`` does not fold a 3-D input into one 2-D product when
  the weight requires grad), so a reference with frozen flags rounds the last layer of the shared
  prompt pass differently, and log pi_old - log pi_ref at step 1 came out ~1e-7 instead of 0.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch

__all__ = ["eval_mode", "has_dropout", "match_grad_flags"]


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[Any]:
    """``model`` in eval mode (dropout off) inside the block, its previous mode restored after."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)


def has_dropout(model: Any) -> bool:
    """Whether a train-mode forward pass of ``model`` is random: a torch dropout module with ``p > 0``, or
    a positive dropout probability in its config (attention dropout is applied inside the attention
    function, with no module: ``attention_dropout``, ``attn_pdrop``, ``layerdrop``, ...)."""
    if any(isinstance(m, torch.nn.modules.dropout._DropoutNd) and m.p > 0 for m in model.modules()):
        return True
    config = getattr(model, "config", None)
    values = config.to_dict() if hasattr(config, "to_dict") else {}
    return any("drop" in str(k) and isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0
               for k, v in values.items())


def match_grad_flags(ref: torch.nn.Module, policy: torch.nn.Module) -> None:
    """Give ``ref``'s parameters the ``requires_grad`` flags of the policy's parameters of the same name
    (False for the others). ``ref`` is never given to an optimizer nor run with gradients."""
    flags = {name: p.requires_grad for name, p in policy.named_parameters()}
    for name, p in ref.named_parameters():
        p.requires_grad_(flags.get(name, False))
