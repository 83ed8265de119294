"""SPRO (Fei et al. 2025, arXiv 2507.01551): the policy as its own process reward model.

``SPROOptions`` is the one definition of SPRO's options: the trainer reads it from the config
section ``algorithm.spro.*``, the TRL integration as ``spro_*`` fields of ``SPROConfig``, the verl
integration as ``algorithm.spro_*`` keys. ``process_stats`` / ``process_metrics`` give the
``process/*`` metrics the integrations log (the trainer's process probes: ``spro.algorithms.probes``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from spro.algorithms.core import OUTCOME_SCALES, spro_terms, with_outcome
from spro.algorithms.probes import process_metrics, process_sums
from spro.algorithms.registry import AdvantageInputs, Algorithm, ProcessSignal, TrainerContext, register_algorithm
from spro.options import ConfigError, Options, option

Tensor = torch.Tensor

__all__ = ["SPROOptions", "SPRO", "process_stats", "process_metrics"]


@dataclass
class SPROOptions(Options):
    beta: float = option(
        0.05,
        help="Weight of the self-guided process reward p[t] = beta * (log pi_old - log pi_ref) (arXiv:2507.01551); "
        "it weighs the process term against the outcome term, 0 gives GRPO. The paper's value is not public; "
        "0.05 follows PRIME's implicit PRM.",
        check=(lambda v: v >= 0, ">= 0"),
    )
    outcome_scale: str = option(
        "group", help="Outcome advantage: 'group' = (r - mean) / (std + eps) within the group (GRPO), 'none' = r - mean, "
        "'batch' = divided by the std of the whole batch instead (as algorithm.grpo.outcome_scale).",
        choices=OUTCOME_SCALES,
    )
    msa_scale_std: bool = option(
        False, help="Ablation: divide the masked step advantage by the per-step std of the cumulative process "
        "rewards it compares (not in the paper's default reading).",
    )
    eps: float = option(1e-6, help="Added to standard deviations before dividing.", check=(lambda v: v >= 0, ">= 0"))
    process_reward: str = option(
        "cumulative", help="Ablation: 'cumulative' = R[t] = sum_{j<=t} p[j] (the paper), 'per_token' = p[t] alone.",
        choices=("cumulative", "per_token"),
    )
    baseline: str = option(
        "masked_step",
        help="Ablation: 'masked_step' = mean over the group's responses that still have step t (MSA, the paper), "
        "'pooled' = one mean over all valid tokens of the group, 'pooled_loo' = PRIME-style leave-one-out mean "
        "of the other responses' mean value.",
        choices=("masked_step", "pooled", "pooled_loo"),
    )
    process_only: bool = option(False, help="Ablation: drop the outcome advantage and train on the process term alone.")
    credit: str = option(
        "sum",
        help="Ablation: 'sum' = the paper's cumulative sum of p; 'min_form' = PURE's min-form credit (arXiv:2504.15275): "
        "p[t] weighted by softmax over the response's tokens of -p/min_form_temperature before summing, so that a "
        "response's total approaches its smallest token reward (not in the paper).",
        choices=("sum", "min_form"),
    )
    min_form_temperature: float = option(
        0.1, help="Temperature T of credit=min_form (PURE: 0.1); it applies to p = beta * (log pi_old - log pi_ref) "
        "as is, so with small p the weights approach uniform.", check=(lambda v: v > 0, "> 0"),
    )
    zero_variance_groups: str = option(
        "keep",
        help="Variant, not in the paper: 'drop' gives no process term to the responses of groups whose outcomes are "
        "all equal (there MSA is the only gradient and feeds the drift from the reference); 'keep' = the paper.",
        choices=("keep", "drop"),
    )
    process_squash: float | None = option(
        None,
        help="Variant, not in the paper: bound the process term to c * tanh(term / c) with c = this value (the "
        "outcome term has group std 1, so c = 0.5 keeps it below half of that); null = unbounded (the paper).",
        check=(lambda v: v is None or v > 0, "> 0 or null"),
    )
    ref_refresh_every: int = option(
        0,
        help="Variant, not in the paper: take pi_ref of the process reward from a copy of the policy refreshed every "
        "N steps (0 = the frozen starting policy, the paper). Costs a model copy and one more forward pass per step; "
        "the 'kl' metric stays the KL to the starting policy.",
        check=(lambda v: v >= 0, ">= 0"),
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.baseline == "pooled_loo" and self.msa_scale_std:
            raise ConfigError("msa_scale_std: not supported with baseline=pooled_loo")

    def core_kwargs(self) -> dict:
        """Keyword options of :func:`spro.algorithms.core.spro_advantage` (all but ``ref_refresh_every``)."""
        d = dataclasses.asdict(self)
        d.pop("ref_refresh_every")
        return d

    def terms_kwargs(self) -> dict:
        """Keyword options of :func:`spro.algorithms.core.spro_terms` (all but ``ref_refresh_every`` and
        ``process_only``)."""
        d = self.core_kwargs()
        d.pop("process_only")
        return d


@register_algorithm("spro", options=SPROOptions, needs_reference=True)
class SPRO(Algorithm):
    """SPRO (Fei et al. 2025, arXiv 2507.01551): GRPO's outcome advantage + the Masked Step Advantage of
    the cumulative self-guided process reward beta * (log pi_old - log pi_ref).

    With ``ref_refresh_every=N`` the process reward's pi_ref is a copy of the policy (``process_ref``):
    at a step s with ``(s - 1) % N == 0`` (s > 1) the step's process reward is computed against the copy
    as it is, and then the copy takes the weights of the policy that sampled that step; steps s+1 .. s+N
    measure against it. The ``kl`` metric stays the KL to the starting policy; the process probes
    (``process/*``, ``diag/msa``, ``drift/*``) measure against the copy that trains.
    """

    reference = "arXiv:2507.01551"

    def setup(self, ctx: TrainerContext) -> None:
        self.process_ref, self._signal = None, None
        if self.options.ref_refresh_every:
            import copy

            from spro.models.passes import match_grad_flags

            self.process_ref = copy.deepcopy(ctx.reference).eval()
            match_grad_flags(self.process_ref, ctx.policy)  # as the trainer's reference (models/passes.py)
            self.policy, self.logprobs = ctx.policy, ctx.logprobs

    def prepare(self, batch, x: AdvantageInputs) -> AdvantageInputs:
        if self.process_ref is not None:
            with torch.no_grad():
                x.extra["process_ref_logp"] = self.logprobs(self.process_ref, batch)
            if x.step > 1 and (x.step - 1) % self.options.ref_refresh_every == 0:  # after this step's reward
                self.process_ref.load_state_dict(self.policy.state_dict())
        return x

    def advantages(self, x: AdvantageInputs) -> Tensor:
        ref = x.extra.get("process_ref_logp", x.ref_logp)
        t = spro_terms(x.rewards, x.logp, ref, x.mask, x.group_ids, **self.options.terms_kwargs())
        self._signal = (x, ProcessSignal(t.reward, t.process, x.logp - ref))
        return t.process if self.options.process_only else with_outcome(t.process, t.outcome, x.mask)

    def process_signal(self, x: AdvantageInputs) -> ProcessSignal | None:
        return self._signal[1] if self._signal is not None and self._signal[0] is x else None

    def save(self, folder) -> None:
        if self.process_ref is not None:
            from safetensors.torch import save_model

            save_model(self.process_ref, str(Path(folder) / "process_ref.safetensors"))

    def load(self, folder) -> None:
        if self.process_ref is not None:
            from safetensors.torch import load_model

            load_model(self.process_ref, str(Path(folder) / "process_ref.safetensors"))


def process_stats(logp: Tensor, ref_logp: Tensor, mask: Tensor, group_ids: Tensor, options: SPROOptions,
                  advantages: Tensor | None = None) -> dict[str, Tensor]:
    """:func:`spro.algorithms.probes.process_sums` of SPRO's process reward and term under ``options`` (for
    the TRL and verl integrations, which hold log-probs rather than an :class:`AdvantageInputs`).

    Inputs ``[B, T]`` (``group_ids [B]``). Returns ``cpr_final`` ``[n]`` and ``sums`` ``[4]``.
    """
    with torch.no_grad():
        zeros = torch.zeros(mask.shape[0], dtype=logp.dtype, device=logp.device)
        t = spro_terms(zeros, logp, ref_logp, mask, group_ids, **options.terms_kwargs())
    return process_sums(ProcessSignal(t.reward, t.process, logp - ref_logp), mask, advantages)
