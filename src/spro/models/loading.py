"""Loading and saving Hugging Face causal LMs with clear errors.

``load_model(name)`` loads a ``model.name_or_path`` of the config: a local folder, ``tiny`` or a
hub id when online (``warmstart:NAME`` is resolved to its folder by ``spro.trainer.warmstart``).

``load_model_and_tokenizer(path)`` checks that the folder holds a causal LM config and a
tokenizer with pad and eos tokens before the caller starts work, and names what is wrong.
``save_model_and_tokenizer(model, tokenizer, path)`` writes atomically (a temporary sibling
folder renamed into place), so a crash never leaves a half-written checkpoint under ``path``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch


class ModelLoadError(ValueError):
    """The folder is not a loadable causal LM with a usable tokenizer."""


def load_tokenizer(path: str | os.PathLike, *, padding_side: str | None = None) -> Any:
    """``AutoTokenizer.from_pretrained(path)``, checked for pad and eos tokens."""
    from transformers import AutoTokenizer

    path = Path(path)
    try:
        tok = AutoTokenizer.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001 - re-raised with the folder named
        raise ModelLoadError(f"{path}: could not load a tokenizer ({type(exc).__name__}: {exc})") from exc
    if tok.eos_token_id is None:
        raise ModelLoadError(f"{path}: the tokenizer has no eos_token; set one (tokenizer.eos_token = ...) and save again")
    if tok.pad_token_id is None:
        raise ModelLoadError(
            f"{path}: the tokenizer has no pad_token; set one (e.g. tokenizer.pad_token = tokenizer.eos_token) "
            "and save again"
        )
    if padding_side is not None:
        tok.padding_side = padding_side
    return tok


def load_model_and_tokenizer(
    path: str | os.PathLike, *, dtype: Any = None, device: Any = None, padding_side: str | None = None
) -> tuple[Any, Any]:
    """Load ``(model, tokenizer)`` from an HF folder, with ModelLoadError (a ValueError) naming the problem.

    Checks: the folder exists and has a ``config.json`` whose architecture loads with
    ``AutoModelForCausalLM``; the tokenizer loads and has eos and pad tokens. The model's
    generation config gets the tokenizer's pad/eos ids where it lacks them.
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    if not path.is_dir():
        raise ModelLoadError(f"{path}: model folder does not exist")
    if not (path / "config.json").is_file():
        raise ModelLoadError(f"{path}: no config.json; not a Hugging Face model folder")
    try:
        config = AutoConfig.from_pretrained(str(path))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path}: unreadable config.json ({type(exc).__name__}: {exc})") from exc
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    if config.model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES:
        raise ModelLoadError(
            f"{path}: model_type {config.model_type!r} is not a causal LM (AutoModelForCausalLM cannot load it)"
        )
    tok = load_tokenizer(path, padding_side=padding_side)
    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = dtype
    try:
        model = AutoModelForCausalLM.from_pretrained(str(path), **kwargs)
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{path}: could not load the causal LM weights ({type(exc).__name__}: {exc})") from exc
    gc = model.generation_config
    if gc.pad_token_id is None:
        gc.pad_token_id = tok.pad_token_id
    if gc.eos_token_id is None:
        gc.eos_token_id = tok.eos_token_id
    if device is not None:
        model.to(device)
    return model, tok


def save_model_and_tokenizer(
    model: Any, tokenizer: Any, path: str | os.PathLike, *, extra_files: dict[str, str] | None = None
) -> Path:
    """Save both to ``path`` atomically: write into a temporary sibling folder, then rename.

    ``extra_files`` maps file names to text written alongside. An existing model folder at ``path`` is
    replaced (moved aside, then deleted after the rename); a folder holding a run, a checkpoint or other
    files is refused (``spro.trainer.rundir.check_output_folder``).
    """
    from spro.trainer.rundir import check_output_folder

    path = Path(path)
    check_output_folder(path, flag="output folder")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        model.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / "x")
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def load_model(name: str, *, dtype: str = "float32", tiny_seed: int = 0, tokenizer: str | None = None,
               gguf_file: str | None = None, adapters: str = "merge") -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a ModelConfig.name_or_path (see its help).

    ``name`` may also be a ``.gguf`` file or a folder with ``gguf_file`` in it (GGUF checkpoints,
    dequantised by transformers; needs the ``gguf`` package), or a folder of LoRA adapters (a
    checkpoint of a ``model.lora.rank > 0`` run): its base model is loaded with the adapters merged
    in (``adapters="merge"``) or kept trainable (``adapters="train"``, for resuming).
    """
    torch_dtype = _DTYPES[dtype]
    if name == "tiny":
        from spro.models.tiny import build_char_tokenizer, build_tiny_model

        tok = build_char_tokenizer()
        model = build_tiny_model(tok, seed=tiny_seed)
        if torch_dtype not in ("auto", torch.float32):
            model = model.to(torch_dtype)
    else:
        if name.startswith("warmstart:"):
            raise ValueError(f"model.name_or_path={name!r} names a cached warm start: pass the folder "
                             f"spro.trainer.warmstart.resolve_model({name!r}) returns")
        path = Path(name)
        if name.endswith(".gguf") and gguf_file is None:
            path, gguf_file = path.parent, path.name
        from spro.models.lora import is_adapter_folder, load_adapter_folder

        if gguf_file is not None:
            model, tok = _load_gguf(path, gguf_file, torch_dtype)
        elif path.is_dir() and is_adapter_folder(path):
            seed = _run_config_tiny_seed(path, tiny_seed)
            model = load_adapter_folder(path, load_base=lambda base: load_model(base, dtype=dtype, tiny_seed=seed)[0],
                                        trainable=adapters == "train")
            tok = load_tokenizer(path)
        elif path.exists():
            model, tok = load_model_and_tokenizer(path, dtype=torch_dtype)
        elif path.is_absolute() or name.startswith((".", "~")):  # a path, not a hub id
            raise ModelLoadError(f"{path}: model folder does not exist")
        else:  # a hub id (only when online)
            from transformers import AutoModelForCausalLM, AutoTokenizer

            try:
                tok = AutoTokenizer.from_pretrained(name)
                model = AutoModelForCausalLM.from_pretrained(name, dtype=torch_dtype)
            except Exception as e:  # noqa: BLE001
                raise ValueError(f"model.name_or_path: '{name}' is neither a local folder nor a loadable hub id ({e})") from e
            if tok.pad_token_id is None:
                tok.pad_token = tok.eos_token
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    return model, tok


def _load_gguf(folder: Path, gguf_file: str, torch_dtype: Any) -> tuple[Any, Any]:
    """A GGUF checkpoint through transformers (``from_pretrained(folder, gguf_file=...)``), dequantised
    to ``torch_dtype`` weights; the tokenizer comes from the same file."""
    import importlib.util

    from transformers import AutoModelForCausalLM, AutoTokenizer

    file = Path(gguf_file) if Path(gguf_file).is_absolute() else folder / gguf_file
    if not file.is_file():
        raise ModelLoadError(f"{file}: GGUF file not found (model.gguf_file={gguf_file!r} in {folder})")
    if importlib.util.find_spec("gguf") is None:
        raise ModelLoadError(f"{file}: loading a GGUF file needs the gguf package: pip install 'spro[gguf]'")
    from transformers import GgufConfig

    try:
        tok = AutoTokenizer.from_pretrained(str(file.parent), gguf_file=file.name)
        model = AutoModelForCausalLM.from_pretrained(  # dense weights: the policy trains and saves like any model
            str(file.parent), gguf_file=file.name, dtype=torch.float32 if torch_dtype == "auto" else torch_dtype,
            quantization_config=GgufConfig(dequantize=True))
    except Exception as exc:  # noqa: BLE001
        raise ModelLoadError(f"{file}: transformers could not load this GGUF file ({type(exc).__name__}: {exc})") from exc
    if any(type(m).__module__.startswith("transformers.integrations") for m in model.modules()):
        raise ModelLoadError(f"{file}: transformers kept GGUF-packed layers; spro trains dense weights only")
    model.hf_quantizer = None  # the weights are plain tensors now: saving and training need no quantizer
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if tok.eos_token_id is None:
        raise ModelLoadError(f"{file}: the GGUF tokenizer has no eos token")
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    gc = model.generation_config
    gc.pad_token_id = gc.pad_token_id if gc.pad_token_id is not None else tok.pad_token_id
    gc.eos_token_id = gc.eos_token_id if gc.eos_token_id is not None else tok.eos_token_id
    return model, tok


def _run_config_tiny_seed(folder: Path, default: int) -> int:
    """``model.tiny_seed`` of the run config saved next to LoRA adapters (a checkpoint), else ``default``."""
    import yaml

    cfg = folder / "run_config.yaml"
    if cfg.is_file():
        return int(((yaml.safe_load(cfg.read_text()) or {}).get("model") or {}).get("tiny_seed", default))
    return default
