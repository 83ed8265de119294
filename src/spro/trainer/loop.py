"""The RL trainer for Hugging Face causal LMs: one loop for every registered algorithm.

One training step (:meth:`Trainer.train_step`):

1. rollout    ``prompts_per_step`` prompts, G responses each (``spro.rollout``); with several
              processes every group is generated on one process, so group statistics equal
              the single-process ones;
2. score      the reward functions (``spro.rewards.scoring.Scorer``);
3. log-probs  one no-grad pass of the frozen reference (when the algorithm or the KL term needs
              it) and one of the sampling policy (pi_old, with the entropy); both are reused by
              the advantage, the PPO ratio, the KL term and the metrics. With one optimizer step
              per batch the training forward pass itself gives pi_old (``fused``);
4. advantages the algorithm's hooks (``select`` the responses that train, ``prepare`` its own
              state) and its estimator (``spro.algorithms``);
5. update     PPO epochs over mini-batches with gradient accumulation (``spro.algorithms.losses``);
6. log        ``spro.trainer.metrics`` plus the algorithm's own metrics, periodic greedy
              evaluation and atomic checkpoints (``spro.trainer.checkpoint``).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from spro.algorithms.losses import policy_loss
from spro.algorithms.registry import AdvantageInputs, TrainerContext, resolve_algorithm
from spro.config import ConfigError, TrainConfig, config_from_dict, diff_configs, flatten, save_yaml, to_dict
from spro.data.loader import check_prompt_lengths, load_datasets, prompt_order
from spro.data.prompts import render_prompt
from spro.models.policy import load_policy, load_reference
from spro.models.logprobs import logps_no_grad, sequence_logps
from spro.rewards.scoring import RewardFunctionError, Scorer
from spro.rollout import RolloutBatch, generate_completions, make_backend
from spro.trainer import checkpoint as ckpt_lib
from spro.trainer.logger import RunLogger, clean_float
from spro.trainer.metrics import EVAL_KEYS, METRIC_KEYS, PRIME_METRIC_KEYS, step_metrics
from spro.trainer.warmstart import resolve_model

__all__ = ["Trainer", "train", "TrainingDivergedError", "RewardFunctionError", "METRIC_KEYS", "PRIME_METRIC_KEYS",
           "EVAL_KEYS"]


class TrainingDivergedError(RuntimeError):
    """Non-finite log-probs, loss or gradients: training stopped, the last checkpoint kept."""


@dataclass
class _Step:
    """The responses of a step that train, with everything the update needs about them."""

    batch: RolloutBatch
    x: AdvantageInputs  # rewards, mask, group ids, log pi_old, log pi_ref, correctness
    fused: tuple[torch.Tensor, torch.Tensor | None] | None  # (logp, entropy) with their graph (on-policy)

    def select(self, idx: torch.Tensor) -> _Step:
        fused = None if self.fused is None else tuple(None if t is None else t[idx] for t in self.fused)
        return _Step(self.batch.select(idx), self.x.select(idx), fused)


class Trainer:
    """Holds models, data, optimizer and loggers; :meth:`train` runs the loop.

    ``reward_funcs``: ``{name: fn}`` used instead of looking the names of ``data.rewards`` up in
    ``spro.rewards``; ``algorithm_state``: objects for the algorithm's ``setup`` hook (PRIME:
    ``prm=``, a process reward model of your own).
    """

    def __init__(self, config: TrainConfig | None, *, resume: str | Path | None = None,
                 reward_funcs: dict[str, Callable] | None = None, accelerator: Any = None,
                 **algorithm_state: Any) -> None:
        from accelerate import Accelerator
        from transformers import get_scheduler, set_seed

        self.resume_ckpt = ckpt_lib.find_checkpoint(resume) if resume else None
        if self.resume_ckpt is not None:
            config = _config_for_resume(self.resume_ckpt, config, resume)
        if config is None:
            raise ConfigError("train() needs a TrainConfig (or resume= a checkpoint)")
        self.cfg = cfg = config
        a, r, m = cfg.algorithm, cfg.rollout, cfg.model
        self.acc = accelerator or Accelerator(cpu=cfg.device == "cpu")
        self.rank, self.world, self.is_main = self.acc.process_index, self.acc.num_processes, self.acc.is_main_process
        self.out = Path(cfg.output_dir)
        self.G = r.num_generations
        if r.prompts_per_step % self.world:
            raise ConfigError(f"rollout.prompts_per_step ({r.prompts_per_step}) must be divisible by the number of "
                              f"processes ({self.world}) so that every group stays on one process")
        self.local_prompts = r.prompts_per_step // self.world
        self.local_batch = self.local_prompts * self.G
        self.mini = a.mini_batch_size or self.local_batch
        if self.local_batch % self.mini:
            raise ConfigError(f"algorithm.mini_batch_size ({a.mini_batch_size}) must divide the per-process batch "
                              f"({self.local_batch} responses)")
        self.micro = self.mini // a.grad_accum_steps
        # one optimizer step per batch: the training forward pass doubles as the pi_old pass
        self.on_policy = a.ppo_epochs == 1 and self.mini == self.local_batch and a.grad_accum_steps == 1
        self.algorithm = resolve_algorithm(a.name, a.options)
        self.loss_agg = a.loss_agg or self.algorithm.loss_agg

        # models (the reference is the starting policy, also when resuming; with LoRA, the policy with its
        # adapters disabled); precision, gradient checkpointing and adapters: spro.models.policy
        resumed = self.resume_ckpt is not None
        policy_src = str(self.resume_ckpt) if resumed else resolve_model(m.name_or_path)
        device_type = self.acc.device.type
        self.model, self.tok = load_policy(m, policy_src, device_type=device_type, resumed=resumed)
        self.ref = None
        if self.algorithm.needs_reference or m.use_reference or a.kl_coef > 0:
            self.ref = load_reference(m, self.model, device_type=device_type, resumed=resumed,
                                      resolve=resolve_model).to(self.acc.device)
        # prompt-prefix sharing needs a KV cache in the training forward (not with checkpointing)
        self.share_group = self.G if (m.share_prompt_prefix and not m.gradient_checkpointing) else None
        self.model.to(self.acc.device).train()

        # data and rewards
        self.train_ds, self.eval_ds = load_datasets(cfg)
        ctx_len = getattr(self.model.config, "max_position_embeddings", None)
        self.train_ds, self.train_prompts = check_prompt_lengths(
            self.train_ds, [render_prompt(self.tok, p) for p in self.train_ds["prompt"]], self.tok, ctx_len,
            r.max_new_tokens, cfg.data.long_prompts, "train")
        if self.eval_ds is not None:
            self.eval_ds, _ = check_prompt_lengths(
                self.eval_ds, [render_prompt(self.tok, p) for p in self.eval_ds["prompt"]], self.tok, ctx_len,
                r.max_new_tokens, cfg.data.long_prompts, cfg.data.eval_split)
        if len(self.train_ds) == 0:
            raise ConfigError("the training set is empty")
        self.columns = [c for c in self.train_ds.column_names if c != "prompt"]
        self.scorer = Scorer.from_config(cfg.data, reward_funcs)

        # optimizer, schedule, generation
        o = cfg.optim
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=o.lr,
                                           betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_eps,
                                           weight_decay=o.weight_decay)
        self.scheduler = get_scheduler(o.scheduler, self.optimizer, num_warmup_steps=o.warmup_steps,
                                       num_training_steps=cfg.total_steps * a.ppo_epochs * (self.local_batch // self.mini))
        self.ddp_model = self.acc.prepare(self.model)
        self.backend = make_backend(r.backend, self.model, self.tok, r, share_prompt_prefix=m.share_prompt_prefix)
        self.algorithm.setup(TrainerContext(cfg, self.model, self.ref, self._logp_fn, self.acc, algorithm_state))

        self.step, self.elapsed, self.last_ckpt = 0, 0.0, None
        if self.resume_ckpt is not None:
            ckpt_lib.load_training_state(self.resume_ckpt, self.optimizer, self.scheduler)
            state = ckpt_lib.read_trainer_state(self.resume_ckpt)
            self.step, self.elapsed, self.last_ckpt = int(state["step"]), float(state["time"]), self.resume_ckpt
            if self.algorithm.has_state:
                self.algorithm.load(ckpt_lib.algorithm_state_dir(self.resume_ckpt))
            ckpt_lib.load_rng_state(self.resume_ckpt, self.rank, self.world)
        else:
            set_seed(cfg.seed * 1000 + self.rank)
        self.logger = RunLogger(cfg, self.out, enabled=self.is_main, resume_step=self.step if self.resume_ckpt else None)
        if self.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            save_yaml(cfg, self.out / "config.yaml")

    # ------------------------------------------------------------------------------ the stages

    def _logp_fn(self, model: Any, batch: RolloutBatch) -> torch.Tensor:
        """Log-probs of ``batch``'s responses under ``model`` with the trainer's convention (for algorithms)."""
        return sequence_logps(model, batch, temperature=self.cfg.rollout.temperature, group_size=self.share_group)[0]

    def rollout(self, step: int) -> tuple[list[int], RolloutBatch]:
        """This process's prompts of ``step`` (dataset rows) and their G sampled responses each."""
        n, P = len(self.train_ds), self.cfg.rollout.prompts_per_step
        start = (step - 1) * P + self.rank * self.local_prompts
        rows = []
        for pos in range(start, start + self.local_prompts):
            epoch, i = divmod(pos, n)
            rows.append(int(prompt_order(n, self.cfg.seed, epoch, self.cfg.data.shuffle)[i]))
        return rows, self.backend.generate([self.train_prompts[i] for i in rows], self.G)

    def score(self, rows: list[int], completions: list[str]):
        """``Scores`` of the G responses of each dataset row in ``rows``."""
        sub = self.train_ds.select(rows)
        prompts = [p for p in sub["prompt"] for _ in range(self.G)]
        columns = {c: [v for v in sub[c] for _ in range(self.G)] for c in self.columns}
        return self.scorer(prompts, completions, columns)

    def logprobs(self, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, tuple | None]:
        """``(log pi_old, entropy, log pi_ref or None, fused)`` of the batch's responses, each ``[B, T]``."""
        a, temp = self.cfg.algorithm, self.cfg.rollout.temperature
        chunk = self.micro if a.grad_accum_steps > 1 else None
        ref_logp = None
        if self.ref is not None:
            ref_logp = logps_no_grad(self.ref, batch, temperature=temp, with_entropy=False, chunk=chunk,
                                     group_size=self.share_group)[0]
        fused = None
        if self.on_policy:
            logp, ent = sequence_logps(self.ddp_model, batch, temperature=temp, with_entropy=True,
                                       entropy_grad=a.entropy_coef > 0, group_size=self.share_group)
            fused = (logp, ent if a.entropy_coef > 0 else None)
            old_logp, entropy = logp.detach(), ent.detach()
        else:
            old_logp, entropy = logps_no_grad(self.model, batch, temperature=temp, with_entropy=True, chunk=chunk,
                                              group_size=self.share_group)
        mb = batch.completion_mask.bool()
        if not torch.isfinite(old_logp[mb]).all():
            raise self._diverged("the sampling policy's log-probs")
        if ref_logp is not None and not torch.isfinite(ref_logp[mb]).all():
            raise self._diverged("the reference model's log-probs")
        return old_logp, entropy, ref_logp, fused

    def train_step(self) -> dict[str, Any]:
        step, t_step = self.step + 1, time.perf_counter()
        times = {}

        t0 = time.perf_counter()  # 1. rollout
        rows, batch = self.rollout(step)
        times["time/rollout"] = time.perf_counter() - t0

        scores = self.score(rows, batch.completions)  # 2. score
        mask = batch.completion_mask

        t0 = time.perf_counter()  # 3. log-probs
        old_logp, entropy, ref_logp, fused = self.logprobs(batch)
        times["time/logprob"] = time.perf_counter() - t0

        # 4. advantages: the algorithm's hooks on the responses it keeps, then its estimator
        x = AdvantageInputs(scores.rewards.to(mask.device), mask, batch.group_ids, old_logp, ref_logp,
                            scores.correct.to(mask.device), step)
        s = _Step(batch, x, fused)
        keep = self.algorithm.select(x)
        if keep is not None and not bool(keep.all()):
            s = s.select(keep.nonzero().squeeze(1)) if bool(keep.any()) else None
        adv, update = None, {"loss": None, "lr": self.scheduler.get_last_lr()[0], "grad_norm": None}
        times["time/update"] = 0.0
        if s is not None:  # (no response kept: no update this step)
            s.x = self.algorithm.prepare(s.batch, s.x)
            adv = self.algorithm.advantages(s.x).to(old_logp.dtype)
            t0 = time.perf_counter()  # 5. update
            update = self.ppo_update(s, adv, step)
            times["time/update"] = time.perf_counter() - t0

        # 6. metrics (reduced over processes)
        times["time/step"] = time.perf_counter() - t_step
        self.elapsed += times["time/step"]
        metrics = step_metrics(self.acc, batch=batch, rewards=x.rewards, correct=x.correct, old_logp=old_logp,
                               ref_logp=ref_logp, entropy=entropy, advantages=adv, update=update,
                               kl_estimator=self.cfg.algorithm.kl_estimator, spro_options=self.cfg.algorithm.spro,
                               group_size=self.G)
        metrics = {"step": step, "time": self.elapsed, **metrics, **times, **scores.stats,
                   **self.algorithm.metrics(x if s is None else s.x, adv)}
        metrics["perf/tokens_per_sec"] = metrics.pop("tokens") / times["time/step"]
        n = self.cfg.logging.log_completions
        self.logger.log_completions(step, batch.prompts[:n], batch.completions[:n], x.rewards.tolist()[:n])
        self.step = step
        return metrics

    def ppo_update(self, s: _Step, adv: torch.Tensor, step: int) -> dict[str, float]:
        """PPO epochs over mini-batches with gradient accumulation; one optimizer step per mini-batch.

        ``s.fused``: ``(logp, entropy)`` of the whole batch from a forward pass that still holds its
        graph (the on-policy case: one epoch, one mini-batch, no accumulation), reused instead of a
        second forward pass.
        """
        cfg, a = self.cfg, self.cfg.algorithm
        B, accum, mask = len(s.batch), a.grad_accum_steps, s.x.mask
        params = [p for p in self.model.parameters() if p.requires_grad]
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        sums: dict[str, float] = {}
        n_micro, grad_norms, lrs = 0, [], []
        for epoch in range(a.ppo_epochs):
            order = (torch.arange(B) if epoch == 0 else torch.randperm(B, generator=gen)).to(mask.device)
            for start in range(0, B, self.mini):
                mb_idx = order[start : start + self.mini]
                lrs.append(self.scheduler.get_last_lr()[0])
                for k in range(accum):
                    idx = mb_idx[k * self.micro : (k + 1) * self.micro]
                    if idx.numel() == 0:  # a short batch (the algorithm kept fewer responses)
                        continue
                    sync = contextlib.nullcontext() if k == accum - 1 else self.acc.no_sync(self.ddp_model)
                    with sync:
                        if s.fused is not None:
                            logp, ent = s.fused
                        else:
                            logp, ent = sequence_logps(self.ddp_model, s.batch, temperature=cfg.rollout.temperature,
                                                       with_entropy=a.entropy_coef > 0, idx=idx)
                        if not torch.isfinite(logp[mask[idx]]).all():
                            raise self._diverged("the policy's log-probs during the update")
                        loss, m = policy_loss(
                            logp, s.x.logp[idx], adv[idx], mask[idx], clip_eps_low=a.clip_eps_low,
                            clip_eps_high=a.clip_eps_high, agg=self.loss_agg,
                            max_completion_length=cfg.rollout.max_new_tokens,
                            ref_logp=s.x.ref_logp[idx] if s.x.ref_logp is not None else None,
                            kl_coef=a.kl_coef, kl_estimator=a.kl_estimator, entropy=ent, entropy_coef=a.entropy_coef,
                        )
                        if not torch.isfinite(loss):
                            raise self._diverged("the loss")
                        self.acc.backward(loss / accum)
                    m["loss"] = float(loss.detach())
                    for key, v in m.items():
                        sums[key] = sums.get(key, 0.0) + v
                    n_micro += 1
                if cfg.optim.max_grad_norm > 0:
                    gn = float(self.acc.clip_grad_norm_(params, cfg.optim.max_grad_norm))
                else:
                    gn = float(torch.norm(torch.stack([p.grad.detach().norm() for p in params if p.grad is not None])))
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

    def _diverged(self, what: str) -> TrainingDivergedError:
        where = f"the last good checkpoint is {self.last_ckpt}" if self.last_ckpt else "no checkpoint was saved yet"
        return TrainingDivergedError(f"step {self.step + 1}: non-finite values in {what}; training stopped ({where}). "
                                     f"Try a lower optim.lr or a smaller process-reward beta.")

    # ------------------------------------------------------------------------------ eval, save

    def evaluate(self) -> dict[str, Any]:
        """Greedy accuracy on the held-out split (sharded over processes), by the Scorer's rule."""
        sub = self.eval_ds.select(list(range(self.rank, len(self.eval_ds), self.world)))
        prompts = list(sub["prompt"])
        texts, lengths, _ = generate_completions(self.model, self.tok, prompts,
                                                 max_new_tokens=self.cfg.rollout.max_new_tokens, do_sample=False,
                                                 batch_size=self.cfg.rollout.eval_batch_size)
        comps = [t[0] for t in texts]
        cols = {c: list(sub[c]) for c in sub.column_names if c != "prompt"}
        correct = self.scorer(prompts, comps, cols).correct if comps else torch.zeros(0)
        sums = torch.tensor([float(correct.sum()), float(len(comps)), float(sum(l[0] for l in lengths))],
                            device=self.acc.device)
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
            path = ckpt_lib.save_checkpoint(
                self.out / "checkpoints", self.step, model=self.model, tokenizer=self.tok, optimizer=self.optimizer,
                scheduler=self.scheduler, run_config=to_dict(self.cfg),
                trainer_state={"time": self.elapsed, "data_position": self.step * self.cfg.rollout.prompts_per_step,
                               "num_processes": self.world},
                rng_states=rng, keep_last=self.cfg.keep_last,
                extra_savers={ckpt_lib.ALGORITHM_STATE: self.algorithm.save} if self.algorithm.has_state else None,
            )
        self.acc.wait_for_everyone()
        self.last_ckpt = path or self.out / "checkpoints" / f"step-{self.step:06d}"
        return self.last_ckpt

    # ------------------------------------------------------------------------------ the loop

    def train(self) -> Path:
        cfg = self.cfg
        bar = None  # a progress bar only on a terminal: a redirected log gets plain lines (logging.every)
        if self.is_main and cfg.logging.progress_bar and sys.stderr.isatty():
            from tqdm.auto import tqdm

            bar = tqdm(total=cfg.total_steps, initial=self.step, desc=f"{cfg.algorithm.name}", dynamic_ncols=True)
        do_eval = self.eval_ds is not None and cfg.eval_every >= 0
        try:
            if do_eval and cfg.eval_at_start and self.step == 0:
                ev = self.evaluate()
                self.logger.log_eval(ev)
                self.logger.print_eval(ev, echo=bar is None)
            while self.step < cfg.total_steps:
                metrics = self.train_step()
                self.logger.log_metrics({k: (clean_float(v) if isinstance(v, float) else v) for k, v in metrics.items()})
                self.logger.print_step(metrics, echo=bar is None)
                if bar is not None:
                    bar.update(1)
                    loss = "n/a" if metrics["loss"] is None else f"{metrics['loss']:.4f}"
                    bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", acc=f"{metrics['accuracy']:.2f}",
                                    loss=loss, len=f"{metrics['length/mean']:.1f}")
                last = self.step == cfg.total_steps
                if do_eval and (last or (cfg.eval_every > 0 and self.step % cfg.eval_every == 0)):
                    ev = self.evaluate()
                    self.logger.log_eval(ev)
                    self.logger.print_eval(ev, echo=bar is None)
                    if bar is not None:
                        bar.write(f"step {self.step}: eval accuracy {ev['eval/accuracy']:.3f} (n={ev['eval/n']})")
                if last or (cfg.save_every > 0 and self.step % cfg.save_every == 0):
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            self.logger.close()
        return self.out


def _config_for_resume(ckpt: Path, config: TrainConfig | None, resume: Any) -> TrainConfig:
    """The config to resume ``ckpt`` with: its own, or ``config`` if they agree (but for
    ``spro.config.RESUMABLE_DIFFERENCES``)."""
    saved = to_dict(config_from_dict(ckpt_lib.read_run_config(ckpt)))
    if config is None:
        return config_from_dict(saved)
    diffs = diff_configs(saved, to_dict(config))
    if diffs:
        fs, fn = flatten(saved), flatten(to_dict(config))
        detail = "; ".join(f"{k}: {fs.get(k)!r} (checkpoint) vs {fn.get(k)!r} (now)" for k in diffs[:10])
        raise ckpt_lib.CheckpointError(
            f"--resume {resume}: the checkpoint was made with a different config; differing keys: {detail}")
    return config


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None,
          reward_funcs: dict[str, Callable] | None = None, **algorithm_state: Any) -> Path:
    """Train with ``config`` and return the run folder (``config.output_dir``).

    ``resume``: a run folder or checkpoint to continue from (its saved config is used when
    ``config`` is None; otherwise the two must agree except for the keys in
    ``spro.config.RESUMABLE_DIFFERENCES``). ``reward_funcs``: ``{name: fn}`` used instead of looking
    the names of ``config.data.rewards`` up in ``spro.rewards``. Other keyword arguments go to the
    algorithm's ``setup`` hook (PRIME: ``prm=``, a process reward model of your own).
    """
    return Trainer(config, resume=resume, reward_funcs=reward_funcs, **algorithm_state).train()
