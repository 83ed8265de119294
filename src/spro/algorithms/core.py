"""Advantage estimators as pure tensor functions: GRPO, Dr. GRPO, RLOO, SPRO and PRIME.

Shapes: ``B`` responses, ``T`` padded response length.

* ``rewards [B]``: outcome reward of each response (bool / int are converted).
* ``mask [B, T]``: 1 on a response token, 0 on padding; bool or numeric with values exactly 0/1.
  Rows may be empty and valid tokens need not be contiguous.
* ``group_ids [B]``: integers saying which prompt each response answers, in any order; groups may
  differ in size.
* ``logp``, ``ref_logp``, ``prm_logp [B, T]``: log-probs of the sampled tokens under the sampling
  policy (pi_old), the frozen reference and PRIME's implicit PRM.

Every ``[B, T]`` result is exactly 0 where ``mask`` is 0, and values of the inputs there are never
read (they may be NaN or -inf). Results have the promoted floating dtype of the inputs and carry
no gradient (advantages are constants of the policy-gradient loss).

The public functions validate their inputs once (``ValueError`` naming the argument, and the row
and token at fault); the private helpers (leading underscore) trust them. The formulas are written
out in ``docs/algorithms.md``; the algorithm objects that the trainer selects by name are in
``spro.algorithms.registry``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch

__all__ = [
    "outcome_advantage",
    "rloo_advantage",
    "cumulative_process_reward",
    "masked_step_advantage",
    "spro_advantage",
    "spro_terms",
    "SPROTerms",
    "with_outcome",
    "prime_advantage",
]

Tensor = torch.Tensor

# --------------------------------------------------------------------------------------------
# validation, done once by each public function
# --------------------------------------------------------------------------------------------


def _tensor(x: Any, name: str, device: torch.device | None = None) -> Tensor:
    try:
        t = torch.as_tensor(x, device=device)
    except Exception as exc:
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to a tensor ({exc})") from None
    return t.detach()


def _float_dtype(*tensors: Tensor) -> torch.dtype:
    """The promoted floating dtype of the floating inputs (the default dtype if there is none)."""
    dtype = None
    for t in tensors:
        if t.is_floating_point():
            dtype = t.dtype if dtype is None else torch.promote_types(dtype, t.dtype)
    return dtype or torch.get_default_dtype()


def _first_bad(bad: Tensor) -> str:
    idx = bad.nonzero()[0].tolist()
    return f"row {idx[0]}, token {idx[1]}" if len(idx) == 2 else f"row {idx[0]}"


def _check_mask(mask: Any) -> Tensor:
    """[B, T] 0/1 mask -> bool [B, T]."""
    m = _tensor(mask, "mask")
    if m.dim() != 2:
        raise ValueError(f"mask must be 2-D [B, T], got shape {tuple(m.shape)}")
    if m.shape[0] == 0:
        raise ValueError("mask: empty batch (B = 0)")
    if m.dtype == torch.bool:
        return m
    if m.is_complex():
        raise ValueError(f"mask must be bool or real numeric, got {m.dtype}")
    bad = (m != 0) & (m != 1)
    if bool(bad.any()):
        at = bad.nonzero()[0].tolist()
        raise ValueError(f"mask must contain only 0 and 1; found {m[at[0], at[1]].item()!r} at {_first_bad(bad)}")
    return m != 0


def _check_rewards(rewards: Any, B: int | None, device: torch.device | None) -> Tensor:
    r = _tensor(rewards, "rewards", device)
    if r.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(r.shape)}")
    if r.shape[0] == 0:
        raise ValueError("rewards: empty batch (B = 0)")
    if B is not None and r.shape[0] != B:
        raise ValueError(f"rewards has {r.shape[0]} entries but mask has B = {B} rows")
    if r.is_complex():
        raise ValueError(f"rewards must be real, got {r.dtype}")
    if r.is_floating_point() and not bool(torch.isfinite(r).all()):
        row = int((~torch.isfinite(r)).nonzero()[0, 0])
        raise ValueError(f"rewards must be finite; rewards[{row}] = {r[row].item()}")
    return r


def _check_tokens(x: Any, name: str, mask: Tensor) -> Tensor:
    """A [B, T] floating tensor shaped like ``mask`` and finite where ``mask`` is 1; non-finite values
    where it is 0 are replaced by 0 (so that multiplying by the mask zeroes them)."""
    x = _tensor(x, name, mask.device)
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [B, T], got shape {tuple(x.shape)}")
    if x.shape != mask.shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)} but mask has shape {tuple(mask.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    if bool(torch.isfinite(x.sum())):  # every value finite (one pass); otherwise look closer
        return x
    bad = ~torch.isfinite(x) & mask
    if bool(bad.any()):
        r, t = bad.nonzero()[0].tolist()
        raise ValueError(f"{name} must be finite at valid (mask = 1) positions; {name}[{r}, {t}] = {x[r, t].item()}")
    return torch.where(mask, x, 0.0)


def _check_scalar(value: Any, name: str, *, nonneg: bool = False, positive: bool = False) -> float:
    try:
        v = float(value)
    except Exception:
        raise ValueError(f"{name} must be a real number, got {value!r}") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {v}")
    if (nonneg and v < 0) or (positive and v <= 0):
        raise ValueError(f"{name} must be {'>= 0' if nonneg else '> 0'}, got {v}")
    return v


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


@dataclass(frozen=True)
class _Groups:
    """Group labels relabelled 0..n-1. ``block`` = rows per group when the groups are consecutive
    blocks of equal size (how trainers lay out a batch), else None."""

    inv: Tensor  # [B] long
    n: int
    block: int | None


def _check_groups(group_ids: Any, B: int, device: torch.device) -> _Groups:
    g = _tensor(group_ids, "group_ids", device)
    if g.dim() != 1:
        raise ValueError(f"group_ids must be 1-D [B], got shape {tuple(g.shape)}")
    if g.shape[0] != B:
        raise ValueError(f"group_ids has {g.shape[0]} entries but the batch has B = {B}")
    if B == 0:
        raise ValueError("group_ids: empty batch (B = 0)")
    if g.is_floating_point() or g.is_complex() or g.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor, got dtype {g.dtype}")
    labels, inv = torch.unique(g, return_inverse=True)
    n = int(labels.numel())
    block = B // n if B % n == 0 and torch.equal(inv, torch.arange(n, device=device).repeat_interleave(B // n)) else None
    return _Groups(inv, n, block)


# --------------------------------------------------------------------------------------------
# group statistics
# --------------------------------------------------------------------------------------------


def _group_sum(x: Tensor, g: _Groups) -> Tensor:
    """Sum the rows of ``x`` ([B] or [B, T]) within each group: [n] or [n, T]. Token-level sums
    of consecutive equal blocks use a strided view, other sums ``index_add_``."""
    if x.dim() == 2 and g.block is not None:
        return x.view(g.n, g.block, x.shape[1]).sum(dim=1)
    return torch.zeros((g.n,) + tuple(x.shape[1:]), dtype=x.dtype, device=x.device).index_add_(0, g.inv, x)


def _safe_denom(std: Tensor, eps: float, count: Tensor) -> Tensor:
    """std + eps, replaced by 1 where fewer than two values or where it is 0 (the centred values
    are all 0 there and must stay 0, not become 0/0)."""
    denom = std + eps
    return torch.where((count < 2) | (denom == 0), 1.0, denom)


OUTCOME_SCALES = ("group", "batch", "none")


def _outcome(r: Tensor, g: _Groups, scale: str, eps: float) -> Tensor:
    """[B] GRPO outcome advantage: (r - group mean) / (group std + eps), r - mean (scale='none'), or
    (r - group mean) / (std of all B rewards + eps) (scale='batch').
    A group whose rewards are all equal gets exactly 0 (its float mean need not round back to r)."""
    n = _group_sum(torch.ones_like(r), g)
    centered = r - (_group_sum(r, g) / n)[g.inv]
    centered = torch.where(_zero_variance_groups(r, g), 0.0, centered)
    if scale == "none":
        return centered
    if scale == "batch":
        count = torch.tensor(float(r.shape[0]), dtype=r.dtype, device=r.device)
        std = r.std() if r.shape[0] > 1 else torch.zeros((), dtype=r.dtype, device=r.device)
        return centered / _safe_denom(std, eps, count)
    var = _group_sum(centered * centered, g) / (n - 1).clamp(min=1)
    return centered / _safe_denom(var.sqrt(), eps, n)[g.inv]


def _rloo(r: Tensor, g: _Groups) -> Tensor:
    """[B] r minus the mean of the other responses of the group (0 for a group of one, and exactly 0
    for a group whose rewards are all equal)."""
    n = _group_sum(torch.ones_like(r), g)[g.inv]
    others = (_group_sum(r, g)[g.inv] - r) / (n - 1).clamp(min=1)
    return torch.where((n > 1) & ~_zero_variance_groups(r, g), r - others, 0.0)


def _row_means(v: Tensor, mf: Tensor) -> tuple[Tensor, Tensor]:
    """Mean of each row over its valid tokens ([B], 0 for an empty row) and 1.0 for non-empty rows."""
    length = mf.sum(dim=1)
    return v.sum(dim=1) / length.clamp(min=1), (length > 0).to(v.dtype)


def _min_form(p: Tensor, mf: Tensor, temperature: float) -> Tensor:
    """PURE's min-form credit (Cheng et al. 2025, arXiv 2504.15275): ``p[i, t] * softmax_t(-p[i, t] / T)``
    over each row's valid tokens, so that the row's sum approaches ``min_t p[i, t]`` as T -> 0."""
    logits = torch.where(mf > 0, -p / temperature, float("-inf"))
    w = torch.softmax(logits, dim=1).nan_to_num_(0.0)  # rows without a valid token: 0
    return p * w


def _zero_variance_groups(r: Tensor, g: _Groups) -> Tensor:
    """[B] bool: the response's group has one outcome for all its responses (no outcome signal): its
    largest reward equals its smallest (exact for any reward values, unlike a float mean)."""
    hi = torch.full((g.n,), float("-inf"), dtype=r.dtype, device=r.device).scatter_reduce(0, g.inv, r, "amax")
    lo = torch.full((g.n,), float("inf"), dtype=r.dtype, device=r.device).scatter_reduce(0, g.inv, r, "amin")
    return (hi == lo)[g.inv]


# --------------------------------------------------------------------------------------------
# outcome-level estimators
# --------------------------------------------------------------------------------------------


def outcome_advantage(rewards: Tensor, group_ids: Tensor, *, scale: Literal["group", "batch", "none"] = "group",
                      eps: float = 1e-6) -> Tensor:
    """GRPO outcome advantage per response, ``[B]``.

    ``A[i] = (r[i] - mean_g r) / (std_g r + eps)`` with the unbiased group std; ``scale="none"``
    (Dr. GRPO) gives ``r[i] - mean_g r``; ``scale="batch"`` divides by the unbiased std of all ``B``
    rewards instead of the group's (TRL's ``scale_rewards="batch"``, after Liu et al. 2025, "Tricks or
    Traps? A Deep Dive into RL for LLM Reasoning", arXiv:2508.08221). A group of one, or of equal
    rewards, gets exactly 0 (also with ``eps = 0``).
    """
    _check_choice(scale, "scale", OUTCOME_SCALES)
    eps = _check_scalar(eps, "eps", nonneg=True)
    r = _check_rewards(rewards, None, None)
    g = _check_groups(group_ids, r.shape[0], r.device)
    return _outcome(r.to(_float_dtype(r)), g, scale, eps)


def rloo_advantage(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """RLOO advantage per response, ``[B]``: ``r[i] - mean_{k in g, k != i} r[k]`` (0 for a group of one)."""
    r = _check_rewards(rewards, None, None)
    g = _check_groups(group_ids, r.shape[0], r.device)
    return _rloo(r.to(_float_dtype(r)), g)


# --------------------------------------------------------------------------------------------
# SPRO
# --------------------------------------------------------------------------------------------


# The helpers below take the mask as 0./1. floats ``mf`` and zero padding by multiplying with it
# (inputs are finite everywhere after the checks); they may modify tensors they created.


def _process_reward(logp: Tensor, ref_logp: Tensor, mf: Tensor, beta: float) -> Tensor:
    """[B, T] beta * (logp - ref_logp) at valid tokens, 0 elsewhere."""
    return torch.sub(logp.to(mf.dtype), ref_logp.to(mf.dtype)).mul_(beta).mul_(mf)


def _cumsum(p: Tensor, mf: Tensor) -> Tensor:
    """[B, T] running sum of p over each row's valid tokens (p is 0 elsewhere), 0 at padding."""
    return p.cumsum(dim=1).mul_(mf)


def _msa(v: Tensor, mf: Tensor, g: _Groups, scale_std: bool, eps: float) -> Tensor:
    """[B, T] Masked Step Advantage: v minus the mean of v over the group's responses that have a
    token at the same index (optionally divided by their std + eps); 0 at padding. v is 0 there."""
    count = _group_sum(mf, g)  # [n, T] responses of the group with a token at t
    out = (v - (_group_sum(v, g) / count.clamp(min=1))[g.inv]).mul_(mf)
    if scale_std:
        var = _group_sum(out * out, g) / (count - 1).clamp(min=1)
        out = out.div_(_safe_denom(var.sqrt(), eps, count)[g.inv])
    return out


def _pooled(v: Tensor, mf: Tensor, g: _Groups, scale_std: bool, eps: float) -> Tensor:
    """[B, T] v minus one mean per group over all its valid tokens (optionally / their std + eps)."""
    count = _group_sum(mf.sum(dim=1), g)
    out = (v - (_group_sum(v.sum(dim=1), g) / count.clamp(min=1))[g.inv].unsqueeze(1)).mul_(mf)
    if scale_std:
        var = _group_sum((out * out).sum(dim=1), g) / (count - 1).clamp(min=1)
        out = out / _safe_denom(var.sqrt(), eps, count)[g.inv].unsqueeze(1)
    return out


def _pooled_loo(v: Tensor, mf: Tensor, g: _Groups) -> Tensor:
    """[B, T] v minus the mean, over the group's OTHER non-empty responses, of their mean value (PRIME's
    leave-one-out baseline); 0 for a response without such a neighbour."""
    rmean, nonempty = _row_means(v, mf)
    n_other = _group_sum(nonempty, g)[g.inv] - nonempty
    base = (_group_sum(rmean, g)[g.inv] - rmean) / n_other.clamp(min=1)
    return (v - base.unsqueeze(1)).mul_(mf * (n_other > 0).to(mf.dtype).unsqueeze(1))


def cumulative_process_reward(logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float) -> Tensor:
    """SPRO's cumulative process reward, ``[B, T]``.

    ``p[i, t] = beta * (logp - ref_logp)[i, t]`` (the self-guided process reward) and
    ``R[i, t] = sum_{j <= t, mask[i, j] = 1} p[i, j]`` at valid tokens, 0 elsewhere.
    """
    beta = _check_scalar(beta, "beta", nonneg=True)
    m = _check_mask(mask)
    logp, ref_logp = _check_tokens(logp, "logp", m), _check_tokens(ref_logp, "ref_logp", m)
    mf = m.to(_float_dtype(logp, ref_logp))
    return _cumsum(_process_reward(logp, ref_logp, mf, beta), mf)


def masked_step_advantage(cpr: Tensor, mask: Tensor, group_ids: Tensor, *, scale_std: bool = False,
                          eps: float = 1e-6) -> Tensor:
    """SPRO's Masked Step Advantage, ``[B, T]``.

    ``b[g, t] = mean{ cpr[k, t] : group(k) = g, mask[k, t] = 1 }`` and ``MSA[i, t] = cpr[i, t] -
    b[g(i), t]`` at valid tokens, else 0: a response alone at index t gets 0 there. ``scale_std``
    divides by the unbiased std of those values + eps (0 where fewer than two share the index).
    """
    eps = _check_scalar(eps, "eps", nonneg=True)
    m = _check_mask(mask)
    cpr = _check_tokens(cpr, "cpr", m)
    g = _check_groups(group_ids, m.shape[0], m.device)
    mf = m.to(_float_dtype(cpr))
    return _msa(cpr * mf, mf, g, scale_std, eps)


class SPROTerms(NamedTuple):
    """The parts of SPRO's advantage (:func:`spro_terms`)."""

    reward: Tensor  # [B, T] the self-guided process reward p = beta * (logp - ref_logp), 0 at padding
    process: Tensor  # [B, T] the process term (the Masked Step Advantage by default), 0 at padding
    outcome: Tensor  # [B] the outcome advantage A_out


def spro_terms(
    rewards: Tensor,
    logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    group_ids: Tensor,
    *,
    beta: float,
    outcome_scale: Literal["group", "batch", "none"] = "group",
    msa_scale_std: bool = False,
    eps: float = 1e-6,
    process_reward: Literal["cumulative", "per_token"] = "cumulative",
    baseline: Literal["masked_step", "pooled", "pooled_loo"] = "masked_step",
    credit: Literal["sum", "min_form"] = "sum",
    min_form_temperature: float = 0.1,
    zero_variance_groups: Literal["keep", "drop"] = "keep",
    process_squash: float | None = None,
) -> SPROTerms:
    """SPRO's advantage in its parts: ``SPROTerms(reward [B, T], process [B, T], outcome [B])``;
    :func:`spro_advantage` is ``(outcome[:, None] + process) * mask``. The keywords are
    :func:`spro_advantage`'s."""
    beta = _check_scalar(beta, "beta", nonneg=True)
    eps = _check_scalar(eps, "eps", nonneg=True)
    _check_choice(outcome_scale, "outcome_scale", OUTCOME_SCALES)
    _check_choice(process_reward, "process_reward", ("cumulative", "per_token"))
    _check_choice(baseline, "baseline", ("masked_step", "pooled", "pooled_loo"))
    if baseline == "pooled_loo" and msa_scale_std:
        raise ValueError("msa_scale_std=True is not supported with baseline='pooled_loo'")
    _check_choice(credit, "credit", ("sum", "min_form"))
    _check_choice(zero_variance_groups, "zero_variance_groups", ("keep", "drop"))
    min_form_temperature = _check_scalar(min_form_temperature, "min_form_temperature", positive=True)
    if process_squash is not None:
        process_squash = _check_scalar(process_squash, "process_squash", positive=True)
    m = _check_mask(mask)
    r = _check_rewards(rewards, m.shape[0], m.device)
    logp, ref_logp = _check_tokens(logp, "logp", m), _check_tokens(ref_logp, "ref_logp", m)
    g = _check_groups(group_ids, m.shape[0], m.device)
    mf = m.to(_float_dtype(r, logp, ref_logp))

    p = _process_reward(logp, ref_logp, mf, beta)
    v = _min_form(p, mf, min_form_temperature) if credit == "min_form" else p
    if process_reward == "cumulative":
        v = _cumsum(v, mf)  # (a new tensor: p is kept)
    if baseline == "masked_step":
        term = _msa(v, mf, g, msa_scale_std, eps)
    elif baseline == "pooled":
        term = _pooled(v, mf, g, msa_scale_std, eps)
    else:
        term = _pooled_loo(v, mf, g)
    if process_squash is not None:
        term = torch.tanh(term / process_squash).mul_(process_squash)
    r = r.to(mf.dtype)
    if zero_variance_groups == "drop":
        term = term.mul_((~_zero_variance_groups(r, g)).to(mf.dtype).unsqueeze(1))
    return SPROTerms(p, term, _outcome(r, g, outcome_scale, eps))


def spro_advantage(
    rewards: Tensor,
    logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    group_ids: Tensor,
    *,
    beta: float,
    outcome_scale: Literal["group", "batch", "none"] = "group",
    msa_scale_std: bool = False,
    eps: float = 1e-6,
    process_reward: Literal["cumulative", "per_token"] = "cumulative",
    baseline: Literal["masked_step", "pooled", "pooled_loo"] = "masked_step",
    process_only: bool = False,
    credit: Literal["sum", "min_form"] = "sum",
    min_form_temperature: float = 0.1,
    zero_variance_groups: Literal["keep", "drop"] = "keep",
    process_squash: float | None = None,
) -> Tensor:
    """SPRO advantage (Fei et al. 2025, arXiv 2507.01551), ``[B, T]``: ``(A_out[i] + MSA[i, t]) * mask``.

    ``A_out = outcome_advantage(rewards, group_ids, scale=outcome_scale, eps=eps)``; the process
    term is ``masked_step_advantage(cumulative_process_reward(logp, ref_logp, mask, beta), ...)``.
    Ablations, one keyword each: ``process_reward="per_token"`` compares ``p[i, t]`` instead of the
    cumulative ``R[i, t]``; ``baseline="pooled"`` subtracts one mean per group over all its valid
    tokens, ``"pooled_loo"`` PRIME's leave-one-out mean of the other responses' mean values (no
    ``msa_scale_std``); ``process_only`` drops ``A_out``; ``credit="min_form"`` replaces ``p`` by
    PURE's min-form weighting before the sum (:func:`_min_form`).

    Variants that are not in the paper (for the sparse-outcome drift): ``zero_variance_groups="drop"``
    gives no process term to the responses of a group whose outcomes are all equal;
    ``process_squash=c`` bounds the process term to ``c * tanh(term / c)`` (|term| < c, where the
    outcome term has group std 1).
    """
    t = spro_terms(rewards, logp, ref_logp, mask, group_ids, beta=beta, outcome_scale=outcome_scale,
                   msa_scale_std=msa_scale_std, eps=eps, process_reward=process_reward, baseline=baseline,
                   credit=credit, min_form_temperature=min_form_temperature,
                   zero_variance_groups=zero_variance_groups, process_squash=process_squash)
    return with_outcome(t.process, t.outcome, mask) if not process_only else t.process


def with_outcome(process: Tensor, outcome: Tensor, mask: Tensor) -> Tensor:
    """``[B, T]`` ``(outcome[:, None] + process) * mask``: SPRO's advantage from :func:`spro_terms`' parts."""
    return (process + outcome.unsqueeze(1)).mul_(_check_mask(mask).to(process.dtype))


# --------------------------------------------------------------------------------------------
# PRIME
# --------------------------------------------------------------------------------------------


def _masked_whiten(x: Tensor, mf: Tensor, shift_mean: bool, eps: float) -> Tensor:
    """verl's ``masked_whiten`` over all valid tokens: ``(x - mean) / sqrt(var + eps)`` with the
    unbiased variance (0 with fewer than two tokens); ``shift_mean=False`` adds the mean back. x is 0
    at padding."""
    n = mf.sum()
    mean = x.sum() / n.clamp(min=1)
    centered = (x - mean).mul_(mf)
    var = (centered * centered).sum() / (n - 1).clamp(min=1)
    out = centered * torch.rsqrt(var + eps)
    return out if shift_mean else (out + mean).mul_(mf)


def prime_advantage(
    rewards: Tensor,
    prm_logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    group_ids: Tensor,
    *,
    beta: float = 0.05,
    outcome_coef: float = 1.0,
    process_coef: float = 1.0,
    process_baseline: Literal["others_mean", "verl_recipe"] = "others_mean",
    whiten: bool = True,
    whiten_shift_mean: bool = True,
    whiten_eps: float = 1e-8,
    process_norm: Literal["none", "batch_norm"] = "none",
    credit: Literal["sum", "min_form"] = "sum",
    min_form_temperature: float = 0.1,
) -> Tensor:
    """PRIME advantage (Cui et al. 2025, arXiv 2502.01456), ``[B, T]``: leave-one-out per reward source.

    1. Implicit process reward ``q[i, t] = beta * (prm_logp - ref_logp)[i, t]``; with
       ``process_norm="batch_norm"`` (PRIME's ``prime_norm``) the raw log-ratio divided by the batch's
       largest ``|sum_{s >= t} (prm_logp - ref_logp)[i, s]|`` + 1e-6 instead (beta cancels there);
       ``credit="min_form"``: PURE's min-form weighting of ``q`` (see ``spro_advantage``).
    2. Process baseline: ``"others_mean"`` subtracts the mean, over the OTHER non-empty responses
       of the group, of their mean ``q`` (0 without such a neighbour); ``"verl_recipe"`` is verl's
       ``recipe/prime`` token formula ``q[i, t] * n/(n-1) - sum_k mean_t q[k, t] / (n-1)`` over the
       ``n`` non-empty responses of the group.
    3. Outcome: ``rloo_advantage`` placed at the last valid token of each response.
    4. ``c = outcome_coef * outcome + process_coef * q'``; returns ``sum_{j >= t} c[i, j]`` (reverse
       cumulative sum, gamma = 1), whitened over all valid tokens of the batch when ``whiten``
       (``whiten_shift_mean=True``, PRIME's choice, does not add the mean back).
    """
    beta = _check_scalar(beta, "beta", nonneg=True)
    outcome_coef = _check_scalar(outcome_coef, "outcome_coef")
    process_coef = _check_scalar(process_coef, "process_coef")
    whiten_eps = _check_scalar(whiten_eps, "whiten_eps", positive=True)
    _check_choice(process_baseline, "process_baseline", ("others_mean", "verl_recipe"))
    _check_choice(process_norm, "process_norm", ("none", "batch_norm"))
    _check_choice(credit, "credit", ("sum", "min_form"))
    min_form_temperature = _check_scalar(min_form_temperature, "min_form_temperature", positive=True)
    m = _check_mask(mask)
    r = _check_rewards(rewards, m.shape[0], m.device)
    prm_logp, ref_logp = _check_tokens(prm_logp, "prm_logp", m), _check_tokens(ref_logp, "ref_logp", m)
    g = _check_groups(group_ids, m.shape[0], m.device)
    mf = m.to(_float_dtype(r, prm_logp, ref_logp))

    if process_norm == "batch_norm":
        q = _process_reward(prm_logp, ref_logp, mf, 1.0)
        q = q / (q.flip(1).cumsum(1).abs().max() + 1e-6) if q.numel() else q
    else:
        q = _process_reward(prm_logp, ref_logp, mf, beta)
    if credit == "min_form":
        q = _min_form(q, mf, min_form_temperature)
    if process_baseline == "others_mean":
        q = _pooled_loo(q, mf, g)
    else:
        rmean, nonempty = _row_means(q, mf)
        n = _group_sum(nonempty, g)[g.inv].unsqueeze(1)
        total = _group_sum(rmean, g)[g.inv].unsqueeze(1)
        q = (q - (total - q) / (n - 1).clamp(min=1)).mul_(mf * (n > 1).to(mf.dtype))
    c = q * process_coef

    # the outcome's leave-one-out advantage at the last valid token of each non-empty row
    B, T = m.shape
    last = (mf * torch.arange(1, T + 1, device=m.device, dtype=mf.dtype)).amax(dim=1).long() - 1 if T else \
        torch.full((B,), -1, device=m.device)
    rows = (last >= 0).nonzero().squeeze(1)
    c = c.index_put((rows, last[rows]), (_rloo(r.to(mf.dtype), g) * outcome_coef)[rows], accumulate=True)

    returns = c.flip(1).cumsum(1).flip(1).mul_(mf)
    return _masked_whiten(returns, mf, whiten_shift_mean, whiten_eps) if whiten else returns
