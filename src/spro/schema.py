"""The declarations of `spro train`'s config: a tree of dataclasses, every field with its help text
(``spro.options.option``), its allowed choices and its checks, in the manner of TRL's ``GRPOConfig``.

This module is data: the keys, their defaults, their help texts (which `spro train --help` prints)
and their valid ranges. Loading, merging and the cross-field checks live in :mod:`spro.config`,
which re-exports every class here (``from spro.config import TrainConfig`` is the public path).

References: SPRO = Fei et al., "Self-Guided Process Reward Optimization with Masked Step
Advantage for Process Reinforcement Learning", arXiv:2507.01551 (2025). GRPO = Shao et al.,
arXiv:2402.03300. Dr. GRPO = Liu et al., arXiv:2503.20783. RLOO = Ahmadian et al.,
arXiv:2402.14740. PRIME = Cui et al., arXiv:2502.01456. DAPO (clip-higher) = Yu et al.,
arXiv:2503.14476.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from spro.algorithms.losses import AGG_MODES as LOSS_AGGS, KL_ESTIMATORS, RATIO_LEVELS
from spro.algorithms.probes import ProbeOptions
from spro.options import option

DTYPES = ("float32", "bfloat16", "float16", "auto")
# transformers.get_scheduler names that need no more than (warmup steps, training steps)
SCHEDULERS = ("constant", "constant_with_warmup", "linear", "cosine", "cosine_with_restarts", "polynomial",
              "inverse_sqrt")
# the range checks shared by many keys (every float is also checked to be finite: spro.options.check_fields)
NON_NEGATIVE = (lambda v: v >= 0, ">= 0")
POSITIVE = (lambda v: v > 0, "> 0")
AT_LEAST_1 = (lambda v: v >= 1, ">= 1")
# the trainer seeds numpy with seed * 1000 + rank, which must fit in 32 bits
SEED = (lambda v: 0 <= v < 2**32 // 1000, f"in [0, {2**32 // 1000})")


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
        check=NON_NEGATIVE,
    )
    alpha: int = _f(16, help="LoRA alpha: the adapters' output is scaled by alpha / rank.", check=POSITIVE)
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
        "tokenizer of spro.models.tiny) or 'warmstart:PRESET' (spro.trainer.warmstart's SFT models of the built-in "
        "tasks, built once and cached; PRESET one of spro sft's tiny presets: weak, strong, long-weak, long-mid, "
        "mult-weak).",
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
        "small updates are rounded away); for mixed precision keep float32 and set model.precision=bf16. 'auto': "
        "the dtype the checkpoint stores (model.precision=auto then stays fp32).",
        choices=DTYPES,
    )
    precision: str = _f(
        "fp32",
        help="'bf16': mixed precision, every forward pass under torch.autocast(bfloat16) with float32 master "
        "weights and optimizer state; the output layer and the log-softmax stay float32, so the log-probs of "
        "the PPO ratio, the KL term and the process reward are float32 (spro.models.precision). Fast on GPUs and "
        "on CPUs with AMX-BF16 (~3x fp32 for a real model's forward pass), AMD CPUs with AVX512-BF16 (~2x) or Arm "
        "CPUs with BF16; slower than fp32 on other CPUs, an Intel CPU with AVX512-BF16 but no AMX included "
        "(spro.models.precision.bf16_native). "
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
    tiny_seed: int = _f(0, help="Initialisation seed when name_or_path is 'tiny'.", check=SEED)
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

    size: int = _f(1000, help="Training questions generated (items 0 .. size-1 of the task's dataset).", check=AT_LEAST_1)
    seed: int = _f(
        0,
        help="Seed of the task's generator. The data.eval_size evaluation questions are the items after the "
        "training ones, minus any question that is also a training question (the sets are disjoint).",
        check=SEED,
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
class CodeRewardConfig:
    """The sandbox of the code rewards ('code', and the coding rows of 'eurus'): spro.rewards.code, spro.rewards.sandbox."""

    row_seconds: float = _f(
        6.0,
        help="Time budget of one row, all its sandboxed runs together (stdio rows stop at their first failing or "
        "timed-out case; metrics reward/code/timeouts, reward/code/row_budget). data.reward_timeout bounds a "
        "whole call.",
        check=POSITIVE,
    )
    isolation: str = _f(
        "auto",
        help="Sandbox of the model-written programs: 'auto' (bubblewrap where it works, else the weaker 'namespace', "
        "with a warning at the start of training), 'bwrap', 'namespace', or 'unsafe-none' (no sandbox: rlimits "
        "only, the programs run as your user; only where namespaces are impossible). The mode in use is checked and "
        "printed at the start of training (a warning for any mode but bwrap), recorded as sandbox.isolation in "
        "train.log and in TensorBoard's and W&B's run config, and logged every step as the metric sandbox/isolation "
        "(0 bwrap, 1 namespace, 2 none); `spro doctor` lists what each mode leaves visible.",
        choices=("auto", "bwrap", "namespace", "unsafe-none"),
    )
    workers: int = _f(2, help="Rows graded at once (each a sandboxed process).", check=AT_LEAST_1)


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
    chat_template: str | bool = _f(  # (YAML reads on / off as true / false)
        "auto",
        help="String prompts through the tokenizer's chat template (as one user message, with the generation "
        "prompt): 'on', 'off', or 'auto' = as spro trained the model when model.name_or_path is a folder spro saved "
        "(a spro sft warm start, a spro train checkpoint: they record it), else on when the tokenizer has a chat "
        "template and model.name_or_path (or model.gguf_file) names an instruct/chat model (Instruct, chat or it as a word, e.g. SmolLM2-135M-Instruct, "
        "gemma-2-2b-it), off otherwise. Chat-message prompts always use the template. The choice and the first "
        "rendered prompt are printed at the start.",
        check=(lambda v: v in ("auto", "on", "off", True, False), "auto, on or off"),
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
        "they are not trained on, also with eval_every=-1 (the split stays the same), and the evaluation uses the "
        "first data.eval_size of them (a warning says when that leaves some out). A dataset run needs one of "
        "data.eval_source, data.eval_split and data.eval_fraction to evaluate (else it stops with an error; eval_every=-1 never evaluates).",
        check=(lambda v: v is None or 0 < v < 1, "in (0, 1) or null"),
    )
    eval_column_map: dict[str, str] | None = _f(
        None, help="column_map of data.eval_source (null = data.column_map)."
    )
    eval_size: int = _f(200, help="Number of held-out prompts per evaluation (0 = all).", check=NON_NEGATIVE)
    train_size: int | None = _f(
        None, help="Number of training prompts to draw from the split (null = all).",
        check=(lambda v: v is None or v >= 1, ">= 1 or null"),
    )
    rewards: list[RewardSpec] | None = _f(
        None,
        help="Reward functions with weights ([{name: math, weight: 1.0}, ...]; a bare name stands for weight 1: "
        "[math, format]); the reward of a response is the weighted sum of the values that are "
        "not None (None = 'not applicable', TRL's rule; spro.rewards.combine_values); a response no function "
        "could score trains with reward 0, with a warning (counted in the reward/none_frac metric). A function that raises is retried response by response; responses it still "
        "fails on count as None (reward/errors, with a warning). null = the reward of what is trained on, "
        "printed at the start of the run: a task's own verifier (arithmetic -> arithmetic), for a dataset the "
        "one its schema implies (gsm8k, math -> math; eurus -> eurus; a reasoning_gym:NAME source -> "
        "reasoning_gym); the plain schema implies none, and the run stops asking for data.rewards.",
    )
    reward_timeout: float = _f(
        300.0,
        help="Seconds one call of any reward function may take (a batch). A function of your own (and "
        "reasoning_gym's) runs in a worker process, killed on time-out; its responses count as None "
        "(reward/timeouts, with a warning; timing out on every response 3 calls in a row is an error). spro's "
        "math, code, eurus, format and arithmetic rewards limit each row themselves and grade no row once this "
        "budget is spent: those rows count as None (reward/math/batch_budget, reward/code/batch_budget; their "
        "time-outs: reward/math/timeout, reward/code/timeouts). 0 = no limit (everything runs in the trainer's "
        "process).",
        check=NON_NEGATIVE,
    )
    accuracy_reward: str | None = _f(
        None,
        help="Name of the reward (one of data.rewards) whose value decides 'correct' for the accuracy metrics and "
        "PRIME's labels. null = the data's verifier (the task's own, reasoning_gym, or the one the schema implies: "
        "math for gsm8k) when it is among the rewards; otherwise accuracy is not reported (null; prime stops with an "
        "error), never a reward of your own, which may be shaped. The verifier is printed at the start.",
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
    code: CodeRewardConfig = _f(
        help="Sandbox, row budget and parallelism of the code rewards ('code', 'eurus').", factory=CodeRewardConfig,
    )


@dataclass
class RolloutConfig:
    backend: str = _f(
        "hf",
        help="Generation backend: 'hf' (transformers generate) or 'decode' (spro's own sampling loop over the "
        "model's forward: the same distribution, other tokens for a seed; on a CPU it multiplies by packed "
        "weights and draws by inverse transform sampling, the setting for real models on CPUs, "
        "examples/smollm2_gsm.md; no repetition_penalty). Either samples with the rollout.* settings only, never "
        "with those of the model's generation_config.json (a warning names any it sets, e.g. top_k). Another "
        "backend (e.g. vLLM) can implement spro.rollout.RolloutBackend, but selecting it means adding it to "
        "spro.rollout.hf.make_backend.",
        choices=("hf", "decode"),
    )
    num_generations: int = _f(
        8, help="G: responses sampled per prompt (the group of GRPO / SPRO's masked step advantage).",
        check=(lambda v: v >= 2, ">= 2 (group baselines need a group)"),
    )
    prompts_per_step: int = _f(
        8, help="Prompts per training step; the batch is prompts_per_step * num_generations responses.",
        check=AT_LEAST_1,
    )
    temperature: float = _f(1.0, help="Sampling temperature (log-probs use the same temperature).", check=POSITIVE)
    top_p: float = _f(1.0, help="Nucleus sampling threshold (1.0 = off).", check=(lambda v: 0 < v <= 1, "in (0, 1]"))
    top_k: int = _f(0, help="Top-k sampling (0 = off).", check=NON_NEGATIVE)
    min_p: float = _f(
        0.0,
        help="Min-p sampling (Nguyen et al. 2024, arXiv:2407.01082): keep tokens whose probability is at least min_p "
        "times the most likely token's (0.0 = off; TRL's min_p). Like top_p and top_k it shapes sampling only: the "
        "log-probs of the loss are those of softmax(logits / temperature), as in TRL.",
        check=(lambda v: 0 <= v < 1, "in [0, 1)"),
    )
    repetition_penalty: float = _f(
        1.0,
        help="Repetition penalty of transformers' generate (Keskar et al. 2019, arXiv:1909.05858): > 1 discourages "
        "tokens already in the prompt or the response (1.0 = off; TRL's repetition_penalty). Shapes sampling only, "
        "as min_p.",
        check=POSITIVE,
    )
    max_new_tokens: int = _f(
        32, help="Maximum response length; responses cut here are flagged truncated.", check=AT_LEAST_1
    )
    generation_batch_size: int = _f(
        0, help="Responses generated per generate() call (0 = the whole local batch at once); a multiple of "
        "rollout.num_generations.", check=NON_NEGATIVE
    )
    eval_batch_size: int = _f(64, help="Prompts per greedy generate() call during evaluation.", check=AT_LEAST_1)


@dataclass
class AlgorithmConfig:
    """The algorithm (selected from spro.algorithms' registry) and the policy update all algorithms share.

    Each registered algorithm also has a section ``algorithm.<its name>.*`` with its own options
    (e.g. ``algorithm.spro.beta``), read only when that algorithm runs; a config may hold the
    sections of several algorithms, so that ``spro compare`` arms can share one base config (each key
    set in a section the chosen algorithm does not read is named in a warning: ``spro.config.ignored_keys``).
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
    importance_sampling_level: str = _f(
        "token",
        help="The PPO ratio of the clipped loss: 'token' = pi_theta / pi_old per token (PPO, GRPO, the SPRO paper); "
        "'sequence' = GSPO's ratio (Zheng et al. 2025, arXiv:2507.18071): each response's tokens share "
        "exp(mean over its tokens of log pi_theta - log pi_old), clipped per response (TRL's "
        "importance_sampling_level='sequence'). Any algorithm.name; each token keeps its own advantage.",
        choices=RATIO_LEVELS,
    )
    mask_truncated_completions: bool = _f(
        False,
        help="Leave responses cut at rollout.max_new_tokens (no eos) out of the policy loss and its token / "
        "response counts (TRL's mask_truncated_completions; DAPO's overlong filtering, Yu et al. 2025, "
        "arXiv:2503.14476). Their rewards still enter the group statistics of the advantage.",
    )
    kl_coef: float = _f(0.0, help="Weight of the KL penalty to the reference in the loss (0 in the SPRO paper).",
                        check=NON_NEGATIVE)
    kl_estimator: str = _f("k3", help="KL estimator (Schulman's k1 / k2 / k3).", choices=KL_ESTIMATORS)
    entropy_coef: float = _f(0.0, help="Weight of the entropy bonus (0 = none).")
    ppo_epochs: int = _f(1, help="Passes over each batch of rollouts (PPO epochs).", check=AT_LEAST_1)
    mini_batch_size: int = _f(
        0,
        help="Responses per optimizer step (per process); 0 = the whole local batch (one optimizer step "
        "per epoch). Must divide the local batch and be a multiple of rollout.num_generations.",
        check=NON_NEGATIVE,
    )
    grad_accum_steps: int = _f(
        1,
        help="Micro-batches per mini-batch: each mini-batch is split into this many forward/backward "
        "passes whose gradients are summed before the optimizer step.",
        check=AT_LEAST_1,
    )
    sections: dict[str, Any] = field(default_factory=dict, repr=False, metadata={"sections": True})

    @property
    def options(self) -> Any:
        """The options of the selected algorithm: its section ``algorithm.<its name>`` (``spro.config`` always
        fills it in; the algorithm's defaults for a config built in code without sections). The other
        sections are read only through ``sections[name]``: on a grpo run nothing reaches SPRO's defaults."""
        from spro.algorithms import registry

        cls = registry.get_algorithm(self.name)
        return self.sections[cls.name] if cls.name in self.sections else cls.Options()


@dataclass
class OptimConfig:
    lr: float = _f(1e-5, help="AdamW peak learning rate (1e-5 to 3e-5 is stable for the tiny model).", check=POSITIVE)
    weight_decay: float = _f(0.0, help="AdamW weight decay.", check=NON_NEGATIVE)
    adam_beta1: float = _f(0.9, help="AdamW beta1.", check=(lambda v: 0 <= v < 1, "in [0, 1)"))
    adam_beta2: float = _f(0.99, help="AdamW beta2.", check=(lambda v: 0 <= v < 1, "in [0, 1)"))
    adam_eps: float = _f(1e-8, help="AdamW epsilon.", check=NON_NEGATIVE)
    scheduler: str = _f(
        "constant_with_warmup",
        help="Learning-rate schedule, a transformers.get_scheduler name: constant, constant_with_warmup, linear, "
        "cosine, cosine_with_restarts, polynomial, inverse_sqrt (warmup: optim.warmup_steps; the decay runs over "
        "all the run's optimizer steps).",
        choices=SCHEDULERS,
    )
    warmup_steps: int = _f(0, help="Optimizer steps of linear LR warmup.", check=NON_NEGATIVE)
    max_grad_norm: float = _f(1.0, help="Clip the global gradient norm to this (0 = no clipping).", check=NON_NEGATIVE)


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
        check=AT_LEAST_1,
    )
    log_completions: int = _f(
        0,
        help="Every step, write this many sample completions to completions.jsonl and to TensorBoard as a text "
        "table (tag 'completions') (0 = none).",
        check=NON_NEGATIVE,
    )
    diagnostics: bool = _f(
        True,
        help="Log the process-reward diagnostics every step (spro.trainer.diagnostics): diag/<signal>/first_error_* "
        "on tasks with a step checker (does SPRO's self-guided reward, its MSA, PRIME's PRM or the advantage "
        "locate the first wrong step of wrong responses?) and drift/* (share of the advantage from groups "
        "without outcome variance; correlation of the process term with the log-ratio to the reference).",
    )
    probe: ProbeOptions = _f(
        help="The process probe (spro.algorithms.probes): SPRO's self-guided reward measured on runs whose algorithm "
        "has none of its own, for process/*, diag/self_reward, diag/msa and drift/* (a spro run logs its own).",
        factory=ProbeOptions,
    )


@dataclass
class TrainConfig:
    seed: int = _f(0, help="Seed for data order, sampling and initialisation.", check=SEED)
    output_dir: str = _f("runs/spro", help="Run folder: metrics.jsonl, eval.jsonl, checkpoints/.")
    total_steps: int = _f(100, help="Training steps (one rollout batch each).", check=AT_LEAST_1)
    eval_every: int = _f(0, help="Evaluate every N steps, and at the end (0 = only at the end; -1 = never).",
                         check=(lambda v: v >= -1, ">= -1"))
    eval_at_start: bool = _f(False, help="Also evaluate before the first step (step 0).")
    save_every: int = _f(0, help="Checkpoint every N steps (0 = only at the end).", check=NON_NEGATIVE)
    keep_last: int = _f(2, help="Keep the last K checkpoints (older ones are deleted).", check=AT_LEAST_1)
    device: str = _f(
        "auto", help="'auto' (what accelerate picks: a GPU when torch sees one), 'cpu', or 'cuda' (an error when "
        "torch sees no CUDA GPU, instead of training on the CPU).", choices=("auto", "cpu", "cuda")
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
