"""Typed configuration for `spro train`.

A run is described by one :class:`TrainConfig`, a tree of dataclasses whose every field carries
its help text (``field(metadata={"help": ...})``), in the manner of TRL's ``GRPOConfig``. Build one
with :func:`load_config` from a YAML file, a preset shipped in ``spro/presets/`` and
``dotted.key=value`` overrides:

    cfg = load_config("run.yaml", overrides=["algorithm.name=grpo", "optim.lr=2e-5"])
    cfg = load_config(preset="tiny-arithmetic", overrides=["seed=3"])

Unknown keys are rejected with the closest valid key suggested; values are converted to the
field's type (YAML syntax: ``true``, ``1e-5``, ``null``, ``[a, b]``, ``{k: v}``) and a value that
does not fit names the key. :func:`validate` checks the cross-field rules (batch divisible by the
group size, and so on).

References: SPRO = Fei et al., "Self-Guided Process Reward Optimization with Masked Step
Advantage for Process Reinforcement Learning", arXiv:2507.01551 (2025). GRPO = Shao et al.,
arXiv:2402.03300. Dr. GRPO = Liu et al., arXiv:2503.20783. RLOO = Ahmadian et al.,
arXiv:2402.14740. PRIME = Cui et al., arXiv:2502.01456. DAPO (clip-higher) = Yu et al.,
arXiv:2503.14476.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import yaml

PRESET_DIR = Path(__file__).parent / "presets"

ALGORITHMS = ("spro", "grpo", "dr_grpo", "rloo", "prime")
LOSS_AGGS = ("seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3")
DTYPES = ("float32", "bfloat16", "float16", "auto")


class ConfigError(ValueError):
    """A configuration file, preset or override that cannot be used."""


def _f(default: Any = dataclasses.MISSING, *, help: str, factory: Any = None, **meta: Any) -> Any:
    """A dataclass field with help text (and optional choices) in its metadata."""
    metadata = {"help": help, **meta}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class ModelConfig:
    name_or_path: str = _f(
        "tiny",
        help="The policy: a local folder with an AutoModelForCausalLM and its tokenizer, a hub id "
        "(when online), 'tiny' (a randomly initialised ~1M-parameter Llama with the character "
        "tokenizer of spro.models.tiny) or 'warmstart:weak' / 'warmstart:strong' (spro.models.warmstart's SFT "
        "models for the built-in arithmetic task, built once and cached).",
    )
    tokenizer: str | None = _f(None, help="Tokenizer folder or id; null = the model's own.")
    ref_model: str | None = _f(
        None,
        help="The frozen reference policy pi_ref (SPRO's process reward is beta * (log pi_old - "
        "log pi_ref), arXiv:2507.01551; also the KL anchor). null = a frozen copy of the starting "
        "policy, which is what SPRO, GRPO and PRIME use.",
    )
    use_reference: bool = _f(
        True,
        help="Run the frozen reference model. Required by spro and prime and by kl_coef > 0; for "
        "grpo / dr_grpo / rloo with kl_coef = 0 set false to skip its forward pass (the 'kl' and "
        "process/* metrics are then logged as null).",
    )
    dtype: str = _f("float32", help="Weights dtype.", choices=DTYPES)
    gradient_checkpointing: bool = _f(
        False, help="Recompute activations in the backward pass to save memory (slower)."
    )
    tiny_seed: int = _f(0, help="Initialisation seed when name_or_path is 'tiny'.")
    share_prompt_prefix: bool = _f(
        True,
        help="Run each group's prompt once and reuse its KV cache for the G responses, in "
        "generation (pre-fill) and in the log-prob passes (same values up to float rounding, "
        "less compute). Set false for models whose forward does not support a batch-repeated "
        "KV cache. The log-prob passes do not share with gradient checkpointing.",
    )


@dataclass
class RewardSpec:
    name: str = _f(
        help="A registered reward ('arithmetic', 'math', 'code', 'format', ...; see spro.rewards) "
        "or an import path 'package.module:function'. The function follows TRL's convention "
        "fn(prompts, completions, **columns) -> list[float | None]."
    )
    weight: float = _f(1.0, help="Weight of this reward in the weighted sum.")


def _default_rewards() -> list[RewardSpec]:
    return [RewardSpec(name="arithmetic", weight=1.0)]


@dataclass
class DataConfig:
    task: str | None = _f(
        "arithmetic",
        help="Built-in task (spro.data.tasks.get_task). Set null and give 'source' to train on a "
        "dataset instead.",
    )
    task_kwargs: dict[str, Any] = _f(
        help="Knobs passed to get_task(task, **task_kwargs) (e.g. number of operands).",
        factory=dict,
    )
    source: str | None = _f(
        None,
        help="Dataset to train on when task is null: a local file (jsonl/json/csv/parquet), a "
        "folder or a hub name; loaded by spro.data.load_prompt_dataset.",
    )
    schema: str = _f("auto", help="Dataset schema for load_prompt_dataset ('auto' detects it).")
    column_map: dict[str, str] | None = _f(
        None, help="Rename dataset columns to 'prompt' / 'answer' ({source_column: target})."
    )
    prompt_template: str | None = _f(
        None, help="Format string applied to each prompt, e.g. '{prompt}\\nAnswer:'."
    )
    split: str = _f("train", help="Split used for training.")
    eval_source: str | None = _f(
        None, help="Dataset for evaluation when task is null; null = 'source'."
    )
    eval_split: str = _f(
        "validation",
        help="Held-out split for periodic evaluation (for a dataset source without it, the "
        "split is tried and an error names it).",
    )
    eval_size: int = _f(200, help="Number of held-out prompts per evaluation (0 = all).")
    train_size: int | None = _f(
        None, help="Number of training prompts to draw from the split (null = all)."
    )
    rewards: list[RewardSpec] = _f(
        help="Reward functions with weights; the reward of a response is the weighted sum of "
        "the values that are not None (None = 'not applicable'); a response no function could "
        "score gets 0 (counted in the reward/none_frac metric). A function that raises is "
        "retried response by response; responses it still fails on count as None (reward/errors).",
        factory=_default_rewards,
    )
    accuracy_reward: str | None = _f(
        None,
        help="Name of the reward whose value decides 'correct' for the accuracy metrics "
        "(null = the first reward).",
    )
    correct_threshold: float = _f(
        1.0, help="A response counts as correct when its accuracy reward is >= this value."
    )
    long_prompts: str = _f(
        "error",
        help="What to do with prompts that leave no room for max_new_tokens in the model's "
        "context: 'error' (stop naming the row) or 'drop' (skip them, with a warning).",
        choices=("error", "drop"),
    )
    shuffle: bool = _f(True, help="Shuffle the training prompts each epoch (seeded).")


@dataclass
class RolloutConfig:
    backend: str = _f(
        "hf",
        help="Generation backend: 'hf' (transformers generate). A vLLM backend can implement "
        "spro.rollout.RolloutBackend.",
        choices=("hf",),
    )
    num_generations: int = _f(
        8, help="G: responses sampled per prompt (the group of GRPO / SPRO's masked step advantage)."
    )
    prompts_per_step: int = _f(
        8, help="Prompts per training step; the batch is prompts_per_step * num_generations responses."
    )
    temperature: float = _f(1.0, help="Sampling temperature (log-probs use the same temperature).")
    top_p: float = _f(1.0, help="Nucleus sampling threshold (1.0 = off).")
    top_k: int = _f(0, help="Top-k sampling (0 = off).")
    max_new_tokens: int = _f(
        32, help="Maximum response length; responses cut here are flagged truncated."
    )
    generation_batch_size: int = _f(
        0, help="Responses generated per generate() call (0 = the whole local batch at once)."
    )
    eval_batch_size: int = _f(64, help="Prompts per greedy generate() call during evaluation.")


@dataclass
class AlgorithmConfig:
    name: str = _f(
        "spro",
        help="Advantage estimator from spro.algorithms.core' registry: spro (arXiv:2507.01551), grpo "
        "(arXiv:2402.03300), dr_grpo (arXiv:2503.20783), rloo (arXiv:2402.14740), prime "
        "(arXiv:2502.01456; the trainer trains an implicit PRM, a copy of the starting policy, "
        "with the algorithm.prm_* / prime_* settings).",
        choices=ALGORITHMS,
    )
    beta: float = _f(
        0.05,
        help="SPRO's process-reward weight: p[t] = beta * (log pi_old - log pi_ref) "
        "(arXiv:2507.01551, eq. for the self-guided process reward; the paper's value is not "
        "public, 0.05 follows PRIME's implicit PRM). PRIME uses algorithm.prm_beta instead.",
    )
    outcome_scale: str = _f(
        "group",
        help="Outcome advantage: 'group' = (r - mean) / (std + eps) within the group (GRPO), "
        "'none' = r - mean (Dr. GRPO). dr_grpo always uses 'none'.",
        choices=("group", "none"),
    )
    msa_scale_std: bool = _f(
        False,
        help="SPRO ablation: divide the masked step advantage by the per-step std of the "
        "cumulative process rewards (not in the paper's default reading).",
    )
    process_reward: str = _f(
        "cumulative",
        help="SPRO ablation: 'cumulative' = cumulative process reward R[t] = sum_{j<=t} p[j] "
        "(the paper), 'per_token' = p[t] alone.",
        choices=("cumulative", "per_token"),
    )
    baseline: str = _f(
        "masked_step",
        help="SPRO ablation: 'masked_step' = mean over the group's responses that still have "
        "step t (MSA, the paper), 'pooled' = one mean over all valid tokens of the group, "
        "'pooled_loo' = PRIME-style leave-one-out mean of the other responses' mean value.",
        choices=("masked_step", "pooled", "pooled_loo"),
    )
    process_only: bool = _f(
        False, help="SPRO ablation: drop the outcome advantage and train on MSA alone."
    )
    eps: float = _f(1e-6, help="Added to standard deviations before dividing.")
    clip_eps_low: float = _f(0.2, help="PPO clip range below: ratio >= 1 - clip_eps_low.")
    clip_eps_high: float | None = _f(
        None,
        help="PPO clip range above (null = clip_eps_low; 0.28 = DAPO's clip-higher, "
        "arXiv:2503.14476).",
    )
    loss_agg: str = _f(
        "seq-mean-token-mean",
        help="Loss aggregation: 'seq-mean-token-mean' (GRPO/SPRO: mean over each response's "
        "tokens, then over responses), 'token-mean' (DAPO), 'seq-mean-token-sum-norm' (Dr. GRPO: "
        "token sum / max_new_tokens). dr_grpo uses the last.",
        choices=LOSS_AGGS,
    )
    kl_coef: float = _f(
        0.0, help="Weight of the KL penalty to the reference in the loss (0 in the SPRO paper)."
    )
    kl_estimator: str = _f(
        "k3", help="KL estimator (Schulman's k1 / k2 / k3).", choices=KL_ESTIMATORS
    )
    entropy_coef: float = _f(0.0, help="Weight of the entropy bonus (0 = none).")
    ppo_epochs: int = _f(1, help="Passes over each batch of rollouts (PPO epochs).")
    mini_batch_size: int = _f(
        0,
        help="Responses per optimizer step (per process); 0 = the whole local batch (one "
        "optimizer step per epoch). Must divide the local batch.",
    )
    grad_accum_steps: int = _f(
        1,
        help="Micro-batches per mini-batch: each mini-batch is split into this many forward/"
        "backward passes whose gradients are summed before the optimizer step.",
    )
    # PRIME (algorithm.name=prime): the implicit PRM the trainer builds and trains online
    prm_lr: float | None = _f(
        None,
        help="PRIME: AdamW learning rate of the implicit PRM (a copy of the starting policy); "
        "null = 2 x optim.lr, the ratio PRIME used (PRM 1e-6, 7B policy 5e-7; arXiv:2502.01456, "
        "verl recipe/prime), e.g. 2e-5 with the default optim.lr and 4e-5 with the "
        "tiny-arithmetic preset's 2e-5, the rates at which the tiny model trains stably.",
    )
    prm_beta: float = _f(
        0.05,
        help="PRIME: the implicit PRM's beta, in its loss BCE(sigmoid(beta * sum_t (log pi_phi - "
        "log pi_ref)), label) and in its process reward beta * (log pi_phi - log pi_ref) "
        "(arXiv:2502.01456: 0.05).",
    )
    prm_micro_batch: int = _f(
        0,
        help="PRIME: responses per PRM forward/backward pass (gradient accumulation; one PRM "
        "optimizer step per training step); 0 = the whole batch at once.",
    )
    prm_max_grad_norm: float = _f(
        1.0, help="PRIME: clip the PRM's gradient norm to this (0 = no clipping; verl's recipe default 1.0)."
    )
    prm_update: str = _f(
        "before",
        help="PRIME: 'before' = update the PRM on the batch, then compute the process rewards with "
        "the updated PRM (PRIME's default 'double forward'); 'after' = process rewards from the "
        "PRM before its update ('single forward').",
        choices=("before", "after"),
    )
    prime_filter: bool = _f(
        True,
        help="PRIME: drop the prompts whose group accuracy (fraction of correct responses) is "
        "outside [prime_filter_low, prime_filter_high] before the PRM and policy updates; a "
        "step where every prompt is dropped makes no update (prime/skipped = 1).",
    )
    prime_filter_low: float = _f(0.2, help="PRIME: lower bound of the accuracy filter (inclusive).")
    prime_filter_high: float = _f(0.8, help="PRIME: upper bound of the accuracy filter (inclusive).")
    prime_outcome_coef: float = _f(
        1.0, help="PRIME advantage: weight of the outcome (leave-one-out) source (PRIME: 5, equal to the process weight)."
    )
    prime_process_coef: float = _f(
        1.0, help="PRIME advantage: weight of the implicit process-reward source (PRIME: 5; only the ratio matters after whitening)."
    )


@dataclass
class OptimConfig:
    lr: float = _f(1e-5, help="AdamW peak learning rate (1e-5 to 3e-5 is stable for the tiny model).")
    weight_decay: float = _f(0.0, help="AdamW weight decay.")
    adam_beta1: float = _f(0.9, help="AdamW beta1.")
    adam_beta2: float = _f(0.99, help="AdamW beta2.")
    adam_eps: float = _f(1e-8, help="AdamW epsilon.")
    scheduler: str = _f(
        "constant_with_warmup",
        help="transformers.get_scheduler name: constant, constant_with_warmup, linear, cosine, ...",
    )
    warmup_steps: int = _f(0, help="Optimizer steps of linear LR warmup.")
    max_grad_norm: float = _f(1.0, help="Clip the global gradient norm to this (0 = no clipping).")


@dataclass
class LoggingConfig:
    tensorboard: bool = _f(True, help="Write TensorBoard events under <output_dir>/tensorboard.")
    wandb: bool = _f(False, help="Log to Weights & Biases (needs `pip install wandb`).")
    wandb_project: str = _f("spro", help="W&B project name.")
    wandb_run_name: str | None = _f(None, help="W&B run name (null = the output folder name).")
    progress_bar: bool = _f(True, help="Show a progress bar with live metrics.")
    log_completions: int = _f(
        0, help="Every step, write this many sample completions to completions.jsonl (0 = none)."
    )


@dataclass
class TrainConfig:
    seed: int = _f(0, help="Seed for data order, sampling and initialisation.")
    output_dir: str = _f("runs/spro", help="Run folder: metrics.jsonl, eval.jsonl, checkpoints/.")
    total_steps: int = _f(100, help="Training steps (one rollout batch each).")
    eval_every: int = _f(0, help="Evaluate every N steps, and at the end (0 = only at the end; -1 = never).")
    eval_at_start: bool = _f(False, help="Also evaluate before the first step (step 0).")
    save_every: int = _f(0, help="Checkpoint every N steps (0 = only at the end).")
    keep_last: int = _f(2, help="Keep the last K checkpoints (older ones are deleted).")
    device: str = _f(
        "auto", help="'auto' (what accelerate picks), 'cpu' or 'cuda'.", choices=("auto", "cpu", "cuda")
    )
    model: ModelConfig = _f(help="Policy and reference model.", factory=ModelConfig)
    data: DataConfig = _f(help="Prompts, rewards, evaluation split.", factory=DataConfig)
    rollout: RolloutConfig = _f(help="Sampling of the response groups.", factory=RolloutConfig)
    algorithm: AlgorithmConfig = _f(help="Advantage estimator and loss.", factory=AlgorithmConfig)
    optim: OptimConfig = _f(help="Optimizer and schedule.", factory=OptimConfig)
    logging: LoggingConfig = _f(help="Where metrics go.", factory=LoggingConfig)


# Keys that may differ between a run and its resumption (they do not change what is computed).
RESUMABLE_DIFFERENCES = (
    "output_dir",
    "total_steps",
    "eval_every",
    "eval_at_start",
    "save_every",
    "keep_last",
    "logging.",
)


# ----------------------------------------------------------------------------------------------
# conversion


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _type_name(tp: Any) -> str:
    if tp is type(None):
        return "null"
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML value to type ``tp`` or raise ConfigError naming ``key``."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(value, arg, key)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if _is_dataclass_type(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return _build(tp, value, key)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_tp, *_) = typing.get_args(tp) or (Any,)
        return [_convert(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        k_tp, v_tp = typing.get_args(tp) or (Any, Any)
        return {_convert(k, k_tp, key): _convert(v, v_tp, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-5" as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    raise ConfigError(f"{key}: unsupported type {_type_name(tp)}")


def _fields(cls: type) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def all_keys(cls: type = None, prefix: str = "") -> list[str]:
    """Every dotted key of the config tree (for suggestions and --help)."""
    cls = cls or TrainConfig
    keys = []
    hints = _hints(cls)
    for name in _fields(cls):
        tp = hints[name]
        if _is_dataclass_type(tp):
            keys.extend(all_keys(tp, f"{prefix}{name}."))
        else:
            keys.append(f"{prefix}{name}")
    return keys


def _unknown_key(key: str) -> ConfigError:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.5)
    if not close:  # try matching the last component alone ("lr" -> "optim.lr")
        last = key.rsplit(".", 1)[-1]
        close = [k for k in all_keys() if k.rsplit(".", 1)[-1] == last][:1]
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'{hint}")


def _build(cls: type, data: dict, prefix: str = "") -> Any:
    hints = _hints(cls)
    fields = _fields(cls)
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            if cls is RewardSpec:
                raise ConfigError(f"{key}: unknown reward field (expected 'name' and 'weight')")
            raise _unknown_key(key)
        kwargs[k] = _convert(v, hints[k], key)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{prefix or 'config'}: {e}") from None
    _check_choices(obj, prefix)
    return obj


def _check_choices(obj: Any, prefix: str) -> None:
    for f in dataclasses.fields(obj):
        choices = f.metadata.get("choices")
        value = getattr(obj, f.name)
        if choices and value not in choices:
            key = f"{prefix}.{f.name}" if prefix else f.name
            close = difflib.get_close_matches(str(value), choices, n=1, cutoff=0.4)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"{key}: '{value}' is not one of {', '.join(choices)}{hint}"
            )


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    node = tree
    cls: Any = TrainConfig
    for i, part in enumerate(parts[:-1]):
        hints = _hints(cls) if _is_dataclass_type(cls) else {}
        if part not in hints or not _is_dataclass_type(hints[part]):
            if part in hints:  # e.g. data.task_kwargs.n -> set inside the dict field
                sub = node.setdefault(part, {})
                if not isinstance(sub, dict):
                    sub = node[part] = {}
                for p in parts[i + 1 : -1]:
                    sub = sub.setdefault(p, {})
                sub[parts[-1]] = value
                return
            raise _unknown_key(key)
        cls = hints[part]
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{'.'.join(parts[: i + 1])}: expected a mapping")
    hints = _hints(cls)
    if parts[-1] not in hints:
        raise _unknown_key(key)
    node[parts[-1]] = value


def _expand_dotted(data: dict) -> dict:
    """Turn top-level 'a.b: v' entries of a YAML file into nested mappings."""
    out: dict = {}
    for k, v in data.items():
        if isinstance(k, str) and "." in k:
            _set_dotted(out, k, v)
        else:
            out[k] = _merge(out[k], v) if isinstance(out.get(k), dict) and isinstance(v, dict) else v
    return out


def _merge(base: dict, new: dict) -> dict:
    out = dict(base)
    for k, v in new.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict) and k not in ("task_kwargs", "column_map"):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_yaml(path: Path) -> dict:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return data


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


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override '{text}' must look like key=value (e.g. optim.lr=2e-5)")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def config_from_dict(data: dict) -> TrainConfig:
    cfg = _build(TrainConfig, data)
    validate(cfg)
    return cfg


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    *,
    preset: str | None = None,
) -> TrainConfig:
    """Build a :class:`TrainConfig`: defaults < preset < YAML file < ``key=value`` overrides.

    Raises :class:`ConfigError` (a ValueError) for unknown keys (with the closest valid key),
    values of the wrong type (naming the key) and invalid combinations (see :func:`validate`).
    """
    data: dict = {}
    try:
        if preset:
            data = _merge(data, _expand_dotted(_read_yaml(preset_path(preset))))
        if path is not None:
            data = _merge(data, _expand_dotted(_read_yaml(Path(path))))
    except ConfigError as e:
        if path is not None and str(path) not in str(e):
            raise ConfigError(f"{path}: {e}") from None
        raise
    for text in overrides or []:
        key, value = parse_override(text)
        _set_dotted(data, key, value)
    try:
        return config_from_dict(data)
    except ConfigError as e:
        if path is not None and str(path) not in str(e):
            raise ConfigError(f"{path}: {e}") from None
        raise


def to_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg)


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
    """Cross-field checks; raises ConfigError naming the keys involved."""
    r, a, d = cfg.rollout, cfg.algorithm, cfg.data

    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise ConfigError(msg)

    need(r.num_generations >= 2, f"rollout.num_generations must be >= 2 (group baselines need a group), got {r.num_generations}")
    need(r.prompts_per_step >= 1, f"rollout.prompts_per_step must be >= 1, got {r.prompts_per_step}")
    need(r.max_new_tokens >= 1, f"rollout.max_new_tokens must be >= 1, got {r.max_new_tokens}")
    need(r.temperature > 0, f"rollout.temperature must be > 0, got {r.temperature}")
    need(0 < r.top_p <= 1, f"rollout.top_p must be in (0, 1], got {r.top_p}")
    batch = r.prompts_per_step * r.num_generations
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
    need(a.grad_accum_steps >= 1, f"algorithm.grad_accum_steps must be >= 1, got {a.grad_accum_steps}")
    need(
        mb % a.grad_accum_steps == 0,
        f"the mini-batch ({mb} responses) must be divisible by algorithm.grad_accum_steps ({a.grad_accum_steps})",
    )
    need(a.ppo_epochs >= 1, f"algorithm.ppo_epochs must be >= 1, got {a.ppo_epochs}")
    need(a.beta >= 0, f"algorithm.beta must be >= 0, got {a.beta}")
    need(0 <= a.clip_eps_low < 1, f"algorithm.clip_eps_low must be in [0, 1), got {a.clip_eps_low}")
    need(a.clip_eps_high is None or a.clip_eps_high >= 0, "algorithm.clip_eps_high must be >= 0")
    need(a.kl_coef >= 0, f"algorithm.kl_coef must be >= 0, got {a.kl_coef}")
    need(a.prm_lr is None or a.prm_lr > 0, f"algorithm.prm_lr must be > 0 (or null), got {a.prm_lr}")
    need(a.prm_beta > 0, f"algorithm.prm_beta must be > 0, got {a.prm_beta}")
    need(a.prm_micro_batch >= 0, f"algorithm.prm_micro_batch must be >= 0, got {a.prm_micro_batch}")
    need(a.prm_max_grad_norm >= 0, f"algorithm.prm_max_grad_norm must be >= 0, got {a.prm_max_grad_norm}")
    need(
        0 <= a.prime_filter_low <= a.prime_filter_high <= 1,
        f"algorithm.prime_filter_low / prime_filter_high must satisfy 0 <= low <= high <= 1, got "
        f"{a.prime_filter_low} / {a.prime_filter_high}",
    )
    if not cfg.model.use_reference:
        need(
            a.name not in ("spro", "prime") and a.kl_coef == 0,
            f"model.use_reference=false, but algorithm.name={a.name} / algorithm.kl_coef="
            f"{a.kl_coef} needs the reference model's log-probs",
        )
    need(cfg.optim.lr > 0, f"optim.lr must be > 0, got {cfg.optim.lr}")
    need(cfg.total_steps >= 1, f"total_steps must be >= 1, got {cfg.total_steps}")
    need(cfg.keep_last >= 1, f"keep_last must be >= 1, got {cfg.keep_last}")
    need(d.task is not None or d.source is not None, "data: give data.task or data.source")
    need(len(d.rewards) >= 1 or d.task is not None, "data.rewards: give at least one reward function")
    if d.accuracy_reward is not None:
        names = [s.name for s in d.rewards]
        need(
            d.accuracy_reward in names,
            f"data.accuracy_reward '{d.accuracy_reward}' is not one of data.rewards ({', '.join(names)})",
        )


def describe_options() -> str:
    """One line per config key with its type, default and help (for `spro train --help`)."""
    lines = []

    def walk(cls: type, obj: Any, prefix: str) -> None:
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            tp = hints[f.name]
            value = getattr(obj, f.name)
            if _is_dataclass_type(tp):
                walk(tp, value, f"{prefix}{f.name}.")
                continue
            if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                value = [dataclasses.asdict(v) for v in value]
            lines.append(f"  {prefix}{f.name} = {value!r}\n      {f.metadata.get('help', '')}")

    walk(TrainConfig, TrainConfig(), "")
    return "\n".join(lines)
