"""The trainer's models from its ``model`` config section: the policy (with its precision, gradient
checkpointing and LoRA adapters) and the frozen reference pi_ref."""

from __future__ import annotations

import copy
from typing import Any, Callable

from spro.models.loading import load_model
from spro.models.lora import AdapterDisabled, add_lora, base_source, is_lora
from spro.models.passes import match_grad_flags
from spro.models.precision import apply_precision, precision_of

__all__ = ["load_policy", "load_reference"]


def load_policy(m: Any, source: str, *, device_type: str, resumed: bool = False, logratio: bool = False) -> tuple[Any, Any]:
    """``(policy, tokenizer)`` of the ModelConfig ``m`` loaded from ``source`` (``m.name_or_path`` resolved
    to a folder, or a checkpoint when ``resumed``).

    ``m.precision`` is applied (``auto`` resolved with ``logratio``: whether the run trains on a log-ratio to
    the reference, spro.models.precision.resolve_precision), gradient checkpointing enabled if asked, and with ``m.lora.rank > 0``
    fresh adapters are attached, except on a resumed LoRA checkpoint, whose own adapters keep training.
    A LoRA adapter folder as the starting model (not resumed) has its adapters merged: it is a starting
    policy like any other.
    """
    gguf = None if resumed else m.gguf_file
    model, tok = load_model(source, dtype=m.dtype, tiny_seed=m.tiny_seed, tokenizer=m.tokenizer, gguf_file=gguf,
                            adapters="train" if resumed else "merge")
    apply_precision(model.get_base_model() if is_lora(model) else model, m.precision, device_type, logratio=logratio)
    if m.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    if is_lora(model):
        if m.gradient_checkpointing:
            model.enable_input_require_grads()
    elif m.lora.rank > 0:
        model = add_lora(model, m.lora, base=base_source(source, gguf))
    return model, tok


def load_reference(m: Any, policy: Any, *, device_type: str, resumed: bool, resolve: Callable[[str], str]) -> Any:
    """The frozen reference of the ModelConfig ``m`` for ``policy`` (before any update):

    * LoRA (``m.lora.rank > 0``) without ``m.ref_model``: the policy with its adapters disabled, no copy;
    * no ``m.ref_model``: a frozen copy of the starting policy (loaded again from ``m.name_or_path``
      when resuming, since the policy has trained);
    * ``m.ref_model``: that model (``resolve`` maps ``warmstart:NAME`` to its folder).
    """
    if m.ref_model is None and is_lora(policy):
        return AdapterDisabled(policy)
    if m.ref_model is None and not resumed:
        ref = copy.deepcopy(policy)
    else:
        ref, _ = load_model(resolve(m.ref_model or m.name_or_path), dtype=m.dtype, tiny_seed=m.tiny_seed,
                            gguf_file=m.gguf_file if m.ref_model is None else None)
        apply_precision(ref, precision_of(policy) or m.precision, device_type)  # what `auto` gave the policy
    match_grad_flags(ref, policy)  # only run under no_grad; the flags pick the policy's kernels (see passes.py)
    return ref.eval()
