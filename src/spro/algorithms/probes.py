"""The process probes: SPRO's self-guided process reward measured on every run, once per step.

Every run can be asked what SPRO's signal would say about its responses, so that runs of different
algorithms compare on it: the ``process/*`` metrics (``spro.trainer.metrics``), the
``diag/self_reward`` and ``diag/msa`` first-error scores and the ``drift/*`` metrics
(``spro.trainer.diagnostics``) all read one :class:`~spro.algorithms.registry.ProcessSignal` per step:

* on a run whose algorithm has a self-guided process reward of its own (SPRO), the one it trained
  with (``Algorithm.process_signal``): its options, and the reference it trains against (with
  ``algorithm.spro.ref_refresh_every`` the refreshed copy, not the frozen start);
* on any other run (GRPO, Dr. GRPO, RLOO, PRIME, plugins), :func:`probe_signal` with the probe's own
  settings :class:`ProbeOptions` (config section ``logging.probe.*``), against the frozen reference.

:func:`process_sums` / :func:`process_metrics` turn a signal into the ``process/*`` metrics in a form
that adds up across processes (the TRL and verl integrations log the same keys).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from spro.algorithms.core import spro_terms
from spro.algorithms.registry import AdvantageInputs, ProcessSignal
from spro.options import Options, option

__all__ = ["ProbeOptions", "ProcessSignal", "probe_signal", "process_sums", "process_metrics"]

Tensor = torch.Tensor


@dataclass
class ProbeOptions(Options):
    beta: float = option(
        0.05,
        help="beta of the probed self-guided reward beta * (log pi_old - log pi_ref) on runs whose algorithm has no "
        "such reward of its own (grpo, dr_grpo, rloo, prime, plugins); a spro run logs its own (algorithm.spro.*). "
        "Only the process/*, diag/self_reward, diag/msa and drift/* metrics read it.",
        check=(lambda v: v >= 0, ">= 0"),
    )
    process_reward: str = option("cumulative", help="As algorithm.spro.process_reward, for the probe.",
                                 choices=("cumulative", "per_token"))
    baseline: str = option("masked_step", help="As algorithm.spro.baseline, for the probe.",
                           choices=("masked_step", "pooled", "pooled_loo"))
    msa_scale_std: bool = option(False, help="As algorithm.spro.msa_scale_std, for the probe.")
    eps: float = option(1e-6, help="As algorithm.spro.eps, for the probe.", check=(lambda v: v >= 0, ">= 0"))
    credit: str = option("sum", help="As algorithm.spro.credit, for the probe.", choices=("sum", "min_form"))
    min_form_temperature: float = option(0.1, help="As algorithm.spro.min_form_temperature, for the probe.",
                                         check=(lambda v: v > 0, "> 0"))


def probe_signal(x: AdvantageInputs, options: ProbeOptions) -> ProcessSignal:
    """SPRO's process reward and term at ``options`` on ``x`` (against ``x.ref_logp``, which must be set)."""
    kw = {f: getattr(options, f) for f in ("beta", "process_reward", "baseline", "msa_scale_std", "eps", "credit",
                                           "min_form_temperature")}
    with torch.no_grad():
        t = spro_terms(torch.zeros_like(x.rewards), x.logp, x.ref_logp, x.mask, x.group_ids, **kw)
    return ProcessSignal(t.reward, t.process, x.logp - x.ref_logp)


def process_sums(signal: ProcessSignal, mask: Tensor, advantages: Tensor | None = None) -> dict[str, Tensor]:
    """The sums behind the ``process/*`` metrics, in a form that adds up across processes.

    ``mask [B, T]``; ``advantages [B, T]`` or None. Returns ``cpr_final`` ``[n]`` (the cumulative process
    reward at the last token of each non-empty response: concatenate across processes) and ``sums`` ``[4]``
    (over valid tokens: |process term|, |p|, |advantages| (0 when not given), the number of tokens: add
    across processes).
    """
    m = mask.bool()
    with torch.no_grad():
        p = signal.reward
        last = (m.sum(dim=1) - 1).clamp(min=0).unsqueeze(1)
        cpr_final = torch.where(m, p, 0.0).cumsum(dim=1).gather(1, last).squeeze(1)[m.any(dim=1)].float()
        adv_sum = advantages.abs()[m].sum().float() if advantages is not None else torch.zeros((), device=m.device)
        sums = torch.stack([signal.term.abs()[m].sum().float(), p.abs()[m].sum().float(), adv_sum, m.sum().float()])
    return {"cpr_final": cpr_final, "sums": sums}


def process_metrics(cpr_final: Tensor, sums: Tensor) -> dict[str, float | None]:
    """``process/cpr_final_mean`` / ``_std`` (cumulative process reward at each response's last token),
    ``process/msa_abs_mean`` (mean |process term| over valid tokens), ``process/reward_abs_mean`` (mean
    |beta * (logp - ref_logp)|) and ``process/advantage_abs_mean``, from :func:`process_sums`."""
    means = sums[:3] / sums[3].clamp(min=1)
    return {
        "process/cpr_final_mean": float(cpr_final.mean()) if cpr_final.numel() else None,
        "process/cpr_final_std": float(cpr_final.std()) if cpr_final.numel() > 1 else None,
        "process/msa_abs_mean": float(means[0]),
        "process/reward_abs_mean": float(means[1]),
        "process/advantage_abs_mean": float(means[2]),
    }
