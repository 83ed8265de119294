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

from spro.algorithms.losses import AGG_MODES as LOSS_AGGS, KL_ESTIMATORS
from spro.options import ConfigError, Options, check_fields, option  # noqa: F401 (re-exported)

PRESET_DIR = Path(__file__).parent / "presets"

DTYPES = ("float32", "bfloat16", "float16", "auto")


_f = option


@dataclass
class LoRAConfig:
    """LoRA adapters through peft (arXiv:2106.09685); ``pip install 'spro[lora]'``."""

    rank: int = _f(
        0,
        help="LoRA rank r; 0 = off (the whole model trains). With r > 0 only the adapters train, the reference "
        "pi_ref is the same weights with the adapters disabled (no second copy of the model: SPRO's log pi_ref "
        "costs no memory), checkpoints hold the adapters (spro eval loads them; spro export merges them "
        "into a full model). Not with algorithm.name=prime (its implicit PRM is a full trainable copy).",
        check=(lambda v: v >= 0, ">= 0"),
    )
    alpha: int = _f(16, help="LoRA alpha: the adapters' output is scaled by alpha / rank.", check=(lambda v: v > 0, "> 0"))
    dropout: float = _f(0.0, help="Dropout on the adapters' input.", check=(lambda v: 0 <= v < 1, "in [0, 1)"))
    target_modules: str | list[str] = _f(
        "all-linear",
        help="Modules that get adapters: 'all-linear' (every linear layer but the output layer) or a list of "
        "module names, e.g. [q_proj, k_proj, v_proj, o_proj].",
    )


@dataclass
class ModelConfig:
    name_or_path: str = _f(
        "tiny",
        help="The policy: a local folder with an AutoModelForCausalLM and its tokenizer, a hub id "
        "(when online), 'tiny' (a randomly initialised ~1M-parameter Llama with the character "
        "tokenizer of spro.models.tiny) or 'warmstart:weak' / 'warmstart:strong' (spro.trainer.warmstart's SFT "
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
    dtype: str = _f(
        "float32",
        help="Weights dtype. bfloat16 / float16 cast the weights themselves (half the memory, no fp32 copy: "
        "small updates are rounded away); for mixed precision keep float32 and set model.precision=bf16.",
        choices=DTYPES,
    )
    precision: str = _f(
        "fp32",
        help="'bf16': mixed precision, every forward pass under torch.autocast(bfloat16) with float32 master "
        "weights and optimizer state; the output layer and the log-softmax stay float32, so the log-probs of "
        "the PPO ratio, the KL term and the process reward are float32 (spro.models.precision). Fast on GPUs and "
        "on CPUs with AMX-BF16 / AVX512-BF16 (~3x fp32 for a real model); slower than fp32 on other CPUs. "
        "'fp32': plain model.dtype. 'auto': bf16 where the hardware runs it natively (such a CPU, a bf16 GPU), "
        "model.dtype is float32 and the run does not train on a log-ratio to the reference (SPRO, PRIME, "
        "kl_coef > 0: there bf16's rounding noise is larger than the early process reward), fp32 elsewhere: the "
        "setting for real models; the default stays fp32 so that the tiny presets' numbers do not depend on "
        "the machine.",
        choices=("fp32", "bf16", "auto"),
    )
    gguf_file: str | None = _f(
        None,
        help="A GGUF file inside the name_or_path folder (or an absolute path) to load the policy from; "
        "transformers dequantises it to model.dtype (needs `pip install 'spro[gguf]'`). A name_or_path "
        "ending in .gguf works the same.",
    )
    lora: LoRAConfig = _f(help="LoRA adapters (rank 0 = off).", factory=LoRAConfig)
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
        "or an import path 'module:function' (a module in the working directory or on the Python path). The "
        "function follows TRL's convention fn(prompts, completions, **columns) -> list[float | None]."
    )
    weight: float = _f(1.0, help="Weight of this reward in the weighted sum.")


@dataclass
class ReasoningGymConfig:
    """data.source=reasoning_gym:NAME: a reasoning-gym task (pip install 'spro[gym]'; spro.data.reasoning_gym)."""

    size: int = _f(1000, help="Training questions generated (items 0 .. size-1 of the task's dataset).")
    seed: int = _f(
        0,
        help="Seed of the task's generator. The data.eval_size evaluation questions are the items after the "
        "training ones, minus any question that is also a training question (the sets are disjoint).",
    )
    config: dict[str, Any] = _f(
        help="The task's own config keys, e.g. {min_terms: 2, max_terms: 3, min_digits: 1, max_digits: 2} for "
        "chain_sum (reasoning-gym's <Task>Config).",
        factory=dict,
    )
    chat: bool = _f(
        True,
        help="Prompts as chat messages (reasoning-gym's default system prompt, which asks for the answer "
        "inside <answer></answer>, then the question), rendered with the tokenizer's chat template; false = "
        "plain text: the question and that instruction. The reward 'reasoning_gym' scores the last "
        "<answer>...</answer> with the task's score_answer.",
    )


@dataclass
class DataConfig:
    task: str | None = _f(
        None,
        help="Built-in task to train on (spro.data.tasks: arithmetic, arithmetic_long, multiplication). null: the "
        "dataset data.source, or the arithmetic task when data.source is null too. Giving both data.task and "
        "data.source is an error.",
    )
    task_kwargs: dict[str, Any] = _f(
        help="Knobs passed to get_task(task, **task_kwargs) (e.g. number of operands).",
        factory=dict,
    )
    source: str | None = _f(
        None,
        help="Dataset to train on: a local file (jsonl/json/csv/parquet), a saved dataset folder or a hub name, "
        "loaded by spro.data.load_prompt_dataset; or reasoning_gym:NAME, a reasoning-gym task "
        "(data.reasoning_gym.*; reward 'reasoning_gym').",
    )
    schema: str = _f("auto", help="Dataset schema for load_prompt_dataset ('auto' detects it).")
    column_map: dict[str, str] | None = _f(
        None,
        help="Where your columns are: {'prompt': YOUR_PROMPT_COLUMN, 'answer': YOUR_ANSWER_COLUMN}, i.e. the column "
        "spro needs -> the column of data.source that holds it (dotted names reach into nested fields, e.g. "
        "reward_model.ground_truth). With schema=auto it implies the plain schema.",
    )
    prompt_template: str | None = _f(
        None, help="Format string applied to each prompt, e.g. '{prompt}\\nAnswer:'."
    )
    split: str = _f(
        "train", help="Split used for training (of the task, or of data.source when it has splits; a single file "
        "has none and this is ignored)."
    )
    eval_source: str | None = _f(
        None,
        help="Dataset of held-out prompts for the periodic evaluation of a data.source run (same schema and "
        "prompt_template; its columns: data.eval_column_map).",
    )
    eval_split: str | None = _f(
        None,
        help="Held-out split for the periodic evaluation: of the task (null = 'validation'), of data.eval_source "
        "when it has splits, or another split of data.source (it must exist and differ from data.split).",
    )
    eval_fraction: float | None = _f(
        None,
        help="Hold out this fraction of data.source's rows (a seeded draw, by `seed`) for the periodic evaluation; "
        "they are not trained on. A dataset run needs one of data.eval_source, data.eval_split and "
        "data.eval_fraction to evaluate (else it stops with an error; eval_every=-1 never evaluates).",
        check=(lambda v: v is None or 0 < v < 1, "in (0, 1) or null"),
    )
    eval_column_map: dict[str, str] | None = _f(
        None, help="column_map of data.eval_source (null = data.column_map)."
    )
    eval_size: int = _f(200, help="Number of held-out prompts per evaluation (0 = all).")
    train_size: int | None = _f(
        None, help="Number of training prompts to draw from the split (null = all)."
    )
    rewards: list[RewardSpec] | None = _f(
        None,
        help="Reward functions with weights ([{name: math, weight: 1.0}, ...]; a bare name stands for weight 1: "
        "[math, format]); the reward of a response is the weighted sum of the values that are "
        "not None (None = 'not applicable'); a response no function could score gets 0 (counted in the "
        "reward/none_frac metric). A function that raises is retried response by response; responses it still "
        "fails on count as None (reward/errors, with a warning). null = the reward of what is trained on, "
        "printed at the start of the run: a task's own verifier (arithmetic -> arithmetic), for a dataset the "
        "one its schema implies (gsm8k, math -> math; eurus -> eurus; a reasoning_gym:NAME source -> "
        "reasoning_gym); the plain schema implies none, and the run stops asking for data.rewards.",
    )
    reward_timeout: float = _f(
        300.0,
        help="Seconds one call of a reward function of your own (not one of spro's, which have their own limits) "
        "may take; it runs in a worker thread, and on time-out its responses count as None (reward/timeouts, with "
        "a warning). 0 = no limit.",
        check=(lambda v: v >= 0, ">= 0"),
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
    reasoning_gym: ReasoningGymConfig = _f(
        help="Size, seed, task config and prompt format of a data.source=reasoning_gym:NAME task.",
        factory=ReasoningGymConfig,
    )


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
    """The algorithm (selected from spro.algorithms' registry) and the policy update all algorithms share.

    Each registered algorithm also has a section ``algorithm.<its name>.*`` with its own options
    (e.g. ``algorithm.spro.beta``), read only when that algorithm runs; a config may hold the
    sections of several algorithms, so that ``spro compare`` arms can share one base config.
    """

    name: str = _f(
        "spro",
        help="The algorithm: a registered name (spro, arXiv:2507.01551; grpo, arXiv:2402.03300; "
        "dr_grpo, arXiv:2503.20783; rloo, arXiv:2402.14740; prime, arXiv:2502.01456; see `spro train "
        "--help` for each one's options) or 'module:attr' naming an algorithm of your own, importable "
        "from the working directory (spro.algorithms.register_algorithm).",
    )
    loss_agg: str | None = _f(
        None,
        help="Loss aggregation (verl's loss_agg_mode): 'seq-mean-token-mean' (GRPO/SPRO: mean over each "
        "response's tokens, then over responses), 'token-mean' (DAPO, PRIME: mean over all tokens of the "
        "mini-batch), 'seq-mean-token-sum' (sum over each response's tokens, mean over responses), "
        "'seq-mean-token-sum-norm' (Dr. GRPO: token sum / max_new_tokens, mean over responses). The means are "
        "over the whole mini-batch (all its micro-batches and processes), as verl does. null = the "
        "algorithm's own (dr_grpo: seq-mean-token-sum-norm; prime: token-mean; the others: seq-mean-token-mean).",
        choices=(None,) + LOSS_AGGS,
    )
    clip_eps_low: float = _f(0.2, help="PPO clip range below: ratio >= 1 - clip_eps_low.",
                             check=(lambda v: 0 <= v < 1, "in [0, 1)"))
    clip_eps_high: float | None = _f(
        None,
        help="PPO clip range above (null = clip_eps_low; 0.28 = DAPO's clip-higher, arXiv:2503.14476).",
        check=(lambda v: v is None or v >= 0, ">= 0 or null"),
    )
    clip_ratio_c: float | None = _f(
        None,
        help="Dual-clip PPO (Ye et al. 2020, arXiv:1912.09729): for tokens with a negative advantage the "
        "per-token loss is at most -advantage * clip_ratio_c, so one very unlikely-now token cannot blow up "
        "the loss. null = off (plain clipped PPO, as in the GRPO and SPRO papers); verl's default is 3.0. "
        "Must be > 1.",
        check=(lambda v: v is None or v > 1, "> 1 or null"),
    )
    kl_coef: float = _f(0.0, help="Weight of the KL penalty to the reference in the loss (0 in the SPRO paper).",
                        check=(lambda v: v >= 0, ">= 0"))
    kl_estimator: str = _f("k3", help="KL estimator (Schulman's k1 / k2 / k3).", choices=KL_ESTIMATORS)
    entropy_coef: float = _f(0.0, help="Weight of the entropy bonus (0 = none).")
    ppo_epochs: int = _f(1, help="Passes over each batch of rollouts (PPO epochs).", check=(lambda v: v >= 1, ">= 1"))
    mini_batch_size: int = _f(
        0,
        help="Responses per optimizer step (per process); 0 = the whole local batch (one optimizer step "
        "per epoch). Must divide the local batch.",
    )
    grad_accum_steps: int = _f(
        1,
        help="Micro-batches per mini-batch: each mini-batch is split into this many forward/backward "
        "passes whose gradients are summed before the optimizer step.",
        check=(lambda v: v >= 1, ">= 1"),
    )
    sections: dict[str, Any] = field(default_factory=dict, repr=False, metadata={"sections": True})

    def __getattr__(self, name: str) -> Any:
        """``cfg.algorithm.<algorithm name>``: that algorithm's options (its defaults when not set)."""
        if name.startswith("__") or name == "sections":
            raise AttributeError(name)
        sections = self.__dict__.get("sections", {})
        if name in sections:
            return sections[name]
        from spro.algorithms import registry

        try:
            cls = registry.get_algorithm(name)
        except ValueError:
            raise AttributeError(f"AlgorithmConfig has no field or algorithm section {name!r}") from None
        return cls.Options()

    @property
    def options(self) -> Any:
        """The options of the selected algorithm (``algorithm.<its name>``)."""
        from spro.algorithms import registry

        return getattr(self, registry.get_algorithm(self.name).name)


# Keys of 0.1, when the options of every algorithm were flat in `algorithm`: old key -> new keys.
LEGACY_ALGORITHM_KEYS = {
    "beta": ("spro.beta",),
    "outcome_scale": ("spro.outcome_scale", "grpo.outcome_scale"),
    "eps": ("spro.eps", "grpo.eps"),
    "msa_scale_std": ("spro.msa_scale_std",),
    "process_reward": ("spro.process_reward",),
    "baseline": ("spro.baseline",),
    "process_only": ("spro.process_only",),
    "prm_lr": ("prime.prm_lr",),
    "prm_beta": ("prime.prm_beta",),
    "prm_micro_batch": ("prime.prm_micro_batch",),
    "prm_max_grad_norm": ("prime.prm_max_grad_norm",),
    "prm_update": ("prime.prm_update",),
    "prime_filter": ("prime.filter",),
    "prime_filter_low": ("prime.filter_low",),
    "prime_filter_high": ("prime.filter_high",),
    "prime_outcome_coef": ("prime.outcome_coef",),
    "prime_process_coef": ("prime.process_coef",),
}


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
    tensorboard: bool = _f(
        True,
        help="Write TensorBoard events under <output_dir>/tensorboard: every metric as a scalar, the run config as "
        "hparams, sample completions as text (logging.log_completions).",
    )
    wandb: bool = _f(False, help="Log to Weights & Biases (needs `pip install wandb`).")
    wandb_project: str = _f("spro", help="W&B project name.")
    wandb_run_name: str | None = _f(None, help="W&B run name (null = the output folder name).")
    progress_bar: bool = _f(
        True,
        help="Show a progress bar with live metrics when stderr is a terminal; otherwise (or when false) print "
        "a line of key metrics every logging.every steps instead.",
    )
    every: int = _f(
        1,
        help="Steps between the lines of key metrics (step, reward, accuracy, loss, KL, length, time) printed "
        "when there is no progress bar and written to <output_dir>/train.log (plain lines, no carriage "
        "returns); the last step is always included.",
        check=(lambda v: v >= 1, ">= 1"),
    )
    log_completions: int = _f(
        0,
        help="Every step, write this many sample completions to completions.jsonl and to TensorBoard as a text "
        "table (tag 'completions') (0 = none).",
    )
    diagnostics: bool = _f(
        True,
        help="Log the process-reward diagnostics every step (spro.trainer.diagnostics): diag/<signal>/first_error_* "
        "on tasks with a step checker (does SPRO's self-guided reward, its MSA, PRIME's PRM or the advantage "
        "locate the first wrong step of wrong responses?) and drift/* (share of the advantage from groups "
        "without outcome variance; correlation of the process term with the log-ratio to the reference).",
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
        if len(errors) == 1:  # X | None: what X needs (", or null")
            raise ConfigError(f"{errors[0]} (or null)")
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if _is_dataclass_type(tp):
        if isinstance(tp, type) and isinstance(value, tp):
            return value
        if tp is RewardSpec and isinstance(value, str):  # data.rewards=[math, format]: names with weight 1
            value = {"name": value}
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
    for name, f in _fields(cls).items():
        tp = hints[name]
        if f.metadata.get("sections"):  # the options of every registered algorithm
            from spro.algorithms import registry

            for algo in registry.list_algorithms():
                keys.extend(all_keys(registry.get_algorithm(algo).Options, f"{prefix}{algo}."))
        elif _is_dataclass_type(tp):
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
    if cls is AlgorithmConfig:
        data = _build_sections(data, prefix)
    hints = _hints(cls)
    fields = _fields(cls)
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            if cls is RewardSpec:
                raise ConfigError(f"{key}: unknown reward field (expected 'name' and 'weight')")
            raise _unknown_key(key)
        kwargs[k] = v if fields[k].metadata.get("sections") else _convert(v, hints[k], key)
    try:
        obj = cls(**kwargs)
    except TypeError as e:  # a required field is missing
        raise ConfigError(f"{prefix or 'config'}: {e}") from None
    except ConfigError as e:  # an Options class checked itself
        raise ConfigError(f"{prefix}.{e}" if prefix else str(e)) from None
    check_fields(obj, prefix)
    return obj


def _build_sections(data: dict, prefix: str) -> dict:
    """Split an ``algorithm`` mapping into its own keys and ``sections``: ``{algorithm name: Options}``,
    always including the selected algorithm's (with its defaults)."""
    from spro.algorithms import registry

    own = {f.name for f in dataclasses.fields(AlgorithmConfig)}
    out = {k: v for k, v in data.items() if k in own and k != "sections"}
    raw = {k: v for k, v in data.items() if k not in own}
    raw.update(data.get("sections") or {})
    name = out.get("name", AlgorithmConfig.name)
    try:
        selected = registry.get_algorithm(name)
    except ValueError as e:
        raise ConfigError(f"{prefix}.name: {e}") from None
    raw.setdefault(selected.name, {})
    sections = {}
    for sec, values in raw.items():
        key = f"{prefix}.{sec}"
        try:
            cls = selected if sec == selected.name else registry.get_algorithm(sec)
        except ValueError:
            raise _unknown_key(key) from None
        if dataclasses.is_dataclass(values) and isinstance(values, cls.Options):
            sections[sec] = values
            continue
        if not isinstance(values, dict):
            raise ConfigError(f"{key}: expected a mapping of {sec}'s options, got {values!r}")
        sections[sec] = _build(cls.Options, values, key)
    out["sections"] = sections
    return out


def _migrate_legacy(data: dict, where: str = "") -> dict:
    """Move 0.1's flat algorithm keys (``algorithm.beta``, ``algorithm.prm_lr``, ...) into their sections,
    with a warning naming the new keys. Returns a new dict."""
    algo = data.get("algorithm") if isinstance(data, dict) else None
    if not isinstance(algo, dict) or not any(k in LEGACY_ALGORITHM_KEYS for k in algo):
        return data
    algo = dict(algo)
    for old in [k for k in algo if k in LEGACY_ALGORITHM_KEYS]:
        value = algo.pop(old)
        _warn_legacy(old, where)
        for new in LEGACY_ALGORITHM_KEYS[old]:
            sec, key = new.split(".")
            algo[sec] = {**{key: value}, **(algo.get(sec) or {})}  # a key given the new way wins
    return {**data, "algorithm": algo}


def _warn_legacy(old: str, where: str = "") -> None:
    import warnings

    new = " and ".join(f"algorithm.{k}" for k in LEGACY_ALGORITHM_KEYS[old])
    warnings.warn(f"{where + ': ' if where else ''}algorithm.{old} is now {new}; the old key still works in "
                  f"this release", FutureWarning, stacklevel=3)


def _set_dotted(tree: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    if len(parts) == 2 and parts[0] == "algorithm" and parts[1] in LEGACY_ALGORITHM_KEYS:
        _warn_legacy(parts[1])
        for new in LEGACY_ALGORITHM_KEYS[parts[1]]:
            _set_dotted(tree, f"algorithm.{new}", value)
        return
    node = tree
    cls: Any = TrainConfig
    for i, part in enumerate(parts[:-1]):
        hints = _hints(cls) if _is_dataclass_type(cls) else {}
        if cls is AlgorithmConfig and part not in hints:  # a section: checked when the config is built
            for p in parts[i:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = value
            return
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
    """A checked :class:`TrainConfig` from a nested dict (0.1's flat algorithm keys are migrated)."""
    cfg = _build(TrainConfig, _migrate_legacy(data))
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
            data = _merge(data, _migrate_legacy(_expand_dotted(_read_yaml(preset_path(preset))), f"preset {preset}"))
        if path is not None:
            data = _merge(data, _migrate_legacy(_expand_dotted(_read_yaml(Path(path))), str(path)))
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
    need(
        mb % a.grad_accum_steps == 0,
        f"the mini-batch ({mb} responses) must be divisible by algorithm.grad_accum_steps ({a.grad_accum_steps})",
    )
    if cfg.model.lora.rank > 0:
        from spro.algorithms import registry

        need(registry.get_algorithm(a.name).name != "prime",
             "model.lora.rank > 0 is not supported with algorithm.name=prime: PRIME's implicit PRM is a full "
             "trainable copy of the reference model, so LoRA would save no memory; set model.lora.rank=0")
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
    need(cfg.optim.lr > 0, f"optim.lr must be > 0, got {cfg.optim.lr}")
    need(cfg.total_steps >= 1, f"total_steps must be >= 1, got {cfg.total_steps}")
    need(cfg.keep_last >= 1, f"keep_last must be >= 1, got {cfg.keep_last}")
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


def describe_options() -> str:
    """One line per config key with its default and help (for `spro train --help`), then each
    registered algorithm's section ``algorithm.<name>.*``."""
    from spro.algorithms import registry

    lines = []

    def walk(cls: type, obj: Any, prefix: str) -> None:
        hints = _hints(cls)
        for f in dataclasses.fields(cls):
            if f.metadata.get("sections"):
                continue
            tp = hints[f.name]
            value = getattr(obj, f.name)
            if _is_dataclass_type(tp):
                walk(tp, value, f"{prefix}{f.name}.")
                continue
            if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                value = [dataclasses.asdict(v) for v in value]
            lines.append(f"  {prefix}{f.name} = {value!r}\n      {f.metadata.get('help', '')}")

    walk(TrainConfig, TrainConfig(), "")
    for name in registry.list_algorithms():
        cls = registry.get_algorithm(name)
        doc = (cls.__doc__ or "").strip().split("\n")[0]
        lines.append(f"\nalgorithm.{name}: {doc}" + ("" if dataclasses.fields(cls.Options) else " (no options)"))
        walk(cls.Options, cls.Options(), f"algorithm.{name}.")
    return "\n".join(lines)
