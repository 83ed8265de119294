"""SPRO (Fei et al. 2025, arXiv 2507.01551): the policy as its own process reward model.

``SPROOptions`` is the one definition of SPRO's options: the trainer reads it from the config
section ``algorithm.spro.*``, the TRL integration as ``spro_*`` fields of ``SPROConfig``, the verl
integration as ``algorithm.spro_*`` keys. ``process_stats`` / ``process_metrics`` give the
``process/*`` metrics all three log.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from spro.algorithms.core import spro_advantage
from spro.algorithms.registry import AdvantageInputs, Algorithm, TrainerContext, register_algorithm
from spro.options import ConfigError, Options, option

Tensor = torch.Tensor


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
        "group", help="Outcome advantage: 'group' = (r - mean) / (std + eps) within the group (GRPO), 'none' = r - mean.",
        choices=("group", "none"),
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


@register_algorithm("spro", options=SPROOptions, needs_reference=True)
class SPRO(Algorithm):
    """SPRO (Fei et al. 2025, arXiv 2507.01551): GRPO's outcome advantage + the Masked Step Advantage of
    the cumulative self-guided process reward beta * (log pi_old - log pi_ref)."""

    reference = "arXiv:2507.01551"

    def setup(self, ctx: TrainerContext) -> None:
        self.process_ref = None
        if self.options.ref_refresh_every:
            import copy

            from spro.models.passes import match_grad_flags

            self.process_ref = copy.deepcopy(ctx.reference).eval()
            match_grad_flags(self.process_ref, ctx.policy)  # as the trainer's reference (models/passes.py)
            self.policy, self.logprobs = ctx.policy, ctx.logprobs

    def prepare(self, batch, x: AdvantageInputs) -> AdvantageInputs:
        if self.process_ref is not None:
            if x.step > 1 and (x.step - 1) % self.options.ref_refresh_every == 0:
                self.process_ref.load_state_dict(self.policy.state_dict())
            with torch.no_grad():
                x.extra["process_ref_logp"] = self.logprobs(self.process_ref, batch)
        return x

    def advantages(self, x: AdvantageInputs) -> Tensor:
        ref = x.extra.get("process_ref_logp", x.ref_logp)
        return spro_advantage(x.rewards, x.logp, ref, x.mask, x.group_ids, **self.options.core_kwargs())

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
    """The sums behind the ``process/*`` metrics of a batch, in a form that adds up across processes.

    Inputs ``[B, T]`` (``group_ids [B]``). Returns ``cpr_final`` ``[n]`` (the cumulative process
    reward beta * sum_t (logp - ref_logp) of each non-empty response: concatenate across processes)
    and ``sums`` ``[4]`` (sum over valid tokens of |process term| (SPRO's process term under
    ``options``, the MSA by default), of |p[i,t]|, of |advantages| (0 when not given), and the number
    of valid tokens: add across processes).
    """
    m = mask.bool()
    opts = options.core_kwargs()
    with torch.no_grad():
        p = options.beta * (logp - ref_logp)
        last = (m.sum(dim=1) - 1).clamp(min=0).unsqueeze(1)
        cpr_final = torch.where(m, p, 0.0).cumsum(dim=1).gather(1, last).squeeze(1)[m.any(dim=1)].float()
        zeros = torch.zeros(m.shape[0], dtype=logp.dtype, device=logp.device)
        process = spro_advantage(zeros, logp, ref_logp, m, group_ids, **{**opts, "process_only": True})
        adv_sum = advantages.abs()[m].sum().float() if advantages is not None else torch.zeros((), device=m.device)
        sums = torch.stack([process.abs()[m].sum().float(), p.abs()[m].sum().float(), adv_sum, m.sum().float()])
    return {"cpr_final": cpr_final, "sums": sums}


def process_metrics(cpr_final: Tensor, sums: Tensor) -> dict[str, float | None]:
    """``process/cpr_final_mean`` / ``_std`` (cumulative process reward at each response's last token),
    ``process/msa_abs_mean`` (mean |process term| over valid tokens), ``process/reward_abs_mean`` (mean
    |beta * (logp - ref_logp)|) and ``process/advantage_abs_mean``, from :func:`process_stats`."""
    means = sums[:3] / sums[3].clamp(min=1)
    return {
        "process/cpr_final_mean": float(cpr_final.mean()) if cpr_final.numel() else None,
        "process/cpr_final_std": float(cpr_final.std()) if cpr_final.numel() > 1 else None,
        "process/msa_abs_mean": float(means[0]),
        "process/reward_abs_mean": float(means[1]),
        "process/advantage_abs_mean": float(means[2]),
    }
