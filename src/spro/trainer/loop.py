"""The RL trainer for Hugging Face causal LMs: SPRO, GRPO, Dr. GRPO, RLOO (and PRIME with a PRM).

One training step (:meth:`Trainer.train_step`):

1. rollout   - ``prompts_per_step`` prompts, G responses each (``spro.rollout``); with several
               processes the prompts are sharded and every group is generated on one process,
               so group statistics (and hence advantages) equal the single-process ones;
2. score     - reward functions ``fn(prompts, completions, **columns)`` (TRL's convention),
               weighted sum of the non-None values; exceptions and None are counted;
3. log-probs - one batched no-grad pass of the sampling policy (pi_old, also giving the
               entropy) and one of the frozen reference (pi_ref); both computed once and reused
               by the advantage (SPRO's process reward beta * (log pi_old - log pi_ref) costs
               no extra pass), the PPO ratio, the KL term and the metrics;
4. advantages from ``spro.algorithms.core.get_estimator(algorithm.name)``;
5. PPO update - ``ppo_epochs`` passes over mini-batches, gradient accumulation, clipping,
               AdamW, LR warmup and schedule (``transformers.get_scheduler``), loss from
               ``spro.algorithms.losses.policy_loss``;
6. metrics (metrics.jsonl, TensorBoard, W&B), periodic greedy evaluation (eval.jsonl) and
   atomic checkpoints (``spro.trainer.checkpoint``).

PRIME (``algorithm.name=prime``): the trainer builds an implicit PRM from the starting policy
(``spro.algorithms.prime.PRMStage`` over ``spro.algorithms.prime.ImplicitPRM``, settings ``algorithm.prm_*``), or uses the
``prm`` argument: any object with ``compute_logp(batch: RolloutBatch) -> [B, T]`` (log-probs
of the response tokens under the implicit PRM, no grad) and ``update(batch: RolloutBatch,
labels: [B]) -> dict[str, float]`` (one training step of the PRM on the 0/1 correctness labels,
returning metrics logged as ``prm/*``; if it accepts a ``ref_logp`` keyword it gets the
reference log-probs [B, T] the trainer already computed), optionally ``save(folder)`` /
``load(folder)`` for checkpoints (``checkpoint/prm/``). Each PRIME step, in PRIME's order
(verl ``recipe/prime``): score, drop the prompts whose group accuracy is outside
``[prime_filter_low, prime_filter_high]`` (``prime_filter``), policy and reference log-probs,
``update`` then ``compute_logp`` (``prm_update=before``, PRIME's default; ``after`` computes the
rewards first), PRIME advantages, policy update on the kept prompts. Its time is ``time/prm``.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import math
import resource
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Protocol, runtime_checkable

import numpy as np
import torch

from spro.trainer import checkpoint as ckpt_lib
from spro.algorithms.core import cumulative_process_reward, get_estimator, masked_step_advantage
from spro.config import ConfigError, TrainConfig, config_from_dict, diff_configs, to_dict
from spro.algorithms.losses import entropy_from_logits, kl_penalty, policy_loss
from spro.data.prompts import render_prompt
from spro.rollout import RolloutBatch, _cache_kw, make_backend

METRIC_KEYS = (
    "step", "time", "reward/mean", "reward/std", "accuracy", "groups/zero_variance_frac",
    "entropy", "length/mean", "length/min", "length/max", "length/truncated_frac",
    "clip/low_frac", "clip/high_frac", "kl", "process/cpr_final_mean", "process/cpr_final_std",
    "process/msa_abs_mean", "perf/tokens_per_sec", "time/rollout", "time/logprob",
    "time/update", "time/step", "memory/peak_mb", "loss", "lr", "grad_norm",
)
# extra keys of PRIME steps (algorithm.name=prime)
PRIME_METRIC_KEYS = ("time/prm", "prime/filtered_frac", "prime/skipped")
EVAL_KEYS = ("step", "time", "eval/accuracy", "eval/length_mean", "eval/n")


class RewardFunctionError(ValueError):
    """A reward function returned something unusable (or failed on every response)."""


class TrainingDivergedError(RuntimeError):
    """Non-finite log-probs, loss or gradients: training stopped, the last checkpoint kept."""


@runtime_checkable
class ProcessRewardModel(Protocol):
    """The hook PRIME's implicit PRM implements (see the module docstring)."""

    def compute_logp(self, batch: RolloutBatch) -> torch.Tensor: ...

    def update(self, batch: RolloutBatch, labels: torch.Tensor) -> dict[str, float]: ...


# ------------------------------------------------------------------------------------------------
# models


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16, "auto": "auto"}


def load_model(name: str, *, dtype: str = "float32", tiny_seed: int = 0, tokenizer: str | None = None) -> tuple[Any, Any]:
    """``(model, tokenizer)`` for a ModelConfig.name_or_path (see its help)."""
    torch_dtype = _DTYPES[dtype]
    if name == "tiny":
        from spro.models.tiny import build_char_tokenizer, build_tiny_model

        tok = build_char_tokenizer()
        model = build_tiny_model(tok, seed=tiny_seed)
        if torch_dtype not in ("auto", torch.float32):
            model = model.to(torch_dtype)
    else:
        if name.startswith("warmstart:"):
            from spro.models.warmstart import warm_start

            path = warm_start(preset=name.split(":", 1)[1])
        else:
            path = Path(name)
        if Path(path).exists():
            from spro.models.loading import load_model_and_tokenizer

            model, tok = load_model_and_tokenizer(path, dtype=torch_dtype)
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
        from spro.models.loading import load_tokenizer

        tok = load_tokenizer(tokenizer)
    return model, tok


def _groups_share_prompts(batch: RolloutBatch, G: int) -> bool:
    B = batch.prompt_ids.shape[0]
    if G < 2 or B % G:
        return False
    first = batch.prompt_ids[::G].repeat_interleave(G, 0)
    return torch.equal(first, batch.prompt_ids) and torch.equal(batch.prompt_mask[::G].repeat_interleave(G, 0), batch.prompt_mask)


def sequence_logps(
    model: Any,
    batch: RolloutBatch,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = True,
    idx: torch.Tensor | None = None,
    group_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the response tokens (and per-token entropies) in one forward pass.

    The prompt (left padded) and response (right padded) are concatenated; position ids follow
    the attention mask as in ``generate``. Logits are divided by ``temperature`` (the sampling
    distribution). Only the response positions' logits are computed (``logits_to_keep``).
    Returns ``(logp [b, T], entropy [b, T] or None)`` for the rows ``idx`` (default: all).
    Gradients flow when called outside ``torch.no_grad()`` (to the entropy only if
    ``entropy_grad``).

    Prefix sharing: with ``group_size=G`` (and ``idx`` None), when every run of G consecutive
    rows has the same prompt, each prompt is run once, its KV cache repeated G times, and only
    the responses run on top of it; the result equals the plain pass up to float rounding
    (gradients included) and saves the prompt's share of the compute G-1 times.
    """
    if idx is None and group_size and _groups_share_prompts(batch, group_size):
        return _shared_prefix_logps(model, batch, group_size, temperature, with_entropy, entropy_grad)
    p_ids, p_mask, c_ids, c_mask = batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask
    if idx is not None:
        p_ids, p_mask, c_ids, c_mask = p_ids[idx], p_mask[idx], c_ids[idx], c_mask[idx]
    T = c_ids.shape[1]
    input_ids = torch.cat([p_ids, c_ids], dim=1)
    attn = torch.cat([p_mask, c_mask], dim=1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=input_ids, attention_mask=attn, position_ids=pos, logits_to_keep=T + 1, use_cache=False)
    return _token_logps(out.logits[:, :-1, :], c_ids, temperature, with_entropy, entropy_grad)


def _token_logps(logits: torch.Tensor, c_ids: torch.Tensor, temperature: float, with_entropy: bool,
                 entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logits [B, T, V] predicting c_ids [B, T] -> (logp [B, T], entropy [B, T] or None)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = logits.gather(-1, c_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    ent = None
    if with_entropy:
        if entropy_grad:
            ent = entropy_from_logits(logits)
        else:
            with torch.no_grad():
                ent = entropy_from_logits(logits.detach())
    return logp, ent


def _shared_prefix_logps(model: Any, batch: RolloutBatch, G: int, temperature: float, with_entropy: bool,
                         entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    p_ids, p_mask = batch.prompt_ids[::G], batch.prompt_mask[::G]
    P = p_ids.shape[1]
    c_ids, c_mask = batch.completion_ids, batch.completion_mask
    kw = _cache_kw(model)
    out = model(input_ids=p_ids, attention_mask=p_mask, position_ids=(p_mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True, logits_to_keep=1)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    cache.batch_repeat_interleave(G)
    attn = torch.cat([batch.prompt_mask, c_mask], dim=1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)[:, P:]
    out2 = model(input_ids=c_ids, attention_mask=attn, position_ids=pos, use_cache=True, **{kw: cache})
    logits = torch.cat([out.logits[:, -1:, :].repeat_interleave(G, 0), out2.logits[:, :-1, :]], dim=1)
    return _token_logps(logits, c_ids, temperature, with_entropy, entropy_grad)


# ------------------------------------------------------------------------------------------------
# data


@dataclass
class RewardFn:
    name: str
    fn: Callable[..., Any]
    weight: float


def resolve_reward(name: str, overrides: dict[str, Callable] | None = None) -> Callable[..., Any]:
    """A reward function: ``overrides[name]`` if given, else ``spro.rewards.get_reward(name)``
    (a registered name or a ``module:function`` import path)."""
    if overrides and name in overrides:
        return overrides[name]
    from spro.rewards import get_reward

    try:
        return get_reward(name)
    except ValueError as e:
        raise ConfigError(f"data.rewards: {e}") from None


def load_datasets(cfg: TrainConfig) -> tuple[Any, Any]:
    """(train, eval) datasets with at least a 'prompt' column."""
    d = cfg.data
    if d.task is not None:
        from spro.data.tasks import get_task

        task = get_task(d.task, **d.task_kwargs)
        train = task.split(d.split, n=d.train_size)
        evals = task.split(d.eval_split, n=d.eval_size or None) if cfg.eval_every >= 0 else None
        return train, evals
    from spro.data import load_prompt_dataset

    kw = dict(schema=d.schema, column_map=d.column_map, prompt_template=d.prompt_template)
    train = load_prompt_dataset(d.source, split=d.split, **kw)
    if d.train_size:
        train = train.select(range(min(d.train_size, len(train))))
    evals = None
    if cfg.eval_every >= 0:
        evals = load_prompt_dataset(d.eval_source or d.source, split=d.eval_split, **kw)
        if d.eval_size:
            evals = evals.select(range(min(d.eval_size, len(evals))))
    return train, evals


def prompt_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The order of the n training prompts in ``epoch`` (seeded, independent of global RNG)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


# ------------------------------------------------------------------------------------------------
# logging


class RunLogger:
    """metrics.jsonl / eval.jsonl always; TensorBoard and W&B when configured; main process only."""

    def __init__(self, cfg: TrainConfig, out: Path, *, enabled: bool, resume_step: int | None) -> None:
        self.enabled = enabled
        self.out = out
        self.tb = None
        self.wandb = None
        if not enabled:
            return
        out.mkdir(parents=True, exist_ok=True)
        for name in ("metrics.jsonl", "eval.jsonl", "completions.jsonl"):
            path = out / name
            if resume_step is None:
                path.unlink(missing_ok=True)
            elif path.exists():  # drop what the interrupted run logged after the checkpoint
                keep = [l for l in path.read_text().splitlines() if l.strip() and json.loads(l)["step"] <= resume_step]
                path.write_text("".join(k + "\n" for k in keep))
        self.metrics_f = open(out / "metrics.jsonl", "a")
        self.eval_f = open(out / "eval.jsonl", "a")
        self.comp_f = open(out / "completions.jsonl", "a") if cfg.logging.log_completions else None
        if cfg.logging.tensorboard:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"))
        if cfg.logging.wandb:
            try:
                import wandb
            except ImportError:
                raise ConfigError("logging.wandb=true needs the wandb package: pip install 'spro[wandb]'") from None
            self.wandb = wandb.init(
                project=cfg.logging.wandb_project, name=cfg.logging.wandb_run_name or out.name,
                config=to_dict(cfg), resume="allow",
            )

    def _write(self, f: Any, record: dict) -> None:
        f.write(json.dumps(record) + "\n")
        f.flush()
        step = record["step"]
        for k, v in record.items():
            if k == "step" or v is None or not isinstance(v, (int, float)):
                continue
            if self.tb is not None:
                self.tb.add_scalar(k, v, step)
        if self.wandb is not None:
            self.wandb.log({k: v for k, v in record.items() if k != "step"}, step=step)

    def log_metrics(self, record: dict) -> None:
        if self.enabled:
            self._write(self.metrics_f, record)

    def log_eval(self, record: dict) -> None:
        if self.enabled:
            self._write(self.eval_f, record)

    def log_completions(self, step: int, prompts: list[str], completions: list[str], rewards: list[float]) -> None:
        if self.enabled and self.comp_f is not None:
            for p, c, r in zip(prompts, completions, rewards):
                self.comp_f.write(json.dumps({"step": step, "prompt": p, "completion": c, "reward": r}) + "\n")
            self.comp_f.flush()

    def close(self) -> None:
        if not self.enabled:
            return
        for f in (self.metrics_f, self.eval_f, self.comp_f):
            if f is not None:
                f.close()
        if self.tb is not None:
            self.tb.close()
        if self.wandb is not None:
            self.wandb.finish()


def _clean(v: float | None) -> float | None:
    if v is None:
        return None
    v = float(v)
    return v if math.isfinite(v) else None


# ------------------------------------------------------------------------------------------------
# the trainer


class Trainer:
    """Holds models, data, optimizer and loggers; :meth:`train` runs the loop."""

    def __init__(
        self,
        config: TrainConfig | None,
        *,
        resume: str | Path | None = None,
        prm: Any = None,
        reward_funcs: dict[str, Callable] | None = None,
        accelerator: Any = None,
    ) -> None:
        from accelerate import Accelerator

        self.resume_ckpt = ckpt_lib.find_checkpoint(resume) if resume else None
        if self.resume_ckpt is not None:
            saved = ckpt_lib.read_run_config(self.resume_ckpt)
            if config is None:
                config = config_from_dict(saved)
            diffs = diff_configs(saved, to_dict(config))
            if diffs:
                fs, fn = _flat(saved), _flat(to_dict(config))
                detail = "; ".join(f"{k}: {fs.get(k)!r} (checkpoint) vs {fn.get(k)!r} (now)" for k in diffs[:10])
                raise ckpt_lib.CheckpointError(
                    f"--resume {resume}: the checkpoint was made with a different config; differing keys: {detail}"
                )
        if config is None:
            raise ConfigError("train() needs a TrainConfig (or resume= a checkpoint)")
        self.cfg = cfg = config
        self.acc = accelerator or Accelerator(cpu=cfg.device == "cpu")
        self.rank, self.world = self.acc.process_index, self.acc.num_processes
        self.is_main = self.acc.is_main_process
        self.out = Path(cfg.output_dir)
        self.prm = prm
        a, r = cfg.algorithm, cfg.rollout

        if r.prompts_per_step % self.world:
            raise ConfigError(
                f"rollout.prompts_per_step ({r.prompts_per_step}) must be divisible by the number of "
                f"processes ({self.world}) so that every group stays on one process"
            )
        self.local_prompts = r.prompts_per_step // self.world
        self.local_batch = self.local_prompts * r.num_generations
        self.mini = a.mini_batch_size or self.local_batch
        if self.local_batch % self.mini:
            raise ConfigError(
                f"algorithm.mini_batch_size ({a.mini_batch_size}) must divide the per-process batch "
                f"({self.local_batch} responses)"
            )
        self.micro = self.mini // a.grad_accum_steps
        # one optimizer step per batch: the training forward pass doubles as the pi_old pass
        self.on_policy = a.ppo_epochs == 1 and self.mini == self.local_batch and a.grad_accum_steps == 1
        self.estimator = get_estimator(a.name)
        self.needs_ref = cfg.model.use_reference or a.name in ("spro", "prime") or a.kl_coef > 0
        self.loss_agg = "seq-mean-token-sum-norm" if a.name == "dr_grpo" else a.loss_agg
        if a.name == "prime" and a.prime_filter and self.world > 1:
            raise ConfigError(
                "algorithm.prime_filter=true is not supported with several processes (each would "
                "drop a different number of prompts); set algorithm.prime_filter=false"
            )

        # models (the reference is the starting policy, also when resuming)
        m = cfg.model
        policy_src = str(self.resume_ckpt) if self.resume_ckpt else m.name_or_path
        self.model, self.tok = load_model(policy_src, dtype=m.dtype, tiny_seed=m.tiny_seed, tokenizer=m.tokenizer)
        self.ref = None
        if self.needs_ref:
            if m.ref_model is None and self.resume_ckpt is None:
                self.ref = copy.deepcopy(self.model)
            else:
                self.ref, _ = load_model(m.ref_model or m.name_or_path, dtype=m.dtype, tiny_seed=m.tiny_seed)
            self.ref.requires_grad_(False).eval().to(self.acc.device)
        if m.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        # prompt-prefix sharing needs a KV cache in the training forward (not with checkpointing)
        self.share_group = r.num_generations if (m.share_prompt_prefix and not m.gradient_checkpointing) else None
        self.model.to(self.acc.device).train()
        if a.name == "prime" and self.prm is None:
            self.prm = self._build_prm()
        self._prm_takes_ref = self.prm is not None and _accepts_keyword(self.prm.update, "ref_logp")

        # data and rewards
        self.train_ds, self.eval_ds = load_datasets(cfg)
        self.train_prompts = [render_prompt(self.tok, p) for p in self.train_ds["prompt"]]
        self.train_ds, self.train_prompts = self._check_lengths(self.train_ds, self.train_prompts, "train")
        if self.eval_ds is not None:
            self.eval_ds, _ = self._check_lengths(
                self.eval_ds, [render_prompt(self.tok, p) for p in self.eval_ds["prompt"]], cfg.data.eval_split
            )
        if len(self.train_ds) == 0:
            raise ConfigError("the training set is empty")
        self.columns = [c for c in self.train_ds.column_names if c != "prompt"]
        self.rewards = [RewardFn(s.name, resolve_reward(s.name, reward_funcs), s.weight) for s in cfg.data.rewards]
        acc_name = cfg.data.accuracy_reward or self.rewards[0].name
        self.acc_index = [rf.name for rf in self.rewards].index(acc_name)

        # optimizer and schedule
        from transformers import get_scheduler

        o = cfg.optim
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad], lr=o.lr,
            betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_eps, weight_decay=o.weight_decay,
        )
        self.opt_steps_per_step = a.ppo_epochs * (self.local_batch // self.mini)
        self.scheduler = get_scheduler(
            o.scheduler, self.optimizer, num_warmup_steps=o.warmup_steps,
            num_training_steps=cfg.total_steps * self.opt_steps_per_step,
        )
        self.ddp_model = self.acc.prepare(self.model)
        self.backend = make_backend(r.backend, self.model, self.tok, r, share_prompt_prefix=m.share_prompt_prefix)

        self.step = 0
        self.elapsed = 0.0
        self.last_ckpt: Path | None = None
        if self.resume_ckpt is not None:
            ckpt_lib.load_training_state(self.resume_ckpt, self.optimizer, self.scheduler)
            state = ckpt_lib.read_trainer_state(self.resume_ckpt)
            self.step, self.elapsed = int(state["step"]), float(state["time"])
            self.last_ckpt = self.resume_ckpt
            if self.prm is not None and hasattr(self.prm, "load") and (self.resume_ckpt / "prm").is_dir():
                self.prm.load(self.resume_ckpt / "prm")
            ckpt_lib.load_rng_state(self.resume_ckpt, self.rank, self.world)
        else:
            from transformers import set_seed

            set_seed(cfg.seed * 1000 + self.rank)
        self.logger = RunLogger(cfg, self.out, enabled=self.is_main, resume_step=self.step if self.resume_ckpt else None)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.yaml").write_text(__import__("yaml").safe_dump(to_dict(cfg), sort_keys=False))

    # -------------------------------------------------------------------------------- helpers

    def _build_prm(self) -> Any:
        """PRIME's implicit PRM: a trainable copy of the starting policy (the reference model)."""
        from spro.algorithms.prime import ImplicitPRM, PRMStage

        a = self.cfg.algorithm
        prm = ImplicitPRM(
            self.ref, beta=a.prm_beta, lr=a.prm_lr or 2 * self.cfg.optim.lr, weight_decay=self.cfg.optim.weight_decay,
            adam_betas=(self.cfg.optim.adam_beta1, self.cfg.optim.adam_beta2), adam_eps=self.cfg.optim.adam_eps,
            max_grad_norm=a.prm_max_grad_norm or None, temperature=self.cfg.rollout.temperature,
        )
        if self.cfg.model.gradient_checkpointing:
            prm.model.gradient_checkpointing_enable()
        return PRMStage(prm, temperature=self.cfg.rollout.temperature, group_size=self.share_group,
                        micro_batch=a.prm_micro_batch or None,
                        grad_reducer=self._reduce_prm_grads if self.world > 1 else None)

    def _reduce_prm_grads(self, params: list[torch.Tensor], n_rows: int) -> None:
        """Average the PRM's gradients over processes, weighted by their number of responses."""
        total = float(self.acc.reduce(torch.tensor(float(n_rows), device=self.acc.device), "sum"))
        for p in params:
            p.grad.mul_(n_rows / max(total, 1.0))
            p.grad.copy_(self.acc.reduce(p.grad, "sum"))

    def _check_lengths(self, ds: Any, prompts: list[str], split: str) -> tuple[Any, list[str]]:
        ctx = getattr(self.model.config, "max_position_embeddings", None)
        if not ctx:
            return ds, prompts
        lens = [len(x) for x in self.tok(prompts, add_special_tokens=False)["input_ids"]]
        room = ctx - self.cfg.rollout.max_new_tokens
        bad = [i for i, n in enumerate(lens) if n > room]
        if not bad:
            return ds, prompts
        if self.cfg.data.long_prompts == "error":
            i = bad[0]
            raise ConfigError(
                f"data ({split} split), row {i}: the prompt has {lens[i]} tokens, and with "
                f"rollout.max_new_tokens={self.cfg.rollout.max_new_tokens} that exceeds the model's "
                f"context of {ctx} tokens ({len(bad)} such prompt(s)); shorten them, lower "
                f"max_new_tokens or set data.long_prompts=drop"
            )
        warnings.warn(f"dropping {len(bad)} {split} prompt(s) longer than the context allows")
        keep = sorted(set(range(len(prompts))) - set(bad))
        return ds.select(keep), [prompts[i] for i in keep]

    def _step_rows(self, step: int) -> list[int]:
        """Dataset indices of this process's prompts at ``step`` (1-based)."""
        n, P = len(self.train_ds), self.cfg.rollout.prompts_per_step
        start = (step - 1) * P + self.rank * self.local_prompts
        out = []
        for pos in range(start, start + self.local_prompts):
            epoch, i = divmod(pos, n)
            out.append(int(prompt_order(n, self.cfg.seed, epoch, self.cfg.data.shuffle)[i]))
        return out

    def score(self, rows: list[int], completions: list[str]) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """Weighted rewards [B], correctness [B] (bool) and counters of errors / None values."""
        G = self.cfg.rollout.num_generations
        sub = self.train_ds.select(rows) if rows is not None else None
        prompts = [p for p in sub["prompt"] for _ in range(G)]
        columns = {c: [v for v in sub[c] for _ in range(G)] for c in self.columns}
        return self._score(prompts, completions, columns)

    def _score(self, prompts: list, completions: list[str], columns: dict) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        B = len(completions)
        total = torch.zeros(B, dtype=torch.float64)
        any_value = torch.zeros(B, dtype=torch.bool)
        correct = torch.zeros(B, dtype=torch.bool)
        errors = nones = 0
        for k, rf in enumerate(self.rewards):
            values, n_err = self._call_reward(rf, prompts, completions, columns)
            errors += n_err
            for i, v in enumerate(values):
                if v is None:
                    nones += 1
                    continue
                total[i] += rf.weight * v
                any_value[i] = True
                if k == self.acc_index:
                    correct[i] = v >= self.cfg.data.correct_threshold
        from spro.rewards import pop_reward_stats

        stats = {"reward/errors": float(errors), "reward/none_frac": nones / (B * len(self.rewards))}
        stats.update({f"reward/{k}": float(v) for k, v in pop_reward_stats().items()})
        return total.float(), correct, stats

    def _call_reward(self, rf: RewardFn, prompts: list, completions: list[str], columns: dict) -> tuple[list[float | None], int]:
        """Values of one reward (checked by spro.rewards.call_reward) and the number of errors.

        A function that raises on the batch is called again response by response; responses on
        which it still raises get None and are counted. Raising on every response, or returning
        a wrong type / count / NaN, stops training with a RewardError naming the function.
        """
        from spro.rewards import RewardError, call_reward

        B = len(completions)
        try:
            return call_reward(rf.fn, prompts, completions, **columns), 0
        except RewardError as batch_exc:
            first_error = str(batch_exc)
            raised = batch_exc.__cause__ is not None and not isinstance(batch_exc.__cause__, RewardError)
            if not raised:
                raise RewardFunctionError(f"data.rewards '{rf.name}': {batch_exc}") from None
        values: list[float | None] = []
        errors = 0
        for i in range(B):
            try:
                values.append(call_reward(rf.fn, prompts[i : i + 1], completions[i : i + 1],
                                          **{c: col[i : i + 1] for c, col in columns.items()})[0])
            except RewardError as e:
                if e.__cause__ is None or isinstance(e.__cause__, RewardError):
                    raise RewardFunctionError(f"data.rewards '{rf.name}': {e}") from None
                values.append(None)
                errors += 1
        if errors == B:
            raise RewardFunctionError(f"data.rewards '{rf.name}' raised on every response: {first_error}")
        return values, errors

    def _diverged(self, what: str) -> TrainingDivergedError:
        where = f"the last good checkpoint is {self.last_ckpt}" if self.last_ckpt else "no checkpoint was saved yet"
        return TrainingDivergedError(
            f"step {self.step + 1}: non-finite values in {what}; training stopped ({where}). "
            f"Try a lower optim.lr or a smaller algorithm.beta."
        )

    def _logps_no_grad(self, model: Any, batch: RolloutBatch, *, with_entropy: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        B = len(batch)
        chunk = self.micro if self.cfg.algorithm.grad_accum_steps > 1 else B
        lps, ents = [], []
        with torch.no_grad():
            for s in range(0, B, chunk):
                idx = torch.arange(s, min(B, s + chunk), device=batch.completion_ids.device)
                lp, ent = sequence_logps(model, batch, temperature=self.cfg.rollout.temperature, with_entropy=with_entropy,
                                         idx=None if chunk >= B else idx, group_size=self.share_group)
                lps.append(lp)
                ents.append(ent)
        return torch.cat(lps), (torch.cat(ents) if with_entropy else None)

    # ------------------------------------------------------------------------------ one step

    def train_step(self) -> dict[str, Any]:
        cfg, a, G = self.cfg, self.cfg.algorithm, self.cfg.rollout.num_generations
        step = self.step + 1
        t_step = time.perf_counter()

        # 1. rollout
        rows = self._step_rows(step)
        t0 = time.perf_counter()
        batch = self.backend.generate([self.train_prompts[i] for i in rows], G)
        t_rollout = time.perf_counter() - t0
        mask = batch.completion_mask

        # 2. score
        rewards, correct, reward_stats = self.score(rows, batch.completions)
        rewards = rewards.to(mask.device)

        # 3. log-probs of the sampling policy and the reference, once per batch. With one
        #    optimizer step per batch (on-policy) the training forward pass itself gives
        #    log pi_old (= its detached values), so no separate no-grad policy pass is run.
        t0 = time.perf_counter()
        ref_logp = self._logps_no_grad(self.ref, batch, with_entropy=False)[0] if self.ref is not None else None
        fused = None
        if self.on_policy:
            logp, ent = sequence_logps(self.ddp_model, batch, temperature=self.cfg.rollout.temperature,
                                       with_entropy=True, entropy_grad=a.entropy_coef > 0, group_size=self.share_group)
            fused = (logp, ent if a.entropy_coef > 0 else None)
            old_logp, entropy = logp.detach(), ent.detach()
        else:
            old_logp, entropy = self._logps_no_grad(self.model, batch, with_entropy=True)
        mb = mask.bool()
        if not torch.isfinite(old_logp[mb]).all():
            raise self._diverged("the sampling policy's log-probs")
        if ref_logp is not None and not torch.isfinite(ref_logp[mb]).all():
            raise self._diverged("the reference model's log-probs")
        t_logprob = time.perf_counter() - t0
        prime = a.name == "prime"
        prm_logp, prm_metrics, skip = None, {}, False
        # PRIME's accuracy filter: only the kept prompts train the PRM and the policy (the metrics
        # below still describe the whole batch)
        ub, u_rewards, u_old, u_ref, u_fused = batch, rewards, old_logp, ref_logp, fused
        if prime:
            keep = torch.ones(len(batch), dtype=torch.bool, device=mask.device)
            if a.prime_filter:
                from spro.algorithms.prime import filter_groups_by_accuracy

                keep = filter_groups_by_accuracy(correct.float(), batch.group_ids.cpu(), a.prime_filter_low,
                                                 a.prime_filter_high).to(mask.device)
            prm_metrics["prime/filtered_frac"] = 1.0 - float(keep.float().mean())
            skip = not bool(keep.any())
            if not skip and not bool(keep.all()):
                kidx = keep.nonzero().squeeze(1)
                ub, u_rewards, u_old, u_ref = batch.select(kidx), rewards[kidx], old_logp[kidx], ref_logp[kidx]
                if fused is not None:
                    u_fused = (fused[0][kidx], fused[1][kidx] if fused[1] is not None else None)
            prm_metrics["prime/skipped"] = float(skip)

        # PRIME's implicit PRM: its update and its process rewards (timed as time/prm)
        t0 = time.perf_counter()
        if self.prm is not None and prime and not skip:
            labels = correct.float().to(mask.device)[keep]
            kw = {"ref_logp": u_ref} if self._prm_takes_ref else {}
            if a.prm_update == "after":
                prm_logp = self.prm.compute_logp(ub)
            prm_metrics.update({f"prm/{k}": v for k, v in (self.prm.update(ub, labels, **kw) or {}).items()})
            if a.prm_update == "before":
                prm_logp = self.prm.compute_logp(ub)
        t_prm = time.perf_counter() - t0

        if skip:  # every prompt filtered out: no PRM or policy update this step
            adv = None
            upd = {"lr": self.scheduler.get_last_lr()[0], "grad_norm": None}
            t_update = 0.0
        else:
            # 4. advantages
            adv = self.estimator(
                rewards=u_rewards, mask=ub.completion_mask, group_ids=ub.group_ids, logp=u_old,
                ref_logp=u_ref, prm_logp=prm_logp, **self._estimator_options(),
            ).to(old_logp.dtype)

            # 5. PPO update
            t0 = time.perf_counter()
            upd = self.ppo_update(ub, u_old, u_ref, adv, step, fused=u_fused)
            t_update = time.perf_counter() - t0

        # 6. metrics (reduced over processes)
        t_total = time.perf_counter() - t_step
        self.elapsed += t_total
        metrics = self._metrics(step, batch, rewards, correct, old_logp, ref_logp, entropy, upd,
                                t_rollout, t_logprob, t_update, t_total)
        metrics.update(reward_stats)
        if prime:
            metrics["time/prm"] = t_prm
            if skip:
                metrics.update({"loss": None, "clip/low_frac": None, "clip/high_frac": None})
        metrics.update(prm_metrics)
        self.logger.log_completions(step, batch.prompts[: cfg.logging.log_completions],
                                    batch.completions[: cfg.logging.log_completions], rewards.tolist()[: cfg.logging.log_completions])
        self.step = step
        return metrics

    def _estimator_options(self) -> dict[str, Any]:
        a = self.cfg.algorithm
        if a.name == "spro":
            return dict(beta=a.beta, outcome_scale=a.outcome_scale, msa_scale_std=a.msa_scale_std, eps=a.eps,
                        process_reward=a.process_reward, baseline=a.baseline, process_only=a.process_only)
        if a.name == "grpo":
            return dict(scale=a.outcome_scale, eps=a.eps)
        if a.name == "prime":
            return dict(beta=a.prm_beta, outcome_coef=a.prime_outcome_coef, process_coef=a.prime_process_coef)
        return {}

    def ppo_update(self, batch: RolloutBatch, old_logp: torch.Tensor, ref_logp: torch.Tensor | None,
                   adv: torch.Tensor, step: int, fused: tuple | None = None) -> dict[str, float]:
        """PPO epochs over mini-batches with gradient accumulation; one optimizer step per mini-batch.

        ``fused``: ``(logp, entropy)`` of the whole batch from a forward pass that still holds
        its graph (the on-policy case: one epoch, one mini-batch, no accumulation), reused
        instead of a second forward pass.
        """
        cfg, a = self.cfg, self.cfg.algorithm
        B, accum = len(batch), a.grad_accum_steps
        mask = batch.completion_mask
        params = [p for p in self.model.parameters() if p.requires_grad]
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        sums: dict[str, float] = {}
        n_micro = 0
        grad_norms, lrs = [], []
        for epoch in range(a.ppo_epochs):
            order = torch.arange(B) if epoch == 0 else torch.randperm(B, generator=gen)
            order = order.to(mask.device)
            for s in range(0, B, self.mini):
                mb_idx = order[s : s + self.mini]
                lrs.append(self.scheduler.get_last_lr()[0])
                for k in range(accum):
                    idx = mb_idx[k * self.micro : (k + 1) * self.micro]
                    if idx.numel() == 0:  # a short batch (PRIME's filter kept fewer responses)
                        continue
                    sync = contextlib.nullcontext() if k == accum - 1 else self.acc.no_sync(self.ddp_model)
                    with sync:
                        if fused is not None:
                            logp, ent = fused
                        else:
                            logp, ent = sequence_logps(self.ddp_model, batch, temperature=cfg.rollout.temperature,
                                                       with_entropy=a.entropy_coef > 0, idx=idx)
                        if not torch.isfinite(logp[mask[idx].bool()]).all():
                            raise self._diverged("the policy's log-probs during the update")
                        loss, m = policy_loss(
                            logp, old_logp[idx], adv[idx], mask[idx],
                            clip_eps_low=a.clip_eps_low, clip_eps_high=a.clip_eps_high, agg=self.loss_agg,
                            max_completion_length=cfg.rollout.max_new_tokens,
                            ref_logp=ref_logp[idx] if ref_logp is not None else None,
                            kl_coef=a.kl_coef, kl_estimator=a.kl_estimator,
                            entropy=ent, entropy_coef=a.entropy_coef,
                        )
                        if not torch.isfinite(loss):
                            raise self._diverged("the loss")
                        self.acc.backward(loss / accum)
                    m["loss"] = float(loss.detach())
                    for key, v in m.items():
                        sums[key] = sums.get(key, 0.0) + v
                    n_micro += 1
                if cfg.optim.max_grad_norm > 0:
                    gn = self.acc.clip_grad_norm_(params, cfg.optim.max_grad_norm)
                else:
                    gn = torch.norm(torch.stack([p.grad.detach().norm() for p in params if p.grad is not None]))
                gn = float(gn)
                if not math.isfinite(gn):
                    raise self._diverged("the gradients")
                grad_norms.append(gn)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
        out = {k: v / n_micro for k, v in sums.items()}
        out["grad_norm"] = float(np.mean(grad_norms))
        out["lr"] = float(lrs[0])
        return out

    def _metrics(self, step, batch, rewards, correct, old_logp, ref_logp, entropy, upd,
                 t_rollout, t_logprob, t_update, t_total) -> dict[str, Any]:
        a, G = self.cfg.algorithm, self.cfg.rollout.num_generations
        acc = self.acc
        mask = batch.completion_mask
        mbool = mask.bool()
        dev = mask.device
        lengths = batch.lengths.float()
        # per-response vectors gathered from every process (same values as one process would see)
        per_resp = torch.stack([rewards.float(), correct.float(), lengths, batch.truncated.float()], 1)
        tok_sums = torch.stack([
            mask.sum().float(),
            entropy[mbool].sum().float(),
            kl_penalty(old_logp, ref_logp, a.kl_estimator, mask=mask)[mbool].sum().float() if ref_logp is not None else torch.tensor(0.0, device=dev),
        ])
        cpr_final = msa_abs = None
        if ref_logp is not None:
            cpr = cumulative_process_reward(old_logp, ref_logp, mask, a.beta)
            last = (mask.sum(-1) - 1).clamp(min=0)
            cpr_final = cpr.gather(1, last.unsqueeze(1)).squeeze(1).float()
            msa = masked_step_advantage(cpr, mask, batch.group_ids)
            msa_abs = torch.stack([msa.abs()[mbool].sum().float(), mbool.sum().float()])
        upd_t = torch.tensor([upd.get("loss", 0.0), upd.get("clip/low_frac", 0.0), upd.get("clip/high_frac", 0.0)], device=dev)
        per_resp = acc.gather(per_resp)
        tok_sums = acc.reduce(tok_sums, "sum")
        upd_t = acc.reduce(upd_t, "mean")
        if cpr_final is not None:
            cpr_final = acc.gather(cpr_final)
            msa_abs = acc.reduce(msa_abs, "sum")
        peak = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
                else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        peak = float(acc.gather(torch.tensor([peak], device=dev)).max())  # the largest process
        r, c, L, tr = per_resp.T.cpu()
        groups = r.view(-1, G)
        n_tok = float(tok_sums[0])
        return {
            "step": step,
            "time": self.elapsed,
            "reward/mean": float(r.mean()),
            "reward/std": float(r.std()) if len(r) > 1 else 0.0,
            "accuracy": float(c.mean()),
            "groups/zero_variance_frac": float((groups.max(1).values == groups.min(1).values).float().mean()),
            "entropy": float(tok_sums[1]) / max(n_tok, 1.0),
            "length/mean": float(L.mean()),
            "length/min": float(L.min()),
            "length/max": float(L.max()),
            "length/truncated_frac": float(tr.mean()),
            "clip/low_frac": float(upd_t[1]),
            "clip/high_frac": float(upd_t[2]),
            "kl": float(tok_sums[2]) / max(n_tok, 1.0) if ref_logp is not None else None,
            "process/cpr_final_mean": float(cpr_final.mean()) if cpr_final is not None else None,
            "process/cpr_final_std": float(cpr_final.std()) if cpr_final is not None and len(cpr_final) > 1 else None,
            "process/msa_abs_mean": float(msa_abs[0] / msa_abs[1].clamp(min=1)) if msa_abs is not None else None,
            "perf/tokens_per_sec": n_tok / t_total,
            "time/rollout": t_rollout,
            "time/logprob": t_logprob,
            "time/update": t_update,
            "time/step": t_total,
            "memory/peak_mb": peak,
            "loss": float(upd_t[0]),
            "lr": upd["lr"],
            "grad_norm": upd["grad_norm"],
        }

    # ------------------------------------------------------------------------------ eval, save

    def evaluate(self) -> dict[str, Any]:
        """Greedy pass@1 on the held-out split (sharded over processes)."""
        from spro.experiments.evaluation import generate_completions

        ds = self.eval_ds
        idx = list(range(self.rank, len(ds), self.world))
        sub = ds.select(idx)
        texts, lengths, _ = generate_completions(
            self.model, self.tok, list(sub["prompt"]), max_new_tokens=self.cfg.rollout.max_new_tokens,
            do_sample=False, batch_size=self.cfg.rollout.eval_batch_size,
        )
        comps = [t[0] for t in texts]
        cols = {c: list(sub[c]) for c in sub.column_names if c != "prompt"}
        _, correct, _ = self._score(list(sub["prompt"]), comps, cols) if comps else (None, torch.zeros(0), None)
        dev = self.acc.device
        sums = torch.tensor([float(correct.sum()), float(len(comps)), float(sum(l[0] for l in lengths))], device=dev)
        sums = self.acc.reduce(sums, "sum")
        n = max(float(sums[1]), 1.0)
        return {"step": self.step, "time": self.elapsed, "eval/accuracy": float(sums[0]) / n,
                "eval/length_mean": float(sums[2]) / n, "eval/n": int(sums[1])}

    def save(self) -> Path:
        rng = [ckpt_lib.rng_state()]
        if self.world > 1:
            from accelerate.utils import gather_object

            rng = gather_object(rng)
        path = None
        if self.is_main:
            extra = {}
            if self.prm is not None and hasattr(self.prm, "save"):
                extra["prm"] = self.prm.save
            path = ckpt_lib.save_checkpoint(
                self.out / "checkpoints", self.step, model=self.model, tokenizer=self.tok,
                optimizer=self.optimizer, scheduler=self.scheduler, run_config=to_dict(self.cfg),
                trainer_state={"time": self.elapsed, "data_position": self.step * self.cfg.rollout.prompts_per_step,
                               "num_processes": self.world},
                rng_states=rng, keep_last=self.cfg.keep_last, extra_savers=extra,
            )
        self.acc.wait_for_everyone()
        self.last_ckpt = path or self.out / "checkpoints" / f"step-{self.step:06d}"
        return self.last_ckpt

    # ------------------------------------------------------------------------------ the loop

    def train(self) -> Path:
        cfg = self.cfg
        bar = None
        if self.is_main and cfg.logging.progress_bar:
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.total_steps, initial=self.step, desc=f"{cfg.algorithm.name}", dynamic_ncols=True)
        do_eval = self.eval_ds is not None and cfg.eval_every >= 0
        try:
            if do_eval and cfg.eval_at_start and self.step == 0:
                self.logger.log_eval(self.evaluate())
            while self.step < cfg.total_steps:
                metrics = self.train_step()
                self.logger.log_metrics({k: (_clean(v) if isinstance(v, float) else v) for k, v in metrics.items()})
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", acc=f"{metrics['accuracy']:.2f}",
                                    loss=f"{metrics['loss']:.4f}", len=f"{metrics['length/mean']:.1f}")
                last = self.step == cfg.total_steps
                if do_eval and (last or (cfg.eval_every > 0 and self.step % cfg.eval_every == 0)):
                    ev = self.evaluate()
                    self.logger.log_eval(ev)
                    if bar is not None:
                        bar.write(f"step {self.step}: eval accuracy {ev['eval/accuracy']:.3f} (n={ev['eval/n']})")
                if last or (cfg.save_every > 0 and self.step % cfg.save_every == 0):
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            self.logger.close()
        return self.out


def _accepts_keyword(fn: Callable, name: str) -> bool:
    """Whether ``fn`` can be called with the keyword argument ``name``."""
    import inspect

    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == name and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) or p.kind == p.VAR_KEYWORD
               for p in params)


def _flat(d: dict) -> dict:
    from spro.config import flatten

    return flatten(d)


def train(
    config: TrainConfig | None = None,
    *,
    resume: str | Path | None = None,
    prm: Any = None,
    reward_funcs: dict[str, Callable] | None = None,
) -> Path:
    """Train with ``config`` and return the run folder (``config.output_dir``).

    ``resume``: a run folder or checkpoint to continue from (its saved config is used when
    ``config`` is None; otherwise the two must agree except for the keys in
    ``spro.config.RESUMABLE_DIFFERENCES``). ``prm``: a process reward model for PRIME (see the
    module docstring). ``reward_funcs``: ``{name: fn}`` used instead of looking the reward
    names of ``config.data.rewards`` up in ``spro.rewards``.
    """
    return Trainer(config, resume=resume, prm=prm, reward_funcs=reward_funcs).train()
