"""Policy-gradient loss pieces: PPO clipped surrogate, KL estimators, entropy, aggregation.

Shapes: ``B`` responses, ``T`` padded response length, ``V`` vocabulary size. ``mask`` is a
``[B, T]`` 0/1 tensor (bool or numeric); only positions with ``mask == 1`` contribute to a loss
or a metric, and values at masked positions are never read (they may be non-finite).
Bad input raises ``ValueError`` naming the argument. Formulas: ``docs/algorithms.md``.
"""

from __future__ import annotations

from typing import Literal

import torch

from spro.algorithms.core import _check_choice, _check_mask, _check_scalar
from spro.models.logprobs import entropy_from_logits  # noqa: F401 (part of the loss API)

__all__ = ["policy_loss", "kl_penalty", "entropy_from_logits", "aggregate_loss", "agg_normaliser", "AGG_MODES",
           "KL_ESTIMATORS", "RATIO_LEVELS", "importance_log_ratio"]

Tensor = torch.Tensor

# The loss aggregation modes (verl's loss_agg_mode names); the config's algorithm.loss_agg choices.
AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum", "seq-mean-token-sum-norm")
KL_ESTIMATORS = ("k1", "k2", "k3")
# The importance ratio of the clipped surrogate: per token (PPO / GRPO) or per sequence (GSPO).
RATIO_LEVELS = ("token", "sequence")


def _check_same(x: Tensor, name: str, shape: torch.Size) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [B, T], got shape {tuple(x.shape)}")
    if x.shape != shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)} but expected {tuple(shape)} (the mask's)")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    return x


def _check_finite(x: Tensor, name: str, mb: Tensor) -> None:
    with torch.no_grad():
        bad = (~torch.isfinite(x)) & mb
        if bool(bad.any()):
            r, t = bad.nonzero()[0].tolist()
            raise ValueError(
                f"{name} must be finite at valid (mask = 1) positions; {name}[{r}, {t}] = {x[r, t].item()}"
            )


def kl_penalty(
    logp: Tensor,
    ref_logp: Tensor,
    kind: Literal["k1", "k2", "k3"] = "k3",
    *,
    mask: Tensor | None = None,
) -> Tensor:
    """Per-token KL(pi_theta || pi_ref) estimate from samples of pi_theta (Schulman's k1/k2/k3).

    With ``d = logp - ref_logp``:

    * ``"k1"``: ``d``
    * ``"k2"``: ``0.5 * d**2``
    * ``"k3"``: ``exp(-d) + d - 1`` = ``exp(ref - logp) - (ref - logp) - 1``; as in verl's
      ``low_var_kl`` the exponent ``ref - logp`` is clamped to [-20, 20] and the result to
      [-10, 10] (gradients are zero where a clamp is active).

    Args:
        logp: ``[B, T]`` log-probs under the current policy (may require grad).
        ref_logp: ``[B, T]`` log-probs under the reference policy.
        kind: ``"k1"``, ``"k2"`` or ``"k3"``.
        mask: optional ``[B, T]`` 0/1 mask; if given, inputs are checked finite at valid
            positions and the result is 0 at masked positions.

    Returns:
        ``[B, T]`` per-token KL estimate (elementwise; no reduction).
    """
    _check_choice(kind, "kind", KL_ESTIMATORS)
    if not isinstance(logp, Tensor) or not isinstance(ref_logp, Tensor):
        raise ValueError("logp and ref_logp must be torch tensors")
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp has shape {tuple(logp.shape)} but ref_logp has {tuple(ref_logp.shape)}")
    if not logp.is_floating_point() or not ref_logp.is_floating_point():
        raise ValueError("logp and ref_logp must be floating tensors")
    mb = None
    if mask is not None:
        mb = _check_mask(mask)
        _check_same(logp, "logp", mb.shape)
        _check_finite(logp, "logp", mb)
        _check_finite(ref_logp, "ref_logp", mb)
        logp = torch.where(mb, logp, 0.0)
        ref_logp = torch.where(mb, ref_logp, 0.0)
    d = logp - ref_logp
    if kind == "k1":
        out = d
    elif kind == "k2":
        out = 0.5 * d * d
    else:
        neg = torch.clamp(-d, min=-20.0, max=20.0)
        out = torch.clamp(torch.exp(neg) - neg - 1.0, min=-10.0, max=10.0)
    if mb is not None:
        out = torch.where(mb, out, 0.0)
    return out


def aggregate_loss(
    loss_mat: Tensor,
    mask: Tensor,
    mode: str = "seq-mean-token-mean",
    max_len: int | None = None,
    *,
    normaliser: float | Tensor | None = None,
) -> Tensor:
    """Reduce a per-token loss ``[B, T]`` to a scalar over the valid tokens.

    * ``"token-mean"``: ``sum(L * m) / sum(m)`` (0 if no valid token). DAPO-style.
    * ``"seq-mean-token-mean"``: mean over the non-empty sequences of each sequence's token
      mean ``sum_t(L * m) / sum_t(m)`` (original GRPO; empty rows are skipped; 0 if all empty).
    * ``"seq-mean-token-sum"``: mean over the non-empty sequences of each sequence's token sum
      ``sum_t(L * m)``, i.e. ``sum(L * m) / (number of non-empty rows)``.
    * ``"seq-mean-token-sum-norm"``: ``sum(L * m) / (B * max_len)`` (Dr. GRPO), where
      ``max_len`` is the maximum completion length (default ``T``); it must be >= the longest
      valid row.

    ``normaliser``: the denominator of a batch this one is a piece of (micro-batches of one
    mini-batch, on one or several processes): the sum over all pieces of
    :func:`agg_normaliser`. The result is then this piece's share, and the shares of all pieces
    add up to the loss of the whole batch (as verl passes the global token / sequence count).
    None = this batch alone.

    Args:
        loss_mat: ``[B, T]`` per-token loss.
        mask: ``[B, T]`` 0/1 mask.
        mode: one of ``AGG_MODES``.
        max_len: normaliser for ``"seq-mean-token-sum-norm"`` (ignored otherwise).

    Returns:
        Scalar tensor (differentiable w.r.t. ``loss_mat``).
    """
    _check_choice(mode, "mode", AGG_MODES)
    mb = _check_mask(mask)
    _check_same(loss_mat, "loss_mat", mb.shape)
    return _aggregate(loss_mat, mb, mode, max_len, normaliser)


def agg_normaliser(mask: Tensor, mode: str) -> Tensor:
    """What ``mode`` divides by, counted on this batch: its valid tokens (``"token-mean"``), its
    non-empty rows (``"seq-mean-token-mean"``, ``"seq-mean-token-sum"``) or its rows
    (``"seq-mean-token-sum-norm"``, whose ``max_len`` factor is applied by the aggregation).
    Add it over the pieces of a batch to get :func:`aggregate_loss`'s ``normaliser``."""
    _check_choice(mode, "mode", AGG_MODES)
    mb = _check_mask(mask)
    if mode == "token-mean":
        n = mb.sum()
    elif mode == "seq-mean-token-sum-norm":
        n = torch.tensor(mb.shape[0], device=mb.device)
    else:
        n = mb.any(dim=1).sum()
    return n.to(torch.float64)


def _aggregate(loss_mat: Tensor, mb: Tensor, mode: str, max_len: int | None,
               normaliser: float | Tensor | None = None) -> Tensor:
    lm = torch.where(mb, loss_mat, 0.0)
    if mode == "seq-mean-token-mean":
        total = (lm.sum(dim=1) / mb.sum(dim=1).clamp(min=1).to(lm.dtype)).sum()
    else:
        total = lm.sum()
    if mode == "seq-mean-token-sum-norm":
        B, T = mb.shape
        if max_len is None:
            max_len = T
        if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len <= 0:
            raise ValueError(f"max_len / max_completion_length must be a positive int, got {max_len!r}")
        longest = int(mb.sum(dim=1).max()) if T > 0 else 0
        if longest > max_len:
            raise ValueError(
                f"max_completion_length={max_len} is smaller than the longest response in the batch ({longest} tokens)"
            )
        total = total / max_len
    n = agg_normaliser(mb, mode) if normaliser is None else torch.as_tensor(normaliser, dtype=torch.float64)
    if not bool(torch.isfinite(n)) or float(n) < 0:
        raise ValueError(f"normaliser must be a finite number >= 0, got {float(n)}")
    return total / n.clamp(min=1).to(device=lm.device, dtype=lm.dtype)


def importance_log_ratio(logp: Tensor, old_logp: Tensor, mb: Tensor, level: str = "token") -> Tensor:
    """The log importance ratio of the clipped surrogate, ``[B, T]`` (``level="token"``) or ``[B, 1]``
    (``level="sequence"``); ``mb`` is the bool mask and masked positions of the inputs must be 0.

    * ``"token"``: ``logp - old_logp`` per token (PPO, GRPO).
    * ``"sequence"``: GSPO's length-normalised sequence ratio (Zheng et al. 2025, "Group Sequence
      Policy Optimization", arXiv:2507.18071, eq. 7), ``log s_i = mean over the valid tokens t of
      (logp - old_logp)[i, t]`` (0 for an empty row), as TRL's ``importance_sampling_level="sequence"``.
      The gradient flows through every token of the mean.
    """
    log_ratio = logp - old_logp
    if level == "token":
        return log_ratio
    n = mb.sum(dim=1, keepdim=True).clamp(min=1).to(log_ratio.dtype)
    return torch.where(mb, log_ratio, 0.0).sum(dim=1, keepdim=True) / n


def policy_loss(
    logp: Tensor,
    old_logp: Tensor,
    advantages: Tensor,
    mask: Tensor,
    *,
    clip_eps_low: float = 0.2,
    clip_eps_high: float | None = None,
    clip_ratio_c: float | None = None,
    agg: str = "seq-mean-token-mean",
    max_completion_length: int | None = None,
    normaliser: float | Tensor | None = None,
    ref_logp: Tensor | None = None,
    kl_coef: float = 0.0,
    kl_estimator: Literal["k1", "k2", "k3"] = "k3",
    entropy: Tensor | None = None,
    entropy_coef: float = 0.0,
    importance_sampling_level: Literal["token", "sequence"] = "token",
) -> tuple[Tensor, dict[str, float]]:
    """PPO clipped surrogate (with clip-higher and dual clip), optional KL-to-reference and entropy terms.

    Per valid token, with ``ratio = exp(logp - old_logp)`` and ``A = advantages``:
    ``pg = max(-A * ratio, -A * clip(ratio, 1 - clip_eps_low, 1 + clip_eps_high))``
    (``clip_eps_high`` defaults to ``clip_eps_low``; a larger one is DAPO's clip-higher). With
    ``clip_ratio_c`` (dual-clip PPO, Ye et al. 2020, arXiv:1912.09729; verl's default 3.0) the
    tokens with ``A < 0`` get ``min(pg, -A * clip_ratio_c)``: a very large ratio no longer makes
    the loss unbounded. Per-token loss ``L = pg + kl_coef * kl_penalty(logp, ref_logp,
    kl_estimator) - entropy_coef * entropy``, reduced with ``aggregate_loss(L, mask, agg,
    max_completion_length, normaliser=normaliser)`` (``normaliser``: see :func:`aggregate_loss`;
    with it the loss and ``pg_loss`` are this piece's share of the whole batch's).

    ``importance_sampling_level="sequence"`` is GSPO (arXiv:2507.18071): every token of response ``i``
    uses the same ratio ``s_i = exp(mean_t (logp - old_logp))`` (:func:`importance_log_ratio`), clipped
    as above and multiplied by the token's advantage (with one advantage per response, as GRPO's, this
    is GSPO's sequence objective; with SPRO's per-token advantages each token keeps its own). The clip
    fractions then count the tokens of the clipped responses.

    Metrics (Python floats):

    * ``"pg_loss"``: the surrogate alone, aggregated with ``agg``.
    * ``"clip/low_frac"``: fraction of valid tokens with ``ratio < 1 - clip_eps_low`` and
      ``A < 0`` (lower clip active); ``"clip/high_frac"``: ``ratio > 1 + clip_eps_high`` and
      ``A > 0`` (upper clip active).
    * ``"approx_kl"``: token mean of ``(ratio - 1) - log(ratio)`` (k3 estimate of
      KL(pi_old || pi_theta)).
    * ``"kl"`` (only when ``ref_logp`` is given): token mean of the chosen KL estimator.
    * ``"entropy"`` (only when ``entropy`` is given): token mean of ``entropy``.
    * ``"clip/dual_frac"`` (only with ``clip_ratio_c``): fraction of valid tokens with ``A < 0``
      where the dual clip is active (``pg > -A * clip_ratio_c``).

    Args:
        logp: ``[B, T]`` log-probs of the sampled tokens under the current policy (with grad).
        old_logp: ``[B, T]`` log-probs under the sampling policy (treated as constants).
        advantages: ``[B, T]`` per-token advantages (constants).
        mask: ``[B, T]`` 0/1 mask.
        ref_logp: ``[B, T]`` reference log-probs, required when ``kl_coef != 0``.
        entropy: ``[B, T]`` per-token entropy (e.g. ``entropy_from_logits``), required when
            ``entropy_coef != 0``; gradients flow through it.

    Returns:
        ``(loss, metrics)``: scalar loss tensor and a dict of floats.
    """
    _check_choice(agg, "agg", AGG_MODES)
    _check_choice(kl_estimator, "kl_estimator", KL_ESTIMATORS)
    _check_choice(importance_sampling_level, "importance_sampling_level", RATIO_LEVELS)
    low = _check_scalar(clip_eps_low, "clip_eps_low", nonneg=True)
    high = low if clip_eps_high is None else _check_scalar(clip_eps_high, "clip_eps_high", nonneg=True)
    if low >= 1:
        raise ValueError(f"clip_eps_low must be < 1, got {low}")
    if clip_ratio_c is not None and not _check_scalar(clip_ratio_c, "clip_ratio_c") > 1:
        raise ValueError(f"clip_ratio_c (dual clip) must be > 1 or None, got {clip_ratio_c}")
    kl_coef = _check_scalar(kl_coef, "kl_coef")
    entropy_coef = _check_scalar(entropy_coef, "entropy_coef")
    mb = _check_mask(mask)
    shape = mb.shape
    _check_same(logp, "logp", shape)
    _check_same(old_logp, "old_logp", shape)
    _check_same(advantages, "advantages", shape)
    for name, x in (("logp", logp), ("old_logp", old_logp), ("advantages", advantages)):
        _check_finite(x, name, mb)
    if kl_coef != 0 and ref_logp is None:
        raise ValueError("kl_coef != 0 needs ref_logp")
    if entropy_coef != 0 and entropy is None:
        raise ValueError("entropy_coef != 0 needs entropy ([B, T] per-token entropies)")
    if ref_logp is not None:
        _check_same(ref_logp, "ref_logp", shape)
        _check_finite(ref_logp, "ref_logp", mb)
    if entropy is not None:
        _check_same(entropy, "entropy", shape)
        _check_finite(entropy, "entropy", mb)

    # zero the masked positions first so nothing non-finite there reaches the graph
    logp_v = torch.where(mb, logp, 0.0)
    old_v = torch.where(mb, old_logp.detach(), 0.0)
    adv = torch.where(mb, advantages.detach(), 0.0)
    log_ratio = logp_v - old_v
    if importance_sampling_level == "token":
        ratio = torch.exp(log_ratio)
    else:  # [B, 1] -> [B, T]: the response's ratio on each of its tokens (0 where masked, see below)
        ratio = torch.where(mb, torch.exp(importance_log_ratio(logp_v, old_v, mb, "sequence")), 1.0)
    pg1 = -adv * ratio
    pg2 = -adv * torch.clamp(ratio, 1.0 - low, 1.0 + high)
    pg = torch.maximum(pg1, pg2)
    if clip_ratio_c is not None:
        pg3 = -adv * clip_ratio_c
        dual = (adv < 0) & (pg > pg3)
        pg = torch.where(adv < 0, torch.minimum(pg, pg3), pg)
    loss_mat = pg
    metrics: dict[str, float] = {}
    n_tok = mb.sum().clamp(min=1)

    def tmean(x: Tensor) -> float:
        return float(torch.where(mb, x.detach(), 0.0).sum() / n_tok)

    if ref_logp is not None:
        kl = kl_penalty(logp_v, torch.where(mb, ref_logp.detach(), 0.0), kl_estimator)
        metrics["kl"] = tmean(kl)
        if kl_coef != 0:
            loss_mat = loss_mat + kl_coef * kl
    if entropy is not None:
        ent = torch.where(mb, entropy, 0.0)
        metrics["entropy"] = tmean(ent)
        if entropy_coef != 0:
            loss_mat = loss_mat - entropy_coef * ent

    loss = _aggregate(loss_mat, mb, agg, max_completion_length, normaliser)
    with torch.no_grad():
        metrics["pg_loss"] = float(_aggregate(pg.detach(), mb, agg, max_completion_length, normaliser))
        if clip_ratio_c is not None:
            metrics["clip/dual_frac"] = tmean(dual.to(pg.dtype))
        r = ratio.detach()
        metrics["clip/low_frac"] = tmean(((r < 1.0 - low) & (adv < 0)).to(r.dtype))
        metrics["clip/high_frac"] = tmean(((r > 1.0 + high) & (adv > 0)).to(r.dtype))
        lr_tok = log_ratio.detach()  # (the token ratio, also with a sequence-level ratio)
        metrics["approx_kl"] = tmean(((r if importance_sampling_level == "token" else torch.exp(lr_tok)) - 1.0) - lr_tok)
    return loss, metrics
