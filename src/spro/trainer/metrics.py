"""The per-step metrics every run logs (``metrics.jsonl``), reduced over processes.

Algorithms add their own (``Algorithm.metrics``, keys in ``Algorithm.metric_keys``), and the reward
functions their counters (``reward/errors``, ...). ``process/*`` come from the step's process probe
(``spro.algorithms.probes``).
"""

from __future__ import annotations

import resource
from typing import Any

import torch

from spro.algorithms.losses import kl_penalty
from spro.algorithms.probes import ProcessSignal, process_metrics, process_sums
from spro.rollout import RolloutBatch

METRIC_KEYS = (
    "step", "time", "reward/mean", "reward/std", "accuracy", "groups/zero_variance_frac",
    "entropy", "length/mean", "length/min", "length/max", "length/truncated_frac",
    "clip/low_frac", "clip/high_frac", "kl", "process/cpr_final_mean", "process/cpr_final_std",
    "process/msa_abs_mean", "process/reward_abs_mean", "process/advantage_abs_mean", "perf/tokens_per_sec",
    "time/rollout", "time/logprob", "time/update", "time/step", "memory/peak_mb", "loss", "lr", "grad_norm",
)
EVAL_KEYS = ("step", "time", "eval/accuracy", "eval/length_mean", "eval/n")


def step_metrics(
    acc: Any,
    *,
    batch: RolloutBatch,
    rewards: torch.Tensor,
    correct: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor | None,
    entropy: torch.Tensor,
    advantages: torch.Tensor | None,
    update: dict[str, Any],
    kl_estimator: str,
    process: ProcessSignal | None,
    group_size: int,
) -> dict[str, Any]:
    """The metrics of one step over the whole batch (all processes; each process passes its own rows).

    ``process/*``: the step's process probe ``process`` (SPRO's self-guided process reward on the
    policy that sampled the batch, for every algorithm, so that runs can be compared on it;
    ``spro.algorithms.probes``); null without one (no reference model). ``advantages`` (of all
    responses, when all trained) feed ``process/advantage_abs_mean``. ``update``: ``loss``,
    ``clip/*``, ``lr``, ``grad_norm`` of the policy update (``loss`` None when no update ran).
    """
    mask = batch.completion_mask
    mbool = mask.bool()
    dev = mask.device
    per_resp = torch.stack([rewards.float(), correct.float(), batch.lengths.float(), batch.truncated.float()], 1)
    no_kl = torch.tensor(0.0, device=dev)
    tok_sums = torch.stack([
        mask.sum().float(),
        entropy[mbool].sum().float(),
        kl_penalty(old_logp, ref_logp, kl_estimator, mask=mask)[mbool].sum().float() if ref_logp is not None else no_kl,
    ])
    skipped = update.get("loss") is None
    upd_t = torch.tensor([0.0 if skipped else update[k] for k in ("loss", "clip/low_frac", "clip/high_frac")], device=dev)
    per_resp = acc.gather(per_resp)
    tok_sums = acc.reduce(tok_sums, "sum")
    upd_t = acc.reduce(upd_t, "mean")
    if process is not None:
        full = advantages is not None and advantages.shape == mask.shape
        stats = process_sums(process, mask, advantages if full else None)
        probe = process_metrics(acc.gather(stats["cpr_final"]), acc.reduce(stats["sums"], "sum"))
        if not full:
            probe["process/advantage_abs_mean"] = None
    else:
        probe = {k: None for k in METRIC_KEYS if k.startswith("process/")}
    peak = (torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available()
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    peak = float(acc.gather(torch.tensor([peak], device=dev)).max())  # the largest process
    r, c, L, tr = per_resp.T.cpu()
    groups = r.view(-1, group_size)
    n_tok = float(tok_sums[0])
    return {
        "reward/mean": float(r.mean()),
        "reward/std": float(r.std()) if len(r) > 1 else 0.0,
        "accuracy": float(c.mean()),
        "groups/zero_variance_frac": float((groups.max(1).values == groups.min(1).values).float().mean()),
        "entropy": float(tok_sums[1]) / max(n_tok, 1.0),
        "length/mean": float(L.mean()),
        "length/min": float(L.min()),
        "length/max": float(L.max()),
        "length/truncated_frac": float(tr.mean()),
        "clip/low_frac": None if skipped else float(upd_t[1]),
        "clip/high_frac": None if skipped else float(upd_t[2]),
        "kl": float(tok_sums[2]) / max(n_tok, 1.0) if ref_logp is not None else None,
        **probe,
        "memory/peak_mb": peak,
        "loss": None if skipped else float(upd_t[0]),
        "lr": update["lr"],
        "grad_norm": update["grad_norm"],
        "tokens": n_tok,
    }
