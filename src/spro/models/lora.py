"""LoRA adapters through ``peft`` (``model.lora.*``; rank 0 = off).

* :func:`add_lora` wraps a causal LM in a ``peft`` ``PeftModel``: the base weights are frozen, only
  the adapters train (the trainer's optimizer takes the parameters that require grad).
* :class:`AdapterDisabled` is the frozen reference pi_ref of a LoRA run: the policy itself with its
  adapters switched off (``PeftModel.disable_adapter()``), i.e. exactly the starting weights, with no
  second copy of the model in memory. SPRO's process reward ``beta * (log pi_old - log pi_ref)``
  then costs one extra forward pass of the same weights and no memory.
* A checkpoint of a LoRA run holds the adapters (``adapter_config.json``,
  ``adapter_model.safetensors``) with the tokenizer; ``adapter_config.json``'s
  ``base_model_name_or_path`` names the base (an absolute folder, a ``.gguf`` file, ``tiny``, or
  a hub id). :func:`load_adapter_folder` loads base + adapters (``spro eval`` and ``--resume`` do);
  :func:`merge_adapters` writes a full model with the adapters merged in (``spro export``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

__all__ = ["ADAPTER_CONFIG", "AdapterDisabled", "add_lora", "is_lora", "is_adapter_folder", "load_adapter_folder",
           "merge_adapters"]

ADAPTER_CONFIG = "adapter_config.json"


def _peft() -> Any:
    try:
        import peft
    except ImportError:
        raise ValueError("model.lora.rank > 0 needs the peft package: pip install 'spro[lora]'") from None
    return peft


def is_lora(model: Any) -> bool:
    """Whether ``model`` is a ``peft`` model (adapters attached)."""
    return hasattr(model, "peft_config") and hasattr(model, "disable_adapter")


def is_adapter_folder(path: str | os.PathLike) -> bool:
    """A folder with ``adapter_config.json`` and no full model (``config.json``)."""
    p = Path(path)
    return (p / ADAPTER_CONFIG).is_file() and not (p / "config.json").is_file()


def add_lora(model: Any, lora: Any, *, base: str) -> Any:
    """``model`` with fresh LoRA adapters of the ``model.lora`` section ``lora`` (rank, alpha, dropout,
    target_modules); ``base`` (how to load the base model again) is recorded in the adapter config.
    With gradient checkpointing on, the input embeddings' outputs require grad (frozen base)."""
    peft = _peft()
    config = peft.LoraConfig(r=lora.rank, lora_alpha=lora.alpha, lora_dropout=lora.dropout,
                             target_modules=lora.target_modules, bias="none", task_type="CAUSAL_LM")
    try:
        wrapped = peft.get_peft_model(model, config)
    except ValueError as e:  # e.g. target modules that the model does not have
        raise ValueError(f"model.lora: {e}") from None
    wrapped.peft_config["default"].base_model_name_or_path = base
    flag = "is_activation_checkpointing" if hasattr(model, "is_activation_checkpointing") else "is_gradient_checkpointing"
    if getattr(model, flag, False):
        wrapped.enable_input_require_grads()
    return wrapped


def base_source(name: str, gguf_file: str | None = None) -> str:
    """How an adapter folder names its base: an absolute folder or ``.gguf`` path for local models,
    ``name`` as it is otherwise (``tiny``, a hub id)."""
    if gguf_file:
        path = Path(gguf_file) if Path(gguf_file).is_absolute() else Path(name) / gguf_file
        return str(path.resolve())
    return str(Path(name).resolve()) if Path(name).exists() else name


class AdapterDisabled:
    """The reference model of a LoRA run: calls go to the policy with its adapters disabled (the frozen
    base weights) and in eval mode (no dropout); nothing is copied."""

    def __init__(self, model: Any) -> None:
        if not is_lora(model):
            raise TypeError("AdapterDisabled needs a peft model")
        self.model = model

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                return self.model(*args, **kwargs)
        finally:
            self.model.train(was_training)

    @property
    def forward(self) -> Any:  # for signature inspection (spro.rollout._cache_kw)
        return self.model.get_base_model().forward

    @property
    def config(self) -> Any:
        return self.model.config

    def parameters(self) -> Any:
        return self.model.parameters()

    def to(self, *args: Any, **kwargs: Any) -> AdapterDisabled:
        """No-op: the weights are the policy's, moved with it."""
        return self


def load_adapter_folder(path: str | os.PathLike, *, load_base: Any, trainable: bool) -> Any:
    """Base model + the adapters of ``path``. ``load_base(name) -> model`` loads the base that
    ``adapter_config.json`` names; ``trainable``: keep the adapters trainable (resuming) or merge
    them into the weights (evaluation, export)."""
    peft = _peft()
    path = Path(path)
    try:
        base_name = json.loads((path / ADAPTER_CONFIG).read_text())["base_model_name_or_path"]
    except (OSError, ValueError, KeyError) as e:
        raise ValueError(f"{path / ADAPTER_CONFIG}: unreadable or without base_model_name_or_path ({e})") from None
    if not base_name:
        raise ValueError(f"{path / ADAPTER_CONFIG}: base_model_name_or_path is empty; cannot find the base model")
    try:
        base = load_base(base_name)
    except ValueError as e:
        raise ValueError(f"{path}: the base model of these LoRA adapters ({base_name}) did not load: {e}") from None
    model = peft.PeftModel.from_pretrained(base, str(path), is_trainable=trainable)
    return model if trainable else model.merge_and_unload()


def merge_adapters(model: Any) -> Any:
    """The plain transformers model with the adapters merged into its weights (a model without
    adapters is returned as it is)."""
    return model.merge_and_unload() if is_lora(model) else model
