"""The RL trainer for Hugging Face causal LMs: one loop for every registered algorithm.

One training step (:meth:`Trainer.train_step`):

1. rollout    ``prompts_per_step`` prompts, G responses each (``spro.rollout``); with several
              processes every group is generated on one process, so group statistics equal
              the single-process ones;
2. score      the reward functions (``spro.rewards.scoring.Scorer``);
3. log-probs  one no-grad pass of the frozen reference (when the algorithm or the KL term needs
              it) and one of the sampling policy (pi_old, with the entropy), both in eval mode
              (``spro.models.passes``); both are reused by the advantage, the PPO ratio, the KL
              term and the metrics. With one optimizer step per batch and no dropout the training
              forward pass itself gives pi_old (``fused``);
4. advantages the algorithm's hooks (``select`` the responses that train, ``prepare`` its own
              state) and its estimator (``spro.algorithms``);
5. update     PPO epochs over mini-batches with gradient accumulation (``spro.algorithms.losses``);
6. log        ``spro.trainer.metrics`` plus the algorithm's own metrics, the process probe
              (``spro.algorithms.probes``: ``process/*``, ``diag/*``, ``drift/*``, computed once),
              periodic greedy evaluation and atomic checkpoints (``spro.trainer.checkpoint``).

The trainer knows no algorithm by name: what differs between algorithms is behind the hooks of
``spro.algorithms.registry.Algorithm``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from spro.algorithms.losses import agg_normaliser, policy_loss
from spro.algorithms.probes import probe_signal
from spro.algorithms.registry import (AdvantageInputs, ProcessSignal, TrainerContext, compute_advantages,
                                      resolve_algorithm)
from spro.config import ConfigError, TrainConfig, save_yaml, to_dict
from spro.data.loader import load_task, prompt_order, training_data
from spro.models.logprobs import logprob_fn, logps_no_grad, sequence_logps
from spro.models.passes import eval_mode, has_dropout
from spro.models.policy import load_policy, load_reference
from spro.rewards.scoring import RewardFunctionError, Scorer, code_isolation
from spro.rewards.trl_style import check_configured_rewards, check_scorer_columns, reward_columns, trainer_state
from spro.rollout import RolloutBatch, generate_completions, make_backend
from spro.trainer import checkpoint as ckpt_lib
from spro.trainer import signals
from spro.trainer.diagnostics import ProcessDiagnostics
from spro.trainer.hints import ZeroVarianceWatch, finished_run_message
from spro.trainer.logger import RunLogger, clean_float, eval_line
from spro.trainer.metrics import EVAL_KEYS, METRIC_KEYS, step_metrics
from spro.trainer.rundir import check_run_folder, on_main, open_run_folder, resume_point
from spro.trainer.steps import Round, Step, batch_sizes, combine, first_groups, groups_kept
from spro.trainer.warmstart import resolve_model

__all__ = ["Trainer", "train", "TrainingDivergedError", "RewardFunctionError", "METRIC_KEYS", "EVAL_KEYS"]


class TrainingDivergedError(RuntimeError):
    """Non-finite log-probs, loss or gradients: training stopped, the last checkpoint kept."""


class Trainer:
    """Holds models, data, optimizer and loggers; :meth:`train` runs the loop.

    ``reward_funcs``: ``{name: fn}`` used instead of looking the names of ``data.rewards`` up in
    ``spro.rewards``; ``datasets``: ``(train, eval or None)`` ``datasets.Dataset`` objects used instead of
    ``data`` (the Python API, ``spro.api``); ``callbacks``: functions called with each step's metrics
    (and that step's ``eval/*`` when it evaluates); ``algorithm_state``: objects for the algorithm's
    ``setup`` hook (PRIME: ``prm=``, a process reward model of your own).
    """

    def __init__(self, config: TrainConfig | None, *, resume: str | Path | None = None, overwrite: bool = False,
                 reward_funcs: dict[str, Callable] | None = None, accelerator: Any = None,
                 datasets: tuple[Any, Any] | None = None, callbacks: list[Callable] | None = None,
                 **algorithm_state: Any) -> None:
        from accelerate import Accelerator

        # (its config, written into the checkpoint's run folder; no checkpoint yet: from step 0 in that folder)
        self.resume_ckpt, config = resume_point(resume, config)
        if config is None:
            raise ConfigError("train() needs a TrainConfig (or resume= a checkpoint)")
        self.cfg = cfg = config
        if cfg.device == "cuda" and accelerator is None and not torch.cuda.is_available():
            raise ConfigError("device=cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False); "
                              "set device=cpu or device=auto to train on the CPU")
        self.acc = accelerator or Accelerator(cpu=cfg.device == "cpu")
        self.rank, self.world, self.is_main = self.acc.process_index, self.acc.num_processes, self.acc.is_main_process
        self.out, self.run_lock = Path(cfg.output_dir), None
        run = dict(resume=bool(resume), overwrite=overwrite)
        on_main(self.acc, lambda: check_run_folder(self.out, **run))  # at once, before the models load

        self._setup_algorithm()
        check_configured_rewards(cfg.data, reward_funcs)  # (before the models load)
        self._setup_models()
        self._setup_data(reward_funcs, datasets)
        self.callbacks = list(callbacks or [])
        self._setup_optimizer()
        self.algorithm.setup(TrainerContext(cfg, self.model, self.ref, self._logp_fn, self.acc, algorithm_state))
        self._restore_or_seed()
        self.run_lock = on_main(self.acc, lambda: open_run_folder(self.out, **run))  # held until close()
        try:
            self.logger = RunLogger(cfg, self.out, enabled=self.is_main,
                                    resume_step=self.step if self.resume_ckpt else -1 if resume else None,
                                    facts=self.run_info)
            if self.is_main:
                save_yaml(cfg, self.out / "config.yaml")
        except BaseException:
            self.close()
            raise

    def _setup_algorithm(self) -> None:
        """The algorithm, the batch sizes and whether the training forward pass doubles as pi_old's."""
        a = self.cfg.algorithm
        self.G = self.cfg.rollout.num_generations
        self.local_prompts, self.local_batch, self.mini, self.micro = batch_sizes(self.cfg, self.world)
        self.algorithm = resolve_algorithm(a.name, a.options)
        # one optimizer step per batch (of one round): the training forward pass doubles as the pi_old pass
        # (models without dropout: see _setup_models)
        self.on_policy = (a.ppo_epochs == 1 and self.mini == self.local_batch and a.grad_accum_steps == 1
                          and self.algorithm.max_rounds == 1)
        self.loss_agg = a.loss_agg or self.algorithm.loss_agg

    def _setup_models(self) -> None:
        """The policy and the frozen reference (the starting policy, also when resuming; with LoRA, the policy
        with its adapters disabled); precision, gradient checkpointing and adapters: spro.models.policy."""
        cfg, m = self.cfg, self.cfg.model
        resumed = self.resume_ckpt is not None
        policy_src = str(self.resume_ckpt) if resumed else resolve_model(m.name_or_path)
        device_type = self.acc.device.type
        self.model, self.tok = load_policy(m, policy_src, device_type=device_type, resumed=resumed,
                                           logratio=self.algorithm.needs_reference or cfg.algorithm.kl_coef > 0)
        self.ref = None
        if self.algorithm.needs_reference or m.use_reference or cfg.algorithm.kl_coef > 0:
            self.ref = load_reference(m, self.model, device_type=device_type, resumed=resumed,
                                      resolve=resolve_model).to(self.acc.device)
        # prompt-prefix sharing needs a KV cache in the training forward (not with checkpointing)
        self.share_group = self.G if (m.share_prompt_prefix and not m.gradient_checkpointing) else None
        self.model.to(self.acc.device).train()
        self.on_policy = self.on_policy and not has_dropout(self.model)  # (a dropout pass is not pi_old)
        # log-probs of any model with the trainer's convention (for algorithms: TrainerContext.logprobs)
        self._logp_fn = logprob_fn(temperature=cfg.rollout.temperature, group_size=self.share_group)

    def _setup_data(self, reward_funcs: dict[str, Callable] | None, datasets: tuple[Any, Any] | None) -> None:
        """Prompts (``datasets``: the (train, eval) Dataset objects of the Python API), rewards and the
        diagnostics (which read the task's step checker)."""
        cfg = self.cfg
        data = training_data(cfg, self.tok, getattr(self.model.config, "max_position_embeddings", None), datasets)
        self.train_ds, self.train_prompts, self.eval_ds = data.train, data.prompts, data.evals
        self.eval_prompts = data.eval_prompts  # rendered (data.chat_template)
        self.chat_template_applied = data.chat_template  # recorded in each checkpoint (trainer_state.json)
        self.columns = [c for c in self.train_ds.column_names if c != "prompt"]
        # "correct" is decided by the run's accuracy verifier (spro.data.loader.accuracy_verifier), never by
        # default by a shaped reward; without one, accuracy is null (the Scorer still needs a name: the first)
        self.accuracy_reward = data.accuracy
        if data.accuracy is None and self.algorithm.needs_accuracy:
            raise ConfigError(f"algorithm.name={cfg.algorithm.name} learns from correct / incorrect verdicts, and this "
                              f"run has no accuracy verifier: {data.accuracy_note}")
        self.scorer = Scorer.from_config(dataclasses.replace(cfg.data, accuracy_reward=data.accuracy or data.rewards[0][0]),
                                         reward_funcs, data.rewards)
        check_scorer_columns(self.scorer, self.columns)
        # the sandbox of the code rewards, checked now (not at the first reward call): any mode but bwrap warns
        iso = code_isolation(cfg.data, [n for n, _ in data.rewards if n not in (reward_funcs or {})])
        self.run_info = {} if iso is None else {"sandbox.isolation": iso}  # (train.log, TensorBoard's and W&B's config)
        self.run_facts = {} if iso is None else {"sandbox/isolation": float(("bwrap", "namespace", "none").index(iso))}
        task = load_task(cfg.data) if datasets is None else None
        rendered = {r: p for r, p in zip(self.train_prompts, self.train_ds["prompt"]) if r != p and isinstance(p, str)}
        self.diagnostics = (ProcessDiagnostics(task, self.tok, self.algorithm.diagnostic_names, rendered)
                            if cfg.logging.diagnostics else None)
        if self.is_main:
            print(f"spro: {data.summary}", file=sys.stderr, flush=True)
            if iso is not None:
                print(f"spro: code rewards run model-written programs in the {iso} sandbox (data.code.isolation="
                      f"{cfg.data.code.isolation}; metric sandbox/isolation)", file=sys.stderr, flush=True)

    def _setup_optimizer(self) -> None:
        """Optimizer, schedule, the data-parallel wrapper and the generation backend."""
        from transformers import get_scheduler

        cfg, o, r = self.cfg, self.cfg.optim, self.cfg.rollout
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=o.lr,
                                           betas=(o.adam_beta1, o.adam_beta2), eps=o.adam_eps,
                                           weight_decay=o.weight_decay)
        updates = cfg.total_steps * cfg.algorithm.ppo_epochs * (self.local_batch // self.mini)
        self.scheduler = get_scheduler(o.scheduler, self.optimizer, num_warmup_steps=o.warmup_steps,
                                       num_training_steps=updates)
        self.ddp_model = self.acc.prepare(self.model)
        self.backend = make_backend(r.backend, self.model, self.tok, r,
                                    share_prompt_prefix=cfg.model.share_prompt_prefix)

    def _restore_or_seed(self) -> None:
        """Step, clock, data position, optimizer, algorithm and RNG state from the checkpoint resumed, or the
        seed of a new run."""
        from transformers import set_seed

        self.step, self.elapsed, self.last_ckpt, self.cursor = 0, 0.0, None, 0  # cursor: prompts consumed
        if self.resume_ckpt is None:
            set_seed(self.cfg.seed * 1000 + self.rank)
            return
        ckpt_lib.load_training_state(self.resume_ckpt, self.optimizer, self.scheduler)
        state = ckpt_lib.read_trainer_state(self.resume_ckpt)
        self.step, self.elapsed, self.last_ckpt = int(state["step"]), float(state["time"]), self.resume_ckpt
        self.cursor = int(state.get("data_position", self.step * self.cfg.rollout.prompts_per_step))
        if self.algorithm.has_state:
            self.algorithm.load(ckpt_lib.algorithm_state_dir(self.resume_ckpt))
        ckpt_lib.load_rng_state(self.resume_ckpt, self.rank, self.world)

    def close(self) -> None:
        """Let another trainer use the run folder (``train`` calls it at the end)."""
        if self.run_lock is not None:
            self.run_lock.release()
        if getattr(self, "scorer", None) is not None:
            self.scorer.close()  # (its worker process, if any; a later call starts a new one)

    # ------------------------------------------------------------------------------ the stages

    def rollout(self) -> tuple[list[int], RolloutBatch]:
        """The next ``prompts_per_step`` prompts of the data stream (this process's share: dataset rows)
        and their G sampled responses each."""
        n, P = len(self.train_ds), self.cfg.rollout.prompts_per_step
        start = self.cursor + self.rank * self.local_prompts
        rows = []
        for pos in range(start, start + self.local_prompts):
            epoch, i = divmod(pos, n)
            rows.append(int(prompt_order(n, self.cfg.seed, epoch, self.cfg.data.shuffle)[i]))
        self.cursor += P
        return rows, self.backend.generate([self.train_prompts[i] for i in rows], self.G)

    def score(self, rows: list[int], completions: list[str], batch: RolloutBatch | None = None):
        """``Scores`` of the G responses of each dataset row in ``rows`` (``batch``: their rollout, for the
        reward functions' ``completion_ids``)."""
        sub = self.train_ds.select(rows)
        prompts = [p for p in sub["prompt"] for _ in range(self.G)]
        columns = {c: [v for v in sub[c] for _ in range(self.G)] for c in self.columns}
        ids = None if batch is None else [r[m.bool()].tolist() for r, m in zip(batch.completion_ids.cpu(),
                                                                               batch.completion_mask.cpu())]
        state = trainer_state(self.step + 1, self.cfg.total_steps, epoch=self.cursor / len(self.train_ds))
        return self.scorer(prompts, completions, {**columns, **reward_columns(ids, state, len(completions))})

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
            with eval_mode(self.model):
                old_logp, entropy = logps_no_grad(self.model, batch, temperature=temp, with_entropy=True, chunk=chunk,
                                                  group_size=self.share_group)
        mb = batch.completion_mask.bool()
        if not torch.isfinite(old_logp[mb]).all():
            raise self._diverged("the sampling policy's log-probs")
        if ref_logp is not None and not torch.isfinite(ref_logp[mb]).all():
            raise self._diverged("the reference model's log-probs")
        return old_logp, entropy, ref_logp, fused

    def sample(self, step: int, times: dict[str, float]) -> Round:
        """One round of stages 1-3 and the algorithm's ``select``."""
        t0 = time.perf_counter()
        rows, batch = self.rollout()
        times["time/rollout"] += time.perf_counter() - t0
        scores = self.score(rows, batch.completions, batch)
        t0 = time.perf_counter()
        old_logp, entropy, ref_logp, fused = self.logprobs(batch)
        times["time/logprob"] += time.perf_counter() - t0
        mask = batch.completion_mask
        x = AdvantageInputs(scores.rewards.to(mask.device), mask, batch.group_ids, old_logp, ref_logp,
                            scores.correct.to(mask.device), step)
        return Round(Step(batch, x, fused), scores, entropy, self.algorithm.select(x))

    def train_step(self) -> dict[str, Any]:
        step, t_step = self.step + 1, time.perf_counter()
        times = {"time/rollout": 0.0, "time/logprob": 0.0}

        # 1-3. rollout, score, log-probs; more rounds while the algorithm keeps too few prompts
        rounds = [self.sample(step, times)]
        while groups_kept(rounds) < self.local_prompts and len(rounds) < self.algorithm.max_rounds:
            rounds.append(self.sample(step, times))
        sampled = combine(rounds, self.tok.pad_token_id)
        full, keep = sampled.step, sampled.keep

        # 4. advantages: the algorithm's hooks on the responses it keeps, then its estimator
        s, rows = full, torch.arange(len(full.batch))
        if keep is not None and not bool(keep.all()):
            rows = first_groups(keep, full.x.group_ids, self.local_prompts)
            s = full.select(rows) if bool(keep.any()) else None
        adv, update = None, {"loss": None, "lr": self.scheduler.get_last_lr()[0], "grad_norm": None}
        times["time/update"] = 0.0
        if s is not None:  # (no response kept: no update this step)
            s.x = self.algorithm.prepare(s.batch, s.x)
            adv = compute_advantages(self.algorithm, s.x).to(s.x.logp.dtype)
            t0 = time.perf_counter()  # 5. update
            update = self.ppo_update(s, adv, step)
            times["time/update"] = time.perf_counter() - t0

        # 6. metrics (reduced over processes); the process probe once, for process/*, diag/* and drift/*
        times["time/step"] = time.perf_counter() - t_step
        self.elapsed += times["time/step"]
        x, batch = full.x, full.batch
        probe = self.process_probe(full, s)
        metrics = step_metrics(self.acc, batch=batch, rewards=x.rewards, correct=x.correct, old_logp=x.logp,
                               ref_logp=x.ref_logp, entropy=sampled.entropy, advantages=adv if s is full else None,
                               update=update, kl_estimator=self.cfg.algorithm.kl_estimator, process=probe,
                               group_size=self.G)
        metrics = {"step": step, "time": self.elapsed, **metrics, **times, **sampled.scores.stats,
                   **self.algorithm.metrics(x if s is None else s.x, adv), **self.run_facts}
        if self.accuracy_reward is None:  # no verifier: not reported (never a shaped reward's "accuracy")
            metrics["accuracy"] = None
        if self.diagnostics is not None:
            own = self.algorithm.diagnostic_signals(s.x) if s is not None and adv is not None else {}
            metrics.update(self.diagnostics(self.acc, full, s, rows, adv, probe, own))
        metrics["perf/tokens_per_sec"] = metrics.pop("tokens") / times["time/step"]
        if self.algorithm.max_rounds > 1:
            metrics["rollout/rounds"] = float(len(rounds))
        n = self.cfg.logging.log_completions
        self.logger.log_completions(step, batch.prompts[:n], batch.completions[:n], x.rewards.tolist()[:n])
        self.step = step
        return metrics

    def process_probe(self, full: Step, trained: Step | None) -> ProcessSignal | None:
        """The step's process probe on all sampled responses (``spro.algorithms.probes``): the algorithm's own
        self-guided process reward when it has one and trained on them all, else the probe's settings
        (``logging.probe.*``) against the frozen reference; None without a reference model."""
        if trained is full:
            own = self.algorithm.process_signal(full.x)
            if own is not None:
                return own
        return probe_signal(full.x, self.cfg.logging.probe) if full.x.ref_logp is not None else None

    def ppo_update(self, s: Step, adv: torch.Tensor, step: int) -> dict[str, float]:
        """PPO epochs over mini-batches with gradient accumulation; one optimizer step per mini-batch.

        Each micro-batch's loss is its share of the mini-batch loss: the loss aggregation divides by
        the mini-batch's count of tokens / responses over all micro-batches and processes
        (``spro.algorithms.losses.agg_normaliser``), so short micro-batches weigh what their rows weigh.
        ``s.fused``: ``(logp, entropy)`` of the whole batch from a forward pass that still holds its
        graph (the on-policy case: one epoch, one mini-batch, no accumulation), reused instead of a
        second forward pass.
        """
        cfg, a = self.cfg, self.cfg.algorithm
        B, mask = len(s.batch), s.x.mask
        if a.mask_truncated_completions:  # truncated responses leave the loss (not the advantage's statistics)
            mask = mask & ~s.batch.truncated.to(mask.device).bool().unsqueeze(1)
        params = [p for p in self.model.parameters() if p.requires_grad]
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + step)
        per_mini: list[dict[str, float]] = []
        grad_norms, lrs = [], []
        for epoch in range(a.ppo_epochs):
            order = (torch.arange(B) if epoch == 0 else torch.randperm(B, generator=gen)).to(mask.device)
            for start in range(0, B, self.mini):
                mb_idx = order[start : start + self.mini]
                lrs.append(self.scheduler.get_last_lr()[0])
                # micro-batches; fewer or shorter ones when the algorithm kept fewer responses
                chunks = [c for c in mb_idx.split(self.micro) if c.numel()]
                norm = self.acc.reduce(agg_normaliser(mask[mb_idx], self.loss_agg).to(mask.device), "sum")
                sums, n_tok = {}, 0.0
                for k, idx in enumerate(chunks):
                    sync = contextlib.nullcontext() if k == len(chunks) - 1 else self.acc.no_sync(self.ddp_model)
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
                            clip_eps_high=a.clip_eps_high, clip_ratio_c=a.clip_ratio_c, agg=self.loss_agg,
                            max_completion_length=cfg.rollout.max_new_tokens, normaliser=norm,
                            ref_logp=s.x.ref_logp[idx] if s.x.ref_logp is not None else None,
                            kl_coef=a.kl_coef, kl_estimator=a.kl_estimator, entropy=ent, entropy_coef=a.entropy_coef,
                            importance_sampling_level=a.importance_sampling_level,
                        )
                        if not torch.isfinite(loss):
                            raise self._diverged("the loss")
                        # data parallel averages the gradients over processes: x world gives their sum
                        self.acc.backward(loss * self.world)
                    # loss shares add up (x world: their mean over processes is their sum); the other
                    # metrics are token means, weighted by the micro-batch's tokens
                    m["loss"], w = float(loss.detach()), float(mask[idx].sum())
                    for key, v in m.items():
                        sums[key] = sums.get(key, 0.0) + (v * self.world if key in ("loss", "pg_loss") else v * w)
                    n_tok += w
                per_mini.append({k: v if k in ("loss", "pg_loss") else v / max(n_tok, 1.0) for k, v in sums.items()})
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
        out = {k: float(np.mean([m[k] for m in per_mini])) for k in per_mini[0]}
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
        shard = list(range(self.rank, len(self.eval_ds), self.world))
        sub = self.eval_ds.select(shard)
        prompts = list(sub["prompt"])
        texts, lengths, _ = generate_completions(self.model, self.tok, [self.eval_prompts[i] for i in shard],
                                                 max_new_tokens=self.cfg.rollout.max_new_tokens, do_sample=False,
                                                 batch_size=self.cfg.rollout.eval_batch_size)
        comps = [t[0] for t in texts]
        cols = {c: list(sub[c]) for c in sub.column_names if c != "prompt"}
        # completion_ids of the greedy texts, tokenized again (generate_completions returns text)
        ids = self.tok(comps, add_special_tokens=False)["input_ids"] if comps else []
        cols.update(reward_columns(ids, trainer_state(self.step, self.cfg.total_steps), len(comps)))
        correct = self.scorer(prompts, comps, cols).correct if comps else torch.zeros(0)
        sums = torch.tensor([float(correct.sum()), float(len(comps)), float(sum(l[0] for l in lengths))],
                            device=self.acc.device)
        sums = self.acc.reduce(sums, "sum")
        n = max(float(sums[1]), 1.0)
        return {"step": self.step, "time": self.elapsed,
                "eval/accuracy": float(sums[0]) / n if self.accuracy_reward is not None else None,
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
                trainer_state={"time": self.elapsed, "data_position": self.cursor,
                               "num_processes": self.world, "chat_template_applied": self.chat_template_applied},
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
        flat = ZeroVarianceWatch() if self.is_main else None
        if self.resume_ckpt is not None and self.step >= cfg.total_steps and self.is_main:
            warnings.warn(finished_run_message(self.out, self.step, cfg.total_steps), UserWarning, stacklevel=2)
        try:
            if do_eval and cfg.eval_at_start and self.step == 0:
                ev = self.evaluate()
                self.logger.log_eval(ev)
                self.logger.print_eval(ev, echo=bar is None)
            while self.step < cfg.total_steps:
                if (signum := signals.requested(self.acc)) is not None:  # SIGINT / SIGTERM: save, then stop
                    raise signals.stop_run(self, signum)
                metrics = self.train_step()
                self.logger.log_metrics({k: (clean_float(v) if isinstance(v, float) else v) for k, v in metrics.items()})
                self.logger.print_step(metrics, echo=bar is None)
                if flat is not None:
                    flat(metrics)
                if bar is not None:
                    bar.update(1)
                    loss = "n/a" if metrics["loss"] is None else f"{metrics['loss']:.4f}"
                    acc = "n/a" if metrics["accuracy"] is None else f"{metrics['accuracy']:.2f}"
                    bar.set_postfix(reward=f"{metrics['reward/mean']:.3f}", acc=acc, loss=loss,
                                    len=f"{metrics['length/mean']:.1f}")
                last, ev = self.step == cfg.total_steps, {}
                if do_eval and (last or (cfg.eval_every > 0 and self.step % cfg.eval_every == 0)):
                    ev = self.evaluate()
                    self.logger.log_eval(ev)
                    self.logger.print_eval(ev, echo=bar is None)
                    if bar is not None:
                        bar.write(eval_line(ev))
                for callback in self.callbacks:
                    callback({**metrics, **{k: v for k, v in ev.items() if k.startswith("eval/")}})
                if last or (cfg.save_every > 0 and self.step % cfg.save_every == 0):
                    self.save()
        finally:
            if bar is not None:
                bar.close()
            self.logger.close()
            self.close()
        return self.out


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None, overwrite: bool = False,
          reward_funcs: dict[str, Callable] | None = None, **algorithm_state: Any) -> Path:
    """Train with ``config`` and return the run folder (``config.output_dir``).

    ``resume``: a run folder or checkpoint to continue from, written into that run folder (its saved
    config is used when ``config`` is None; otherwise the two must agree except for the keys in
    ``spro.config.RESUMABLE_DIFFERENCES``). A new run into a folder that holds a run stops with an
    error, unless ``overwrite``: that run is then moved aside to ``<folder>.old-N``
    (``spro.trainer.rundir``). ``reward_funcs``: ``{name: fn}`` used instead of looking the names of
    ``config.data.rewards`` up in ``spro.rewards``. Other keyword arguments go to the algorithm's
    ``setup`` hook (PRIME: ``prm=``, a process reward model of your own).

    SIGINT / SIGTERM stop the run after the step under way, with a checkpoint, raising
    ``spro.trainer.signals.TrainingStopped`` (a second signal ends the process at once).
    """
    with signals.stop_on_signals():
        return Trainer(config, resume=resume, overwrite=overwrite, reward_funcs=reward_funcs, **algorithm_state).train()
