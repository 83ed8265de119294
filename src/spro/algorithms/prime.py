"""PRIME (Cui et al. 2025, arXiv 2502.01456) as an algorithm: an implicit PRM trained online.

The PRM machinery (``ImplicitPRM``, the accuracy filter) is in
``spro.algorithms.prm``; this module wires it into the trainer's hooks, in PRIME's order (verl
``recipe/prime``): drop the prompts whose group accuracy is outside the filter band (``select``),
update the PRM on the kept responses and compute its log-probs (``prepare``), then PRIME's
advantage (``advantages``). The PRM is saved in checkpoints (``save`` / ``load``).
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spro.algorithms.core import prime_advantage
from spro.algorithms.prm import ImplicitPRM, filter_groups_by_accuracy
from spro.algorithms.registry import AdvantageInputs, Algorithm, TrainerContext, register_algorithm
from spro.options import ConfigError, Options, option


@dataclass
class PRIMEOptions(Options):
    prm_lr: float | None = option(
        None,
        help="AdamW learning rate of the implicit PRM (a copy of the starting policy); null = 2 x optim.lr, the "
        "ratio PRIME used (PRM 1e-6, 7B policy 5e-7; arXiv:2502.01456, verl recipe/prime).",
        check=(lambda v: v is None or v > 0, "> 0 or null"),
    )
    prm_beta: float = option(
        0.05,
        help="The implicit PRM's beta, in its loss BCE(sigmoid(beta * sum_t (log pi_phi - log pi_ref)), label) and "
        "in its process reward beta * (log pi_phi - log pi_ref) (arXiv:2502.01456: 0.05).",
        check=(lambda v: v > 0, "> 0"),
    )
    prm_micro_batch: int = option(
        0, help="Responses per PRM forward/backward pass (gradient accumulation; one PRM optimizer step per "
        "training step); 0 = the whole batch at once.", check=(lambda v: v >= 0, ">= 0"),
    )
    prm_max_grad_norm: float = option(
        10.0, help="Clip the PRM's gradient norm to this (0 = no clipping; PRIME's code and verl's recipe: 10).",
        check=(lambda v: v >= 0, ">= 0"),
    )
    prm_adam_beta2: float = option(
        0.999, help="AdamW beta2 of the PRM (PRIME: 0.999; beta1, eps and weight decay are optim's).",
        check=(lambda v: 0 <= v < 1, "in [0, 1)"),
    )
    prm_update: str = option(
        "before",
        help="'before' = update the PRM on the batch, then compute the process rewards with the updated PRM "
        "(PRIME's 'double forward'); 'after' = process rewards from the PRM before its update ('single forward').",
        choices=("before", "after"),
    )
    filter: bool = option(
        True,
        help="Drop the prompts whose group accuracy (fraction of correct responses) is outside [filter_low, "
        "filter_high] before the PRM and policy updates; a step where every prompt is dropped makes no update "
        "(prime/skipped = 1).",
    )
    filter_low: float = option(0.2, help="Lower bound of the accuracy filter (inclusive).")
    filter_high: float = option(0.8, help="Upper bound of the accuracy filter (inclusive).")
    outcome_coef: float = option(
        1.0, help="Weight of the outcome (leave-one-out) source (PRIME: 5, equal to the process weight).")
    process_coef: float = option(
        1.0, help="Weight of the implicit process-reward source (PRIME: 5; only the ratio matters after whitening).")
    process_norm: str = option(
        "batch_norm",
        help="'batch_norm' (PRIME's prime_norm): the token process rewards are the raw log-ratio log pi_phi - log "
        "pi_ref divided by the batch's largest |reverse cumulative sum| (+1e-6), before the baseline; 'none' = "
        "prm_beta * log-ratio as is.",
        choices=("batch_norm", "none"),
    )
    process_baseline: str = option(
        "verl_recipe",
        help="Leave-one-out baseline of the process rewards: 'verl_recipe' = the formula of PRIME's released code "
        "and verl's recipe, q[t] * n/(n-1) - sum_k mean_k / (n-1) over the n responses of the group; 'others_mean' "
        "= q[t] minus the mean of the other responses' mean q.",
        choices=("verl_recipe", "others_mean"),
    )
    credit: str = option(
        "sum", help="'min_form' = PURE's min-form credit (arXiv:2504.15275) on the process rewards before the "
        "baseline: q[t] weighted by softmax over the response's tokens of -q/min_form_temperature (not in PRIME).",
        choices=("sum", "min_form"),
    )
    min_form_temperature: float = option(0.1, help="Temperature of credit=min_form (PURE: 0.1).",
                                         check=(lambda v: v > 0, "> 0"))
    refill: int = option(
        4,
        help="With the filter: sample up to this many rounds of rollout.prompts_per_step prompts per step, until "
        "prompts_per_step prompts pass the filter (PRIME keeps the batch full by oversampling); prompts beyond "
        "that are not trained on. 1 = no refill (a step trains on the prompts that pass in one round).",
        check=(lambda v: v >= 1, ">= 1"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.filter_low <= self.filter_high <= 1:
            raise ConfigError(f"filter_low / filter_high must satisfy 0 <= low <= high <= 1, got "
                              f"{self.filter_low} / {self.filter_high}")


@register_algorithm("prime", options=PRIMEOptions, needs_reference=True, loss_agg="token-mean")
class PRIME(Algorithm):
    """PRIME (Cui et al. 2025, arXiv 2502.01456): an implicit PRM, initialised from the policy and trained
    online on the outcome labels, gives per-token rewards; leave-one-out advantages per reward source."""

    reference = "arXiv:2502.01456"
    needs_accuracy = True  # the PRM's labels and the accuracy filter are the verifier's correct / incorrect
    metric_keys = ("time/prm", "prime/filtered_frac", "prime/skipped")
    diagnostic_names = ("prm",)

    @classmethod
    def check_config(cls, config: Any) -> None:
        if config.model.lora.rank > 0:
            raise ConfigError("model.lora.rank > 0 is not supported with algorithm.name=prime: PRIME's implicit PRM "
                              "is a full trainable copy of the reference model, so LoRA would save no memory; set "
                              "model.lora.rank=0")

    @property
    def max_rounds(self) -> int:
        return self.options.refill if self.options.filter else 1

    def setup(self, ctx: TrainerContext) -> None:
        """Build the implicit PRM (or use the ``prm`` object passed to ``train``: ``compute_logp(batch)
        -> [B, T]``, ``update(batch, labels[, ref_logp=]) -> metrics``, optionally ``save`` / ``load``)."""
        o, cfg, acc = self.options, ctx.config, ctx.accelerator
        if o.filter and acc.num_processes > 1:
            raise ConfigError("algorithm.prime.filter=true is not supported with several processes (each would "
                              "drop a different number of prompts); set algorithm.prime.filter=false")
        self.prm = ctx.user_state.get("prm")
        if self.prm is None:
            self.prm = ImplicitPRM(
                ctx.reference, logprobs=ctx.logprobs, beta=o.prm_beta, lr=o.prm_lr or 2 * cfg.optim.lr,
                weight_decay=cfg.optim.weight_decay, adam_betas=(cfg.optim.adam_beta1, o.prm_adam_beta2),
                adam_eps=cfg.optim.adam_eps, max_grad_norm=o.prm_max_grad_norm or None,
                micro_batch=o.prm_micro_batch or None,
                grad_reducer=_grad_reducer(acc) if acc.num_processes > 1 else None,
            )
            if cfg.model.gradient_checkpointing:
                self.prm.model.gradient_checkpointing_enable()
        params = inspect.signature(self.prm.update).parameters
        self._update_takes_ref = "ref_logp" in params or any(p.kind == p.VAR_KEYWORD for p in params.values())
        self._metrics: dict[str, float] = {}

    def select(self, x: AdvantageInputs) -> torch.Tensor | None:
        o = self.options
        keep = torch.ones(x.rewards.shape[0], dtype=torch.bool, device=x.mask.device)
        if o.filter:
            keep = filter_groups_by_accuracy(x.correct.float(), x.group_ids.cpu(), o.filter_low,
                                             o.filter_high).to(x.mask.device)
        if self._metrics.get("step") != x.step:  # the first round of a step
            self._metrics = {"step": x.step, "time/prm": 0.0, "seen": 0.0, "kept": 0.0}
        self._metrics["seen"] += keep.numel()
        self._metrics["kept"] += float(keep.sum())
        return keep

    def prepare(self, batch: Any, x: AdvantageInputs) -> AdvantageInputs:
        t0 = time.perf_counter()
        labels = x.correct.float().to(x.mask.device)
        kw = {"ref_logp": x.ref_logp} if self._update_takes_ref else {}
        if self.options.prm_update == "after":
            x.extra["prm_logp"] = self.prm.compute_logp(batch)
        self._metrics.update({f"prm/{k}": v for k, v in (self.prm.update(batch, labels, **kw) or {}).items()})
        if self.options.prm_update == "before":
            x.extra["prm_logp"] = self.prm.compute_logp(batch)
        self._metrics["time/prm"] = time.perf_counter() - t0
        return x

    def advantages(self, x: AdvantageInputs) -> torch.Tensor:
        o = self.options
        return prime_advantage(x.rewards, x.extra["prm_logp"], x.ref_logp, x.mask, x.group_ids, beta=o.prm_beta,
                               outcome_coef=o.outcome_coef, process_coef=o.process_coef,
                               process_baseline=o.process_baseline, process_norm=o.process_norm, credit=o.credit,
                               min_form_temperature=o.min_form_temperature)

    def diagnostic_signals(self, x: AdvantageInputs) -> dict[str, torch.Tensor]:
        if "prm_logp" not in x.extra or x.ref_logp is None:
            return {}
        return {"prm": (x.extra["prm_logp"] - x.ref_logp) * x.mask}

    def metrics(self, x: AdvantageInputs, advantages: torch.Tensor | None) -> dict[str, float]:
        m = {k: v for k, v in self._metrics.items() if k not in ("step", "seen", "kept")}
        m["prime/filtered_frac"] = 1.0 - self._metrics["kept"] / max(self._metrics["seen"], 1.0)
        m["prime/skipped"] = float(advantages is None)
        return m

    def save(self, folder: Path) -> None:
        if hasattr(self.prm, "save"):
            self.prm.save(folder)

    def load(self, folder: Path) -> None:
        if hasattr(self.prm, "load") and Path(folder).is_dir():
            self.prm.load(folder)


def _grad_reducer(acc: Any):
    """Average the PRM's gradients over processes, weighted by their number of responses."""

    def reduce(params: list[torch.Tensor], n_rows: int) -> None:
        total = float(acc.reduce(torch.tensor(float(n_rows), device=acc.device), "sum"))
        for p in params:
            p.grad.mul_(n_rows / max(total, 1.0))
            p.grad.copy_(acc.reduce(p.grad, "sum"))

    return reduce
