"""PRIME's implicit process reward model (Cui et al., arXiv:2502.01456), as a self-contained part.

The implicit PRM is a causal LM pi_phi, initialised from (a copy of) the policy and trained online
with its own optimiser. Its per-token process reward is

    q[i,t] = log pi_phi(y_{i,t} | x, y_{i,<t}) - log pi_ref(y_{i,t} | x, y_{i,<t})

(`process_rewards` returns ``beta * q``, the reward the PRIME advantage consumes), and it is
trained on the outcome label r_i in [0, 1] of each response with the cross-entropy loss

    loss = mean_i BCE( sigmoid(beta * sum_t q[i,t] * mask[i,t]), r_i )

as in PRIME's code (``compute_ce_dpo_loss_rm``: sigmoid of beta times the masked token sum of the
log-ratio, binary cross-entropy against the accuracy label; beta = 0.05). Here it is computed from
the logit with ``binary_cross_entropy_with_logits``, which is the same function, numerically stable.

Tensor conventions (as in TRL): ``input_ids`` / ``attention_mask`` are [B, L] = prompt followed by
completion, ``completion_mask`` is [B, T] and covers the *last* T positions of ``input_ids``
(1 = a completion token that counts, 0 = padding / after eos); per-token outputs are [B, T].
``ref_logp`` must come from the same log-prob convention (positions from the attention mask, same
temperature) as the PRM's, otherwise q is not zero for an untrained PRM; set ``temperature`` to the
one the reference log-probs used, or pass ``logp_fn`` to share the trainer's log-prob function.

`PRMStage` adapts an ImplicitPRM to the trainer's ``prm=`` hook (``compute_logp(batch)``,
``update(batch, labels, ref_logp=...)``, ``save`` / ``load``) on `spro.rollout.RolloutBatch`
batches, with the trainer's own ``sequence_logps``; the trainer builds one for
``algorithm.name=prime`` (see docs/algorithms.md, "PRIME in the trainer").

`filter_groups_by_accuracy` is PRIME's prompt filter: keep only groups whose accuracy (mean outcome
reward) lies in [low, high], bounds included.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F

__all__ = [
    "PRMStage",
    "completion_token_logps",
    "implicit_prm_loss",
    "ImplicitPRM",
    "filter_groups_by_accuracy",
]

LogpFn = Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, int], torch.Tensor]


def completion_token_logps(
    model: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    n_completion: int,
    *,
    temperature: float = 1.0,
) -> torch.Tensor:
    """Log-probabilities of the last ``n_completion`` tokens of each row under ``model``.

    input_ids, attention_mask: [B, L]; returns [B, T] float32 with T = n_completion, where entry
    [b, t] is log p(input_ids[b, L-T+t] | input_ids[b, :L-T+t]) from logits divided by
    ``temperature``. Position ids follow the attention mask (``cumsum - 1``, as ``generate`` and
    the trainer's ``sequence_logps`` do), so left-padded prompts get the positions they were
    sampled with. Gradients flow if enabled by the caller.
    """
    if not 0 < n_completion < input_ids.shape[1]:
        raise ValueError(
            f"completion_token_logps: n_completion={n_completion} must be in [1, L-1] with L={input_ids.shape[1]}"
        )
    pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    try:
        out = model(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
            logits_to_keep=n_completion + 1, use_cache=False,
        )
    except TypeError:  # models without logits_to_keep
        out = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos, use_cache=False)
    logits = out.logits[:, -(n_completion + 1) : -1, :].float()  # [B, T, V], predicts the next token
    if temperature != 1.0:
        logits = logits / temperature
    targets = input_ids[:, -n_completion:]  # [B, T]
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, T]
    return picked - torch.logsumexp(logits, dim=-1)


def implicit_prm_loss(
    prm_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    mask: torch.Tensor,
    labels: torch.Tensor,
    beta: float,
    reduction: str = "mean",
) -> torch.Tensor:
    """PRIME's cross-entropy loss for the implicit PRM.

    prm_logp, ref_logp, mask: [B, T]; labels: [B] in [0, 1].
    score[i] = beta * sum_t (prm_logp - ref_logp)[i,t] * mask[i,t]    ([B])
    loss     = BCE(sigmoid(score), labels), reduced by ``reduction`` ("mean" | "sum" | "none").
    """
    score = beta * ((prm_logp - ref_logp) * mask).sum(dim=-1)
    return F.binary_cross_entropy_with_logits(score, labels.to(score.dtype), reduction=reduction)


class ImplicitPRM:
    """PRIME's implicit PRM: a causal LM trained online from outcome labels, with its own AdamW.

    Args:
        model: the policy (or any causal LM) to initialise from. With ``copy_model=True`` (default)
            a deep copy is taken, so training the PRM never touches the policy.
        ref_model: optional frozen reference; only needed to call `ref_token_logps` or `update`
            without ``ref_logp``. Usually the trainer already has ref log-probs and passes them.
        beta: the implicit-reward scale (PRIME: 0.05), in both the loss and `process_rewards`.
        lr, weight_decay, adam_betas, adam_eps: AdamW settings for the PRM's parameters.
        max_grad_norm: clip the PRM's gradient norm to this before each step (None: no clipping).
        temperature: logits are divided by it in the default log-prob function.
        logp_fn: ``fn(model, input_ids, attention_mask, n_completion) -> [B, T]`` log-probs; defaults
            to `completion_token_logps` with ``temperature``. Use the trainer's own function so that
            PRM and reference log-probs share one convention.
        copy_model: deep-copy ``model`` (True) or train it in place (False).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        ref_model: torch.nn.Module | None = None,
        *,
        beta: float = 0.05,
        lr: float,
        weight_decay: float = 0.0,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        max_grad_norm: float | None = 1.0,
        temperature: float = 1.0,
        logp_fn: LogpFn | None = None,
        copy_model: bool = True,
    ) -> None:
        if not beta > 0:
            raise ValueError(f"ImplicitPRM: beta must be > 0, got {beta!r}")
        if not lr > 0:
            raise ValueError(f"ImplicitPRM: lr must be > 0, got {lr!r}")
        if max_grad_norm is not None and not max_grad_norm > 0:
            raise ValueError(f"ImplicitPRM: max_grad_norm must be > 0 or None, got {max_grad_norm!r}")
        if not temperature > 0:
            raise ValueError(f"ImplicitPRM: temperature must be > 0, got {temperature!r}")
        self.model = copy.deepcopy(model) if copy_model else model
        self.model.requires_grad_(True)
        self.ref_model = ref_model
        if ref_model is not None:
            ref_model.requires_grad_(False)
        self.beta = float(beta)
        self.max_grad_norm = max_grad_norm
        self.temperature = float(temperature)
        self._logp_fn: LogpFn = logp_fn or (
            lambda m, ids, am, n: completion_token_logps(m, ids, am, n, temperature=self.temperature)
        )
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=lr,
            betas=adam_betas,
            eps=adam_eps,
            weight_decay=weight_decay,
        )
        self.num_updates = 0

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def _check(input_ids: torch.Tensor, attention_mask: torch.Tensor, completion_mask: torch.Tensor) -> int:
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"ImplicitPRM: input_ids and attention_mask must both be [B, L]; got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        if completion_mask.dim() != 2 or completion_mask.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"ImplicitPRM: completion_mask must be [B, T] with B={input_ids.shape[0]}; got {tuple(completion_mask.shape)}"
            )
        t = completion_mask.shape[1]
        if not 0 < t < input_ids.shape[1]:
            raise ValueError(f"ImplicitPRM: completion length T={t} must be in [1, L-1], L={input_ids.shape[1]}")
        return t

    @staticmethod
    def _micro_batches(b: int, micro_batch: int | None) -> list[slice]:
        if micro_batch is None:
            micro_batch = b
        if int(micro_batch) != micro_batch or micro_batch < 1:
            raise ValueError(f"ImplicitPRM: micro_batch must be a positive integer, got {micro_batch!r}")
        return [slice(i, min(i + int(micro_batch), b)) for i in range(0, b, int(micro_batch))]

    def _logps(self, model: torch.nn.Module, input_ids, attention_mask, completion_mask, micro_batch) -> torch.Tensor:
        t = self._check(input_ids, attention_mask, completion_mask)
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                parts = [
                    self._logp_fn(model, input_ids[s], attention_mask[s], t)
                    for s in self._micro_batches(input_ids.shape[0], micro_batch)
                ]
        finally:
            model.train(was_training)
        return torch.cat(parts, dim=0).float() * completion_mask.to(torch.float32)

    # ------------------------------------------------------------------ public API
    def token_logps(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_mask: torch.Tensor,
        *,
        micro_batch: int | None = None,
    ) -> torch.Tensor:
        """log pi_phi of the completion tokens, [B, T], no gradient; 0 where completion_mask is 0."""
        return self._logps(self.model, input_ids, attention_mask, completion_mask, micro_batch)

    def ref_token_logps(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_mask: torch.Tensor,
        *,
        micro_batch: int | None = None,
    ) -> torch.Tensor:
        """log pi_ref of the completion tokens, [B, T] (needs ``ref_model``); 0 where masked."""
        if self.ref_model is None:
            raise ValueError("ImplicitPRM: no ref_model was given; pass ref_logp explicitly")
        return self._logps(self.ref_model, input_ids, attention_mask, completion_mask, micro_batch)

    def process_rewards(self, prm_logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-token implicit process reward beta * (prm_logp - ref_logp) * mask, [B, T]."""
        if prm_logp.shape != ref_logp.shape or prm_logp.shape != mask.shape:
            raise ValueError(
                f"process_rewards: shapes differ: prm_logp {tuple(prm_logp.shape)}, ref_logp "
                f"{tuple(ref_logp.shape)}, mask {tuple(mask.shape)}"
            )
        return self.beta * (prm_logp - ref_logp) * mask.to(prm_logp.dtype)

    def update(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        completion_mask: torch.Tensor,
        ref_logp: torch.Tensor | None,
        outcome_labels: torch.Tensor,
        *,
        micro_batch: int | None = None,
        grad_reducer: Callable[[list[torch.Tensor], int], None] | None = None,
    ) -> dict[str, float]:
        """One optimiser step of the PRM on a batch, with gradient accumulation over micro-batches.

        input_ids, attention_mask: [B, L]; completion_mask, ref_logp: [B, T] (ref_logp None: it is
        computed with ``ref_model``); outcome_labels: [B] in [0, 1]. The loss is
        `implicit_prm_loss` averaged over the whole batch (each micro-batch contributes its sum / B,
        so the gradient equals the full-batch one).

        Returns floats: ``prm/loss`` (the BCE before the step), ``prm/accuracy`` (fraction of
        responses where sign(beta * sum_t q) agrees with the label, label > 0.5 counting as
        positive and a score of exactly 0 counting half), ``prm/score_mean`` (mean of
        beta * sum_t q), ``prm/grad_norm`` (before clipping), ``prm/lr``. ``grad_reducer``: see
        `update_with`.
        """
        t = self._check(input_ids, attention_mask, completion_mask)
        b = input_ids.shape[0]
        if ref_logp is None:
            ref_logp = self.ref_token_logps(input_ids, attention_mask, completion_mask, micro_batch=micro_batch)
        return self.update_with(
            lambda s: self._logp_fn(self.model, input_ids[s], attention_mask[s], t),
            b, completion_mask, ref_logp, outcome_labels, micro_batch=micro_batch, grad_reducer=grad_reducer,
        )

    def update_with(
        self,
        logp_of: Callable[[slice], torch.Tensor],
        n_rows: int,
        completion_mask: torch.Tensor,
        ref_logp: torch.Tensor,
        outcome_labels: torch.Tensor,
        *,
        micro_batch: int | None = None,
        grad_reducer: Callable[[list[torch.Tensor], int], None] | None = None,
    ) -> dict[str, float]:
        """The optimiser step of `update`, with the PRM's log-probs given by ``logp_of``.

        ``logp_of(rows: slice) -> [b, T]`` must return log pi_phi of the completion tokens of those
        rows *with gradients* (e.g. the trainer's ``sequence_logps`` on a slice of its batch).
        completion_mask, ref_logp: [n_rows, T]; outcome_labels: [n_rows] in [0, 1].
        ``grad_reducer(params, n_rows)``, when given, is called after the backward passes and before
        clipping, to combine gradients across processes; every parameter then has a ``.grad``
        (zeros where no gradient arrived) and ``n_rows`` may be 0 (this process contributes
        nothing but still takes part in the collective step).
        """
        b = int(n_rows)
        if b < 1 and grad_reducer is None:
            raise ValueError("ImplicitPRM.update: the batch is empty")
        labels = torch.as_tensor(outcome_labels, dtype=torch.float32, device=completion_mask.device).reshape(-1)
        if labels.shape[0] != b:
            raise ValueError(f"ImplicitPRM.update: outcome_labels has {labels.shape[0]} entries, batch has {b}")
        if not torch.isfinite(labels).all() or (labels < 0).any() or (labels > 1).any():
            raise ValueError("ImplicitPRM.update: outcome_labels must be finite and in [0, 1]")
        if tuple(ref_logp.shape) != tuple(completion_mask.shape) or completion_mask.shape[0] != b:
            raise ValueError(
                f"ImplicitPRM.update: ref_logp {tuple(ref_logp.shape)} must match completion_mask "
                f"{tuple(completion_mask.shape)} with {b} rows"
            )
        ref_logp = ref_logp.detach().float()
        mask = completion_mask.to(torch.float32)

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, correct, score_sum = 0.0, 0.0, 0.0
        for s in self._micro_batches(b, micro_batch) if b else []:
            logp = logp_of(s).float()
            loss = implicit_prm_loss(logp, ref_logp[s], mask[s], labels[s], self.beta, reduction="sum")
            if not torch.isfinite(loss):
                self.optimizer.zero_grad(set_to_none=True)
                raise FloatingPointError("ImplicitPRM.update: non-finite PRM loss; no step taken")
            (loss / b).backward()
            with torch.no_grad():
                score = self.beta * ((logp - ref_logp[s]) * mask[s]).sum(-1)
                target = labels[s] > 0.5
                pred_pos, tie = score > 0, score == 0
                correct += float(((pred_pos == target) & ~tie).sum() + 0.5 * tie.sum())
                loss_sum += float(loss)
                score_sum += float(score.sum())
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if grad_reducer is not None:
            for p in trainable:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            grad_reducer(trainable, b)
        params = [p for p in trainable if p.grad is not None]
        if self.max_grad_norm is not None:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm))
        else:
            grad_norm = float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))) if params else 0.0
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.model.eval()
        self.num_updates += 1
        n = max(b, 1)
        return {
            "prm/loss": loss_sum / n,
            "prm/accuracy": correct / n,
            "prm/score_mean": score_sum / n,
            "prm/grad_norm": grad_norm,
            "prm/lr": float(self.optimizer.param_groups[0]["lr"]),
        }

    # ------------------------------------------------------------------ checkpointing
    def state_dict(self) -> dict[str, Any]:
        """Model weights, optimiser state, beta and the update count (for checkpoints)."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "beta": self.beta,
            "num_updates": self.num_updates,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` saved. Raises ValueError on a missing key or a different beta."""
        missing = [k for k in ("model", "optimizer", "beta", "num_updates") if k not in state]
        if missing:
            raise ValueError(f"ImplicitPRM.load_state_dict: missing keys {missing}")
        if float(state["beta"]) != self.beta:
            raise ValueError(
                f"ImplicitPRM.load_state_dict: checkpoint has beta={state['beta']}, this PRM has beta={self.beta}"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.num_updates = int(state["num_updates"])


def filter_groups_by_accuracy(
    rewards: torch.Tensor,
    group_ids: torch.Tensor,
    low: float = 0.2,
    high: float = 0.8,
) -> torch.Tensor:
    """PRIME's prompt filter: keep the responses of groups whose accuracy is in [low, high].

    rewards: [B] outcome rewards (accuracy = the group's mean reward when rewards are 0/1);
    group_ids: [B] integer group (prompt) ids. Returns a bool keep mask [B]: True where
    ``low <= mean(rewards of the group) <= high`` (both bounds inclusive, compared in float64 with
    a 1e-9 tolerance so that e.g. 1/5 counts as 0.2). PRIME's default band is [0.2, 0.8]; it drops
    groups that are all (or almost all) right or wrong, whose outcome advantage is ~0.
    """
    rewards = torch.as_tensor(rewards)
    group_ids = torch.as_tensor(group_ids)
    if rewards.dim() != 1 or group_ids.shape != rewards.shape:
        raise ValueError(
            f"filter_groups_by_accuracy: rewards and group_ids must both be [B]; got "
            f"{tuple(rewards.shape)} and {tuple(group_ids.shape)}"
        )
    if not low <= high:
        raise ValueError(f"filter_groups_by_accuracy: need low <= high, got low={low}, high={high}")
    if rewards.numel() == 0:
        return torch.zeros(0, dtype=torch.bool, device=rewards.device)
    r = rewards.to(torch.float64)
    _, inverse = torch.unique(group_ids, return_inverse=True)
    n_groups = int(inverse.max()) + 1
    sums = torch.zeros(n_groups, dtype=torch.float64, device=r.device).index_add_(0, inverse, r)
    counts = torch.zeros(n_groups, dtype=torch.float64, device=r.device).index_add_(0, inverse, torch.ones_like(r))
    acc = (sums / counts)[inverse]
    tol = 1e-9
    return (acc >= low - tol) & (acc <= high + tol)


class PRMStage:
    """The trainer's process-reward-model hook (``spro.trainer``'s ``prm=`` protocol) on an ImplicitPRM.

    ``compute_logp(batch) -> [B, T]`` and ``update(batch, labels, ref_logp=None) -> metrics`` take the
    trainer's `spro.rollout.RolloutBatch` and compute log-probs with the trainer's own
    ``sequence_logps`` (same temperature, position ids and prompt-prefix sharing as the policy
    and reference passes), so ``prm_logp - ref_logp`` is exactly 0 for an untrained PRM.
    ``update`` reuses the ``ref_logp`` the trainer already computed (no extra reference pass).
    ``save(folder)`` / ``load(folder)`` write / read ``model.safetensors`` and ``state.pt``
    (optimiser state, beta, update count) for checkpoints.

    Args:
        prm: the ImplicitPRM (its model, optimiser and beta).
        temperature: the sampling temperature (the trainer divides logits by it everywhere).
        group_size: responses per prompt, enabling prompt-prefix sharing when a micro-batch holds
            whole groups (None: plain passes).
        micro_batch: responses per forward/backward pass (None or 0: the whole batch at once).
        grad_reducer: combines PRM gradients across processes (see `ImplicitPRM.update_with`).
    """

    def __init__(
        self,
        prm: ImplicitPRM,
        *,
        temperature: float = 1.0,
        group_size: int | None = None,
        micro_batch: int | None = None,
        grad_reducer: Callable[[list[torch.Tensor], int], None] | None = None,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"PRMStage: temperature must be > 0, got {temperature!r}")
        self.prm = prm
        self.temperature = float(temperature)
        self.group_size = group_size
        self.micro_batch = micro_batch or None
        self.grad_reducer = grad_reducer

    @property
    def model(self) -> torch.nn.Module:
        return self.prm.model

    def _slices(self, b: int) -> list[slice]:
        return self.prm._micro_batches(b, self.micro_batch) if b else []

    def _logp(self, batch: Any, rows: slice) -> torch.Tensor:
        from spro.models.logprobs import sequence_logps

        sub = batch if rows == slice(0, len(batch)) else batch.select(torch.arange(len(batch))[rows])
        return sequence_logps(self.prm.model, sub, temperature=self.temperature, group_size=self.group_size)[0]

    def compute_logp(self, batch: Any) -> torch.Tensor:
        """log pi_phi of the response tokens, [B, T] float32, no gradient; 0 where masked."""
        model = self.prm.model
        was_training = model.training
        model.eval()
        try:
            with torch.no_grad():
                parts = [self._logp(batch, s) for s in self._slices(len(batch))]
        finally:
            model.train(was_training)
        mask = batch.completion_mask.to(torch.float32)
        if not parts:
            return torch.zeros_like(mask)
        return torch.cat(parts, dim=0).float() * mask

    def update(self, batch: Any, labels: torch.Tensor, ref_logp: torch.Tensor | None = None) -> dict[str, float]:
        """One PRM optimiser step on ``batch`` with outcome ``labels`` [B] in [0, 1].

        ``ref_logp`` [B, T]: the reference log-probs of the batch (the trainer passes the ones it
        computed); required, since this stage holds no reference model. Returns
        `ImplicitPRM.update`'s metrics without the ``prm/`` prefix (the trainer adds it).
        """
        if ref_logp is None:
            raise ValueError("PRMStage.update: ref_logp is required (the trainer passes its reference log-probs)")
        metrics = self.prm.update_with(
            lambda s: self._logp(batch, s), len(batch), batch.completion_mask, ref_logp, labels,
            micro_batch=self.micro_batch, grad_reducer=self.grad_reducer,
        )
        return {k.removeprefix("prm/"): v for k, v in metrics.items()}

    def save(self, folder: str | Path) -> None:
        """Write the PRM into ``folder``: ``model.safetensors`` (weights) and ``state.pt`` (the rest)."""
        from safetensors.torch import save_model

        folder = Path(folder)
        save_model(self.prm.model, str(folder / "model.safetensors"))
        state = self.prm.state_dict()
        state.pop("model")
        torch.save(state, folder / "state.pt")

    def load(self, folder: str | Path) -> None:
        """Restore what `save` wrote (ValueError naming the file when something is missing)."""
        from safetensors.torch import load_model

        folder = Path(folder)
        for name in ("model.safetensors", "state.pt"):
            if not (folder / name).is_file():
                raise ValueError(f"PRMStage.load: {folder / name} is missing")
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        load_model(self.prm.model, str(folder / "model.safetensors"), device=str(next(self.prm.model.parameters()).device))
        self.prm.load_state_dict({**state, "model": self.prm.model.state_dict()})
