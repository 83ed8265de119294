"""The Python API: :func:`train` with TRL's ``GRPOTrainer`` arguments where they mean the same.

::

    import spro
    from datasets import Dataset

    def format_reward(completions, **kwargs):          # TRL's reward convention
        return [float("\\\\boxed{" in c[0]["content"]) for c in completions]

    run = spro.train(
        model="HuggingFaceTB/SmolLM2-135M-Instruct",   # a path / hub name, or a PreTrainedModel
        reward_funcs=[format_reward, "math"],          # callables and registered spro rewards
        train_dataset=Dataset.from_list(rows),         # a 'prompt' column (text or chat messages) + columns
        eval_dataset=held_out,                         # optional: evaluated every eval_every steps and at the end
        algorithm={"name": "spro"}, total_steps=100,   # overrides of the config, as sections or dotted keys
        callbacks=[lambda metrics: print(metrics["step"], metrics["reward/mean"])],
    )                                                  # returns the run folder

What maps to what (docs/python-api.md has the whole story):

* ``model``: ``model.name_or_path`` when a string; a ``transformers`` model object is saved (with
  ``processing_class``, or the tokenizer of its ``name_or_path``) into ``<output_dir>/start-model`` and
  trained from there, so that the run can be resumed.
* ``reward_funcs``: one or a list of reward functions (TRL's convention, :mod:`spro.rewards.trl_style`)
  or registered spro reward names; ``reward_weights`` their weights (TRL's ``GRPOConfig.reward_weights``).
  A function is named after its ``__name__`` in the metrics (``reward/<name>/mean``).
* ``train_dataset`` / ``eval_dataset``: ``datasets.Dataset`` objects (or lists of dicts) with a ``prompt``
  column; every other column reaches the reward functions as a keyword. They are used as given
  (``data.source``, ``data.train_size`` and ``data.eval_size`` do not apply). Without ``eval_dataset`` the
  run does not evaluate (``eval_every=-1``).
* ``config``: a ``spro.config.TrainConfig``, a nested dict or a YAML path; ``**overrides`` on top of it:
  top-level keys (``total_steps=10``), sections as dicts (``rollout={"num_generations": 8}``) or dotted keys
  (``**{"algorithm.kl_coef": 0.01}``).
* ``callbacks``: functions called after each step with that step's metrics dict (the keys of
  ``metrics.jsonl``, plus ``eval/*`` on a step that evaluates).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

if TYPE_CHECKING:
    from spro.config import TrainConfig

__all__ = ["train", "build_config"]

START_MODEL = "start-model"


def _nest(key: str, value: Any) -> dict:
    out: Any = value
    for part in reversed(key.split(".")):
        out = {part: out}
    return out


def _merge(base: dict, new: Mapping) -> dict:
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = dict(v) if isinstance(v, Mapping) else v
    return base


def build_config(config: TrainConfig | Mapping | str | Path | None = None, **overrides: Any) -> TrainConfig:
    """A checked ``TrainConfig`` from ``config`` (a ``TrainConfig``, a nested dict, a YAML path or None for the
    defaults) with ``overrides`` on top (top-level keys, sections as dicts, or dotted keys). Unknown keys and
    bad values raise ``spro.config.ConfigError`` naming the key."""
    from spro.config import ConfigError, TrainConfig, config_from_dict, load_config, to_dict

    if config is None:
        data: dict = {}
    elif isinstance(config, TrainConfig):
        data = to_dict(config)
    elif isinstance(config, Mapping):
        data = _merge({}, config)
    elif isinstance(config, (str, Path)):
        data = to_dict(load_config(config))
    else:
        raise ConfigError(f"config: expected a TrainConfig, a dict or a YAML path, got {type(config).__name__}")
    for key, value in overrides.items():
        _merge(data, _nest(key, value))
    return config_from_dict(data)


def _reward_names(reward_funcs: Any, weights: Sequence[float] | None) -> tuple[list[dict], dict[str, Callable]]:
    """``data.rewards`` entries and the ``{name: fn}`` of the callables among ``reward_funcs``."""
    from spro.config import ConfigError
    from spro.rewards.trl_style import RewardSignatureError, check_reward_signature

    funcs = list(reward_funcs) if isinstance(reward_funcs, (list, tuple)) else [reward_funcs]
    if not funcs or any(f is None for f in funcs):
        raise ConfigError("reward_funcs: give at least one reward function (a callable in TRL's convention, or the "
                          "name of a spro reward such as 'math')")
    if weights is not None and len(weights) != len(funcs):
        raise ConfigError(f"reward_weights: {len(weights)} weights for {len(funcs)} reward functions")
    specs, by_name = [], {}
    for i, f in enumerate(funcs):
        if isinstance(f, str):
            name = f
        elif callable(f):
            try:
                check_reward_signature(f)
            except RewardSignatureError as e:
                raise ConfigError(f"reward_funcs[{i}]: {e}") from None
            base = getattr(f, "__name__", None) or type(f).__name__
            name, n = base, 2
            while name in by_name or name in (s["name"] for s in specs):
                name, n = f"{base}_{n}", n + 1
            by_name[name] = f
        else:
            raise ConfigError(f"reward_funcs[{i}]: expected a callable or a reward name, got {type(f).__name__}")
        specs.append({"name": name, "weight": 1.0 if weights is None else float(weights[i])})
    return specs, by_name


def _as_dataset(ds: Any, what: str) -> Any:
    if ds is None or hasattr(ds, "column_names"):
        return ds
    if isinstance(ds, (list, tuple)):
        from datasets import Dataset

        return Dataset.from_list(list(ds))
    from spro.config import ConfigError

    raise ConfigError(f"{what}: expected a datasets.Dataset or a list of dicts, got {type(ds).__name__}")


def _save_start_model(model: Any, processing_class: Any, out: Path, overwrite: bool) -> Path:
    """Save a model object into ``out/start-model`` (after the run folder checks the trainer does first)."""
    from spro.config import ConfigError
    from spro.trainer.rundir import RunLock, check_run_folder, holds_run, move_run_aside

    if not hasattr(model, "save_pretrained"):
        raise ConfigError(f"model: expected a path, a hub name or a transformers model, got {type(model).__name__}")
    tok = processing_class
    if tok is None:
        from transformers import AutoTokenizer

        src = getattr(getattr(model, "config", None), "_name_or_path", None) or getattr(model, "name_or_path", None)
        try:
            tok = AutoTokenizer.from_pretrained(src)
        except Exception as e:  # noqa: BLE001 - any failure means: say what to give
            raise ConfigError(f"model: a model object needs its tokenizer; pass processing_class=TOKENIZER (loading one "
                              f"from {src!r} failed: {type(e).__name__}: {e})") from None
    check_run_folder(out, resume=False, overwrite=overwrite)
    with RunLock(out):
        if overwrite and holds_run(out):
            warnings.warn(f"overwrite: the run that was in {out} is now in {move_run_aside(out)}", stacklevel=3)
    dest = out / START_MODEL
    model.save_pretrained(str(dest))
    tok.save_pretrained(str(dest))
    # the folder's name says nothing of the model's: record what data.chat_template=auto decides for the source
    from spro.data.prompts import PROMPTS_RECORD, resolve_chat_template

    src = getattr(getattr(model, "config", None), "_name_or_path", None) or getattr(model, "name_or_path", None)
    applied = resolve_chat_template("auto", tok, src)[0] if src else False
    (dest / PROMPTS_RECORD).write_text(json.dumps({"source": src, "chat_template_applied": applied}))
    return dest


def train(model: Any = None, reward_funcs: Any = None, *, train_dataset: Any = None, eval_dataset: Any = None,
          config: Any = None, processing_class: Any = None, reward_weights: Sequence[float] | None = None,
          callbacks: Sequence[Callable[[dict], Any]] | None = None, resume: str | Path | None = None,
          overwrite: bool = False, **overrides: Any) -> Path:
    """Train and return the run folder (``output_dir``); the arguments are described in the module docstring.

    ``resume``: a run folder or checkpoint to continue (give the same datasets and reward functions again);
    ``overwrite``: move a run already in ``output_dir`` aside (``<output_dir>.old-N``) and start anew.
    ``processing_class``: the tokenizer of a model object. Other keyword arguments are config overrides.
    """
    from spro.config import ConfigError
    from spro.trainer.loop import Trainer

    if train_dataset is None and resume is None:
        raise ConfigError("train_dataset: give the training prompts as a datasets.Dataset with a 'prompt' column")
    train_ds, eval_ds = _as_dataset(train_dataset, "train_dataset"), _as_dataset(eval_dataset, "eval_dataset")
    for i, cb in enumerate(callbacks or []):
        if not callable(cb):
            raise ConfigError(f"callbacks[{i}]: expected a function taking the step's metrics dict, got "
                              f"{type(cb).__name__} (a transformers TrainerCallback is not supported)")
    specs, by_name = _reward_names(reward_funcs, reward_weights)
    over: dict[str, Any] = {"data.rewards": specs}
    if isinstance(model, (str, Path)):
        over["model.name_or_path"] = str(model)
    if eval_ds is None and "eval_every" not in overrides:
        over["eval_every"] = -1
    cfg = build_config(config, **over, **overrides)
    if eval_ds is None and cfg.eval_every >= 0:
        raise ConfigError(f"eval_every={cfg.eval_every} but no eval_dataset to evaluate on; give eval_dataset= or "
                          "leave eval_every unset")
    if model is not None and not isinstance(model, (str, Path)):
        start = Path(cfg.output_dir) / START_MODEL  # (resuming: saved there by the run being resumed)
        if resume is None:
            start = _save_start_model(model, processing_class, Path(cfg.output_dir), overwrite)
        cfg = build_config(cfg, **{"model.name_or_path": str(start)})
    elif model is None and resume is None:
        raise ConfigError("model: give a model path, a hub name or a transformers model")
    trainer = Trainer(cfg, resume=resume, overwrite=overwrite, reward_funcs=by_name, datasets=(train_ds, eval_ds),
                      callbacks=list(callbacks or []))
    return trainer.train()
