"""PRIME's implicit process reward model (Cui et al., arXiv:2502.01456), as a self-contained part.

The implicit PRM is a causal LM pi_phi, initialised from (a copy of) the policy and trained online
with its own optimiser. Its per-token process reward is

    q[i,t] = log pi_phi(y_{i,t} | x, y_{i,<t}) - log pi_ref(y_{i,t} | x, y_{i,<t})

(`ImplicitPRM.process_rewards` returns ``beta * q``), and it is trained on the outcome label r_i in
[0, 1] of each response with the cross-entropy loss

    loss = mean_i BCE( sigmoid(beta * sum_t q[i,t] * mask[i,t]), r_i )

as in PRIME's code (``compute_ce_dpo_loss_rm``: sigmoid of beta times the masked token sum of the
log-ratio, binary cross-entropy against the accuracy label; beta = 0.05). Here it is computed from
the logit with ``binary_cross_entropy_with_logits``, which is the same function, numerically stable.

One API: :class:`ImplicitPRM` works on the trainer's ``spro.rollout.RolloutBatch`` with the
trainer's log-prob function (``TrainerContext.logprobs``, ``spro.models.logprobs.logprob_fn``: same
temperature, position ids and prompt-prefix sharing as the policy and reference passes), so
``prm_logp - ref_logp`` is exactly 0 for an untrained PRM. It is also the object of the trainer's
``prm=`` hook (``compute_logp(batch)``, ``update(batch, labels, ref_logp=...)``, ``save`` /
``load``); the trainer builds one for ``algorithm.name=prime`` (see docs/algorithms.md, "PRIME in
the trainer").

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
    "implicit_prm_loss",
    "ImplicitPRM",
    "filter_groups_by_accuracy",
]

LogprobFn = Callable[..., torch.Tensor]  # fn(model, batch, *, grad=False) -> [B, T]


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
        logprobs: ``fn(model, batch, *, grad=False) -> [B, T]`` log-probs of a ``RolloutBatch``'s
            response tokens: the trainer's (``TrainerContext.logprobs``), so that PRM and reference
            log-probs share one convention. None: ``spro.models.logprobs.logprob_fn`` at
            ``temperature`` with prompt-prefix sharing over groups of ``group_size``.
        beta: the implicit-reward scale (PRIME: 0.05), in both the loss and `process_rewards`.
        lr, weight_decay, adam_betas, adam_eps: AdamW settings for the PRM's parameters.
        max_grad_norm: clip the PRM's gradient norm to this before each step (None: no clipping).
        micro_batch: responses per forward/backward pass of `update` and `compute_logp` (None: all).
        grad_reducer: ``fn(params, n_rows)`` combining gradients across processes after the backward
            passes and before clipping (every parameter then has a ``.grad``; ``n_rows`` may be 0).
        copy_model: deep-copy ``model`` (True) or train it in place (False).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        logprobs: LogprobFn | None = None,
        beta: float = 0.05,
        lr: float,
        weight_decay: float = 0.0,
        adam_betas: tuple[float, float] = (0.9, 0.999),
        adam_eps: float = 1e-8,
        max_grad_norm: float | None = 1.0,
        temperature: float = 1.0,
        group_size: int | None = None,
        micro_batch: int | None = None,
        grad_reducer: Callable[[list[torch.Tensor], int], None] | None = None,
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
        if micro_batch is not None and (int(micro_batch) != micro_batch or micro_batch < 1):
            raise ValueError(f"ImplicitPRM: micro_batch must be a positive integer or None, got {micro_batch!r}")
        if logprobs is None:
            from spro.models.logprobs import logprob_fn

            logprobs = logprob_fn(temperature=temperature, group_size=group_size)
        self.model = copy.deepcopy(model) if copy_model else model
        self.model.requires_grad_(True)
        self.logprobs = logprobs
        self.beta = float(beta)
        self.max_grad_norm = max_grad_norm
        self.micro_batch = int(micro_batch) if micro_batch else None
        self.grad_reducer = grad_reducer
        self.optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=lr,
            betas=adam_betas,
            eps=adam_eps,
            weight_decay=weight_decay,
        )
        self.num_updates = 0

    def _slices(self, b: int) -> list[slice]:
        step = self.micro_batch or b
        return [slice(i, min(i + step, b)) for i in range(0, b, step)] if b else []

    def _logp(self, batch: Any, rows: slice, grad: bool) -> torch.Tensor:
        sub = batch if rows == slice(0, len(batch)) else batch.select(torch.arange(len(batch))[rows])
        return self.logprobs(self.model, sub, grad=grad)

    def compute_logp(self, batch: Any) -> torch.Tensor:
        """log pi_phi of the response tokens of a ``RolloutBatch``, [B, T] float32, no gradient; 0 where masked."""
        mask = batch.completion_mask.to(torch.float32)
        with torch.no_grad():
            parts = [self._logp(batch, s, grad=False) for s in self._slices(len(batch))]
        if not parts:
            return torch.zeros_like(mask)
        return torch.cat(parts, dim=0).float() * mask

    def process_rewards(self, prm_logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-token implicit process reward beta * (prm_logp - ref_logp) * mask, [B, T]."""
        if prm_logp.shape != ref_logp.shape or prm_logp.shape != mask.shape:
            raise ValueError(
                f"process_rewards: shapes differ: prm_logp {tuple(prm_logp.shape)}, ref_logp "
                f"{tuple(ref_logp.shape)}, mask {tuple(mask.shape)}"
            )
        return self.beta * (prm_logp - ref_logp) * mask.to(prm_logp.dtype)

    def update(self, batch: Any, labels: torch.Tensor, ref_logp: torch.Tensor | None = None) -> dict[str, float]:
        """One optimiser step of the PRM on a ``RolloutBatch`` with outcome ``labels`` [B] in [0, 1], with
        gradient accumulation over micro-batches.

        ``ref_logp`` [B, T]: the reference log-probs of the batch (the trainer passes the ones it computed;
        required). The loss is `implicit_prm_loss` averaged over the whole batch (each micro-batch
        contributes its sum / B, so the gradient equals the full-batch one).

        Returns floats: ``loss`` (the BCE before the step), ``accuracy`` (fraction of responses where
        sign(beta * sum_t q) agrees with the label, label > 0.5 counting as positive and a score of
        exactly 0 counting half), ``score_mean`` (mean of beta * sum_t q), ``grad_norm`` (before
        clipping), ``lr`` (the PRIME algorithm logs them as ``prm/*``).
        """
        if ref_logp is None:
            raise ValueError("ImplicitPRM.update: ref_logp is required (the trainer passes its reference log-probs)")
        completion_mask = batch.completion_mask
        b = len(batch)
        if b < 1 and self.grad_reducer is None:
            raise ValueError("ImplicitPRM.update: the batch is empty")
        labels = torch.as_tensor(labels, dtype=torch.float32, device=completion_mask.device).reshape(-1)
        if labels.shape[0] != b:
            raise ValueError(f"ImplicitPRM.update: labels has {labels.shape[0]} entries, batch has {b}")
        if not torch.isfinite(labels).all() or (labels < 0).any() or (labels > 1).any():
            raise ValueError("ImplicitPRM.update: labels must be finite and in [0, 1]")
        if tuple(ref_logp.shape) != tuple(completion_mask.shape):
            raise ValueError(
                f"ImplicitPRM.update: ref_logp {tuple(ref_logp.shape)} must match the batch's completion_mask "
                f"{tuple(completion_mask.shape)}"
            )
        ref_logp = ref_logp.detach().float()
        mask = completion_mask.to(torch.float32)

        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        loss_sum, correct, score_sum = 0.0, 0.0, 0.0
        for s in self._slices(b):
            logp = self._logp(batch, s, grad=True).float()
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
        if self.grad_reducer is not None:
            for p in trainable:
                if p.grad is None:
                    p.grad = torch.zeros_like(p)
            self.grad_reducer(trainable, b)
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
            "loss": loss_sum / n,
            "accuracy": correct / n,
            "score_mean": score_sum / n,
            "grad_norm": grad_norm,
            "lr": float(self.optimizer.param_groups[0]["lr"]),
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

    def save(self, folder: str | Path) -> None:
        """Write the PRM into ``folder``: ``model.safetensors`` (weights) and ``state.pt`` (the rest)."""
        from safetensors.torch import save_model

        folder = Path(folder)
        save_model(self.model, str(folder / "model.safetensors"))
        state = self.state_dict()
        state.pop("model")
        torch.save(state, folder / "state.pt")

    def load(self, folder: str | Path) -> None:
        """Restore what `save` wrote (ValueError naming the file when something is missing)."""
        from safetensors.torch import load_model

        folder = Path(folder)
        for name in ("model.safetensors", "state.pt"):
            if not (folder / name).is_file():
                raise ValueError(f"ImplicitPRM.load: {folder / name} is missing")
        state = torch.load(folder / "state.pt", map_location="cpu", weights_only=True)
        load_model(self.model, str(folder / "model.safetensors"), device=str(next(self.model.parameters()).device))
        self.load_state_dict({**state, "model": self.model.state_dict()})


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
