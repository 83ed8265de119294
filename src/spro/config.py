"""Typed configuration for `spro train`: loading, merging and checking.

A run is described by one :class:`TrainConfig`, the tree of dataclasses declared in
:mod:`spro.schema` (every field with its help text, choices and checks). Build one with
:func:`load_config` from a YAML file, a preset shipped in ``spro/presets/`` and ``dotted.key=value``
overrides (later wins):

    cfg = load_config("run.yaml", overrides=["algorithm.name=grpo", "optim.lr=2e-5"])
    cfg = load_config(preset="tiny-arithmetic", overrides=["seed=3"])

Loading and merging are OmegaConf's (through :func:`spro.options.build`): the layers are merged
with ``OmegaConf.merge`` and typed against the dataclasses as structured configs
(``OmegaConf.structured`` / ``OmegaConf.to_object``). OmegaConf was chosen over TRL's
HfArgumentParser (flat ``--flags``, no nested sections, no YAML layering) and tyro (a CLI generator,
not a file/override merger) because it does exactly this job: nested dataclass schemas, YAML files
merged with dotted ``key=value`` overrides, typed conversion with errors that carry the full key,
``${key}`` interpolation; and it is what verl, the field's RL framework, configures itself with.
What stays ours: the declarations (help, choices, checks: every number finite and in its range),
the did-you-mean for unknown keys (also for flat algorithm keys such as ``algorithm.beta`` and TRL's names), the algorithm-owned
sections ``algorithm.<name>.*`` from the registry, and :func:`validate`'s cross-field rules.
"""

from __future__ import annotations

import dataclasses
import difflib
from pathlib import Path
from typing import Any

import yaml

from spro import options
from spro.options import ConfigError, Options, check_fields, option  # noqa: F401 (re-exported)
from spro.schema import (  # noqa: F401 (re-exported: spro.config is the public path)
    DTYPES,
    SCHEDULERS,
    AlgorithmConfig,
    CodeRewardConfig,
    DataConfig,
    LoggingConfig,
    LoRAConfig,
    ModelConfig,
    OptimConfig,
    ReasoningGymConfig,
    RESUMABLE_DIFFERENCES,
    RewardSpec,
    RolloutConfig,
    TrainConfig,
)

PRESET_DIR = Path(__file__).parent / "presets"


# ----------------------------------------------------------------------------------------------
# loading: spro.options.build (OmegaConf) types each layer; the declarations above check the values

# Other names of keys, suggested when given: an algorithm's option written flat (algorithm.beta for algorithm.spro.beta) ...
_OLD_FLAT_KEYS = {
    "beta": ("spro.beta",), "outcome_scale": ("spro.outcome_scale", "grpo.outcome_scale"), "eps": ("spro.eps", "grpo.eps"),
    "msa_scale_std": ("spro.msa_scale_std",), "process_reward": ("spro.process_reward",), "baseline": ("spro.baseline",),
    "process_only": ("spro.process_only",), "prm_lr": ("prime.prm_lr",), "prm_beta": ("prime.prm_beta",),
    "prm_micro_batch": ("prime.prm_micro_batch",), "prm_max_grad_norm": ("prime.prm_max_grad_norm",),
    "prm_update": ("prime.prm_update",), "prime_filter": ("prime.filter",), "prime_filter_low": ("prime.filter_low",),
    "prime_filter_high": ("prime.filter_high",), "prime_outcome_coef": ("prime.outcome_coef",),
    "prime_process_coef": ("prime.process_coef",),
}
# ... and the names of TRL's GRPOConfig (with the transformers TrainingArguments and trl.ModelConfig it uses)
TRL_NAMES = {
    "beta": "algorithm.kl_coef", "num_iterations": "algorithm.ppo_epochs", "num_generations": "rollout.num_generations",
    "learning_rate": "optim.lr", "max_completion_length": "rollout.max_new_tokens", "temperature": "rollout.temperature",
    "top_p": "rollout.top_p", "top_k": "rollout.top_k", "min_p": "rollout.min_p",
    "repetition_penalty": "rollout.repetition_penalty", "epsilon": "algorithm.clip_eps_low",
    "epsilon_high": "algorithm.clip_eps_high", "loss_type": "algorithm.loss_agg",
    "scale_rewards": "algorithm.grpo.outcome_scale", "entropy_coef": "algorithm.entropy_coef",
    "generation_batch_size": "rollout.prompts_per_step", "reward_weights": "data.rewards",
    "log_completions": "logging.log_completions", "shuffle_dataset": "data.shuffle", "max_steps": "total_steps",
    "lr_scheduler_type": "optim.scheduler", "adam_epsilon": "optim.adam_eps", "adam_beta1": "optim.adam_beta1",
    "adam_beta2": "optim.adam_beta2", "weight_decay": "optim.weight_decay", "warmup_steps": "optim.warmup_steps",
    "max_grad_norm": "optim.max_grad_norm", "gradient_accumulation_steps": "algorithm.grad_accum_steps",
    "per_device_train_batch_size": "algorithm.mini_batch_size", "logging_steps": "logging.every",
    "save_steps": "save_every", "eval_steps": "eval_every", "save_total_limit": "keep_last",
    "model_name_or_path": "model.name_or_path", "importance_sampling_level": "algorithm.importance_sampling_level",
    "mask_truncated_completions": "algorithm.mask_truncated_completions",
}
_TRL_NOTES = {
    "beta": "TRL's beta; SPRO's process-reward beta is 'algorithm.spro.beta'",
    "loss_type": "TRL's grpo / dapo / dr_grpo are seq-mean-token-mean / token-mean / seq-mean-token-sum-norm",
    "reward_weights": "each reward's weight: [{name: ..., weight: ...}]",
    "per_device_train_batch_size": "responses per optimizer step and process; a step samples "
                                   "rollout.prompts_per_step * rollout.num_generations responses",
    "generation_batch_size": "TRL's is the responses of a step: rollout.prompts_per_step * rollout.num_generations; "
                             "rollout.generation_batch_size is the responses of one generate() call",
}


def _hint(keys: list[str], note: str = "") -> str:
    return " or ".join(f"'{k}'" for k in keys) + "?" + (f" ({note})" if note else "")


RENAMED = {
    **{f"algorithm.{old}": _hint([f"algorithm.{k}" for k in new], "TRL's beta, the KL coefficient, is "
                                 "'algorithm.kl_coef'" if old == "beta" else "") for old, new in _OLD_FLAT_KEYS.items()},
    **{name: _hint([key], _TRL_NOTES.get(name, "")) for name, key in TRL_NAMES.items()},
}


def _sections() -> dict[str, type]:
    from spro.algorithms import registry

    return {name: registry.get_algorithm(name).Options for name in registry.list_algorithms()}


def all_keys() -> list[str]:
    """Every dotted key of the config (for suggestions), every registered algorithm's section included."""
    return options.all_keys(TrainConfig, sections=_sections)


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    return options.build(cls, data, prefix, keys=all_keys, renamed=RENAMED)


def _algorithm_sections(algo: Any) -> tuple[dict, dict[str, Any]]:
    """Split the ``algorithm`` mapping into its own keys and the sections ``{algorithm name: its Options}``,
    always including the selected algorithm's (with its defaults)."""
    from spro.algorithms import registry

    own_keys = {f.name for f in dataclasses.fields(AlgorithmConfig) if not f.metadata.get("sections")}
    algo = algo if algo is not None else {}
    own = {k: v for k, v in algo.items() if k in own_keys}
    try:
        selected = registry.get_algorithm(own.get("name", AlgorithmConfig.name))
    except ValueError as e:
        raise ConfigError(f"algorithm.name: {e}") from None
    sections = {}
    for sec, values in algo.items():
        if sec in own_keys:
            continue
        try:
            cls = selected if sec == selected.name else registry.get_algorithm(str(sec))
        except ValueError:
            raise options.unknown_key(f"algorithm.{sec}", all_keys(), RENAMED) from None
        if not hasattr(values, "items"):
            raise ConfigError(f"algorithm.{sec}: expected a mapping of {sec}'s options, got {values!r}")
        sections[cls.name] = _build(cls.Options, values, f"algorithm.{sec}")
    sections.setdefault(selected.name, _build(selected.Options, {}, f"algorithm.{selected.name}"))
    return own, sections


class IgnoredKeyWarning(UserWarning):
    """A key of the config is set but the chosen algorithm does not read it (see :func:`ignored_keys`)."""


def ignored_keys(algo: Any) -> list[tuple[str, str]]:
    """``(key, reason)`` for every key set in the ``algorithm`` mapping ``algo`` (as given, before
    defaults) that the selected algorithm does not read: the keys of another algorithm's section
    ``algorithm.<other>.*``. The rule: such a section is kept (so that ``spro compare`` arms and
    presets can share one config) but each key set in it is named in an :class:`IgnoredKeyWarning`;
    the shared keys of ``algorithm.*`` are read by every algorithm (the policy loss)."""
    from spro.algorithms import registry

    algo = algo if algo is not None else {}
    own_keys = {f.name for f in dataclasses.fields(AlgorithmConfig) if not f.metadata.get("sections")}
    selected = registry.get_algorithm(algo.get("name", AlgorithmConfig.name)).name
    out = []
    for sec, values in algo.items():
        if sec in own_keys or not hasattr(values, "items"):
            continue
        name = registry.get_algorithm(str(sec)).name
        if name == selected:
            continue
        for key in flatten(dict(values)):
            why = f"algorithm.name={selected} does not read the section algorithm.{sec}.* (it applies when " \
                  f"algorithm.name={name}); it has no effect on this run"
            if key == "beta" and name == "spro":
                why += " (the KL coefficient of every algorithm is algorithm.kl_coef)"
            out.append((f"algorithm.{sec}.{key}", why))
    return out


def _typed(tree: Any, given: Any = None) -> TrainConfig:
    """A checked TrainConfig from a merged OmegaConf tree of settings; ``given``: the part of it the user
    set (the YAML file and the overrides, not a preset or a resumed run's saved config), whose keys that
    the chosen algorithm ignores are warned about (a preset may set several algorithms' options)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    if not isinstance(tree, DictConfig):
        raise ConfigError(f"the config must be a mapping of keys, got {tree!r}")
    algo = tree.get("algorithm")
    if algo is not None and not isinstance(algo, DictConfig):
        raise ConfigError(f"algorithm: expected a mapping, got {algo!r}")
    own, sections = _algorithm_sections(algo)
    rest = OmegaConf.merge(tree, {})
    rest.algorithm = own
    rewards = OmegaConf.select(rest, "data.rewards")
    if isinstance(rewards, ListConfig):  # data.rewards=[math, format]: names with weight 1
        rest.data.rewards = [{"name": r} if isinstance(r, str) else r for r in rewards]
    cfg = _build(TrainConfig, rest)
    cfg.algorithm.sections = sections
    validate(cfg)
    user_algo = (given if given is not None else tree).get("algorithm")
    if isinstance(user_algo, DictConfig):
        import warnings

        user_algo = {**OmegaConf.to_container(user_algo), "name": cfg.algorithm.name}
        for key, why in ignored_keys(user_algo):
            warnings.warn(f"{key} is set, but {why}", IgnoredKeyWarning, stacklevel=2)
    return cfg


def preset_path(name: str) -> Path:
    """Path of the preset NAME (a file spro/presets/NAME.yaml)."""
    path = PRESET_DIR / f"{name.removesuffix('.yaml')}.yaml"
    if not path.is_file():
        names = list_presets()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ConfigError(f"unknown preset '{name}' (available: {', '.join(names)}){hint}")
    return path


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def config_from_dict(data: dict) -> TrainConfig:
    """A checked :class:`TrainConfig` from a nested dict (as :func:`to_dict` writes it)."""
    return load_config(base=data)


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    preset: str | None = None,
    base: dict | None = None,
) -> TrainConfig:
    """Build a :class:`TrainConfig`: defaults < ``base`` (a dict) < preset < YAML file < ``key=value`` overrides.

    Raises :class:`ConfigError` (a ValueError) for unknown keys (with the closest valid key),
    values of the wrong type (naming the key) and invalid combinations (see :func:`validate`).
    """
    from omegaconf import OmegaConf

    try:
        layers = [options.layer(base)] if base is not None else []
        layers += [options.layer(options.read_yaml(preset_path(preset)))] if preset else []
        given = [options.layer(options.read_yaml(path))] if path is not None else []
        given.append(options.overrides_layer(list(overrides or [])))
        return _typed(OmegaConf.merge(*layers, *given), given=OmegaConf.merge(*given))
    except ConfigError as e:
        if path is not None and str(path) not in str(e):
            raise ConfigError(f"{path}: {e}") from None
        raise


def to_dict(cfg: Any) -> dict:
    """Nested dict of a config (the ``algorithm`` sections as ``algorithm.<name>`` mappings)."""
    d = dataclasses.asdict(cfg)
    if isinstance(cfg, TrainConfig):
        algo = d["algorithm"]
        sections = algo.pop("sections")
        from spro.algorithms import registry

        selected = registry.get_algorithm(cfg.algorithm.name).name
        if selected not in sections:
            sections[selected] = dataclasses.asdict(cfg.algorithm.options)
        algo.update(sections)
    return d


def flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and k not in ("task_kwargs", "column_map"):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def diff_configs(a: dict, b: dict, *, ignore: tuple[str, ...] = RESUMABLE_DIFFERENCES) -> list[str]:
    """Dotted keys whose values differ between two config dicts (minus ``ignore`` prefixes)."""
    fa, fb = flatten(a), flatten(b)
    keys = sorted(set(fa) | set(fb))
    return [
        k
        for k in keys
        if fa.get(k) != fb.get(k) and not any(k == p or (p.endswith(".") and k.startswith(p)) for p in ignore)
    ]


def save_yaml(cfg: TrainConfig, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def dump_yaml(cfg: TrainConfig) -> str:
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def validate(cfg: TrainConfig) -> None:
    """Every key's own checks (types, choices, ranges) and the cross-field checks; raises ConfigError
    naming the keys involved."""
    options.check_tree(cfg)
    r, a, d = cfg.rollout, cfg.algorithm, cfg.data

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    batch = r.prompts_per_step * r.num_generations
    need(r.backend != "decode" or r.repetition_penalty == 1.0,
         f"rollout.repetition_penalty={r.repetition_penalty} is not implemented by rollout.backend=decode; set "
         "rollout.backend=hf (transformers generate) for it")
    if r.generation_batch_size:
        need(
            r.generation_batch_size % r.num_generations == 0,
            f"rollout.generation_batch_size ({r.generation_batch_size}) must be divisible by the "
            f"group size rollout.num_generations ({r.num_generations})",
        )
    if a.mini_batch_size:
        need(
            a.mini_batch_size % r.num_generations == 0,
            f"algorithm.mini_batch_size ({a.mini_batch_size}) must be divisible by the group size "
            f"rollout.num_generations ({r.num_generations})",
        )
        need(
            batch % a.mini_batch_size == 0,
            f"the batch (rollout.prompts_per_step * rollout.num_generations = {batch}) must be "
            f"divisible by algorithm.mini_batch_size ({a.mini_batch_size})",
        )
    mb = a.mini_batch_size or batch
    need(
        mb % a.grad_accum_steps == 0,
        f"the mini-batch ({mb} responses) must be divisible by algorithm.grad_accum_steps ({a.grad_accum_steps})",
    )
    from spro.algorithms import registry

    try:
        algorithm = registry.get_algorithm(a.name)
    except ValueError as exc:
        raise ConfigError(f"algorithm.name: {exc}") from None
    algorithm.check_config(cfg)  # the algorithm's own checks
    if cfg.model.precision == "bf16":
        need(cfg.model.dtype == "float32", f"model.precision=bf16 keeps float32 master weights; model.dtype must be "
             f"float32, got {cfg.model.dtype}")
    if not cfg.model.use_reference:
        from spro.algorithms import registry

        need(
            not registry.get_algorithm(a.name).needs_reference and a.kl_coef == 0,
            f"model.use_reference=false, but algorithm.name={a.name} / algorithm.kl_coef="
            f"{a.kl_coef} needs the reference model's log-probs",
        )
    need(d.task is None or d.source is None,
         f"data.task={d.task} and data.source={d.source}: give one (data.task=null to train on the dataset)")
    if d.source is None:
        for key in ("eval_source", "eval_fraction", "eval_column_map"):
            need(getattr(d, key) is None, f"data.{key} is for a data.source run; a task evaluates on its split "
                                          f"data.eval_split (null = validation)")
    given = [k for k in ("eval_source", "eval_fraction") if getattr(d, k) is not None]
    given += ["eval_split"] if d.eval_split is not None and d.eval_fraction is not None else []
    need(len(given) <= 1, f"data: {' and '.join('data.' + k for k in given)} both choose the held-out set; give one")
    need(d.rewards is None or len(d.rewards) >= 1,
         "data.rewards: give at least one reward function (or null for the one the data implies)")
    if d.accuracy_reward is not None and d.rewards is not None:
        names = [s.name for s in d.rewards]
        need(
            d.accuracy_reward in names,
            f"data.accuracy_reward '{d.accuracy_reward}' is not one of data.rewards ({', '.join(names)})",
        )


def describe_options(extra: list[str] = ()) -> str:
    """One line per config key with its default and help (for `spro train --help`), then the section
    ``algorithm.<name>.*`` of each registered algorithm and of each one named in ``extra`` (``module:attr``)."""
    from spro.algorithms import registry

    for spec in extra:  # a plugin algorithm: importing it registers it
        registry.get_algorithm(spec)
    lines = options.describe(TrainConfig, TrainConfig())
    for name in registry.list_algorithms():
        cls = registry.get_algorithm(name)
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        lines.append(f"\nalgorithm.{name}: {doc}" + ("" if dataclasses.fields(cls.Options) else " (no options)"))
        lines += options.describe(cls.Options, cls.Options(), f"algorithm.{name}.")
    return "\n".join(lines)
