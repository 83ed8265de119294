"""Advantage estimators: SPRO, GRPO, Dr. GRPO, RLOO and PRIME as pure, vectorised torch functions.

Conventions used by every function in this module

* ``B`` = number of responses in the batch, ``T`` = padded response length.
* ``rewards``: ``[B]`` outcome reward of each response (any float; bool/int are converted).
* ``mask``: ``[B, T]`` response mask, bool or numeric with values exactly 0/1. Rows may be
  empty (all zeros) and need not be contiguous; only positions with ``mask == 1`` ("valid
  tokens") are ever read, and every returned ``[B, T]`` tensor is exactly 0 where ``mask == 0``.
* ``group_ids``: ``[B]`` integer labels saying which prompt each response answers. Labels may
  be any integers in any order; groups need not be contiguous or of equal size. They are
  relabelled to ``0..G-1`` with ``torch.unique(return_inverse=True)`` and all group statistics
  are computed with ``index_add_`` / ``index_select`` (no Python loop over samples, groups or
  tokens); when the groups are consecutive blocks of equal size (the layout trainers produce)
  the per-index SPRO statistics use strided sums over a ``[G, n, T]`` view instead.
* Log-probabilities (``logp``, ``ref_logp``, ``prm_logp``) are ``[B, T]`` per-token log-probs
  of the sampled tokens. Values at masked positions are ignored (they may be anything,
  including ``-inf`` or NaN); non-finite values at valid positions raise ``ValueError``.
* The result dtype is the promoted floating dtype of the floating inputs (float64 in gives
  float64 out; integer-only inputs use ``torch.get_default_dtype()``). Results live on the
  device of the inputs. Inputs are detached: advantages are constants of the
  policy-gradient loss, so nothing here tracks gradients.

Bad input raises ``ValueError`` with a message naming the argument (and row, where one is at
fault). The formulas are written out in ``docs/algorithms.md``.

Registry: ``get_estimator(name)`` returns a callable used by the trainer as
``est(rewards=..., mask=..., group_ids=..., logp=..., ref_logp=..., prm_logp=..., **options)``
that returns per-token advantages ``[B, T]``. Data inputs an estimator does not need (and the
generic ``beta`` for estimators without a process reward) are ignored; unknown option names
raise ``ValueError``. ``register_estimator(name)`` adds a new one.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import torch

__all__ = [
    "outcome_advantage",
    "rloo_advantage",
    "cumulative_process_reward",
    "masked_step_advantage",
    "spro_advantage",
    "prime_advantage",
    "get_estimator",
    "register_estimator",
    "list_estimators",
]

Tensor = torch.Tensor

# --------------------------------------------------------------------------------------------
# validation helpers
# --------------------------------------------------------------------------------------------


def _as_tensor(x: Any, name: str, device: torch.device | None = None) -> Tensor:
    if isinstance(x, Tensor):
        return x if device is None or x.device == device else x.to(device)
    try:
        return torch.as_tensor(x, device=device)
    except Exception as exc:  # pragma: no cover - message path
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to a tensor ({exc})") from exc


def _float_dtype(*tensors: Tensor) -> torch.dtype:
    floats = [t.dtype for t in tensors if t is not None and t.is_floating_point()]
    if not floats:
        return torch.get_default_dtype()
    dtype = floats[0]
    for d in floats[1:]:
        dtype = torch.promote_types(dtype, d)
    return dtype


class _Mask:
    """A validated ``[B, T]`` 0/1 mask with cached bool and float views.

    Validation avoids ``[B, T]`` temporaries: bool masks need none; integer masks are checked
    with ``aminmax``; floating masks with ``aminmax`` plus ``sum == count_nonzero`` (exact
    while the count fits the dtype's mantissa, otherwise ``count_nonzero(mask == 1)``).
    """

    def __init__(self, mask: Any, name: str = "mask"):
        mask = _as_tensor(mask, name)
        if mask.dim() != 2:
            raise ValueError(f"{name} must be 2-D [B, T], got shape {tuple(mask.shape)}")
        if mask.shape[0] == 0:
            raise ValueError(f"{name}: empty batch (B = 0)")
        if mask.is_complex():
            raise ValueError(f"{name} must be bool or real numeric, got {mask.dtype}")
        self.raw, self.name, self.shape, self.device = mask, name, mask.shape, mask.device
        self._b: Tensor | None = mask if mask.dtype == torch.bool else None
        self._notb: Tensor | None = None
        self._f: dict[torch.dtype, Tensor] = {}
        if mask.dtype == torch.bool or mask.numel() == 0:
            return
        lo, hi = torch.aminmax(mask)
        ok = bool(lo >= 0) and bool(hi <= 1)  # False for NaN too
        if ok and mask.is_floating_point():
            if mask.numel() <= 2 / torch.finfo(mask.dtype).eps and mask.is_contiguous():
                # with 0 <= m <= 1, sum(m) == sum(m * m) iff every m is 0 or 1 (m - m^2 >= 0);
                # sums of 0/1 values are exact while the count fits the mantissa
                flat = mask.view(-1)
                ok = bool(flat.sum() == torch.dot(flat, flat))
            else:
                ok = bool(torch.count_nonzero(mask) == torch.count_nonzero(mask == 1))
        if not ok:
            bad = ((mask != 0) & (mask != 1)).nonzero()[0].tolist()
            raise ValueError(
                f"{name} must contain only 0 and 1; found {mask[bad[0], bad[1]].item()!r} "
                f"at row {bad[0]}, token {bad[1]}"
            )

    @property
    def b(self) -> Tensor:
        """bool [B, T]"""
        if self._b is None:
            self._b = self.raw != 0
        return self._b

    @property
    def notb(self) -> Tensor:
        """~bool [B, T]"""
        if self._notb is None:
            self._notb = ~self.b
        return self._notb

    def f(self, dtype: torch.dtype) -> Tensor:
        """the mask as a 0./1. tensor of `dtype` (the caller's tensor when it already is)"""
        if dtype not in self._f:
            self._f[dtype] = self.raw if self.raw.dtype == dtype else self.raw.to(dtype)
        return self._f[dtype]

    def owns_f(self, dtype: torch.dtype) -> bool:
        return self.raw.dtype != dtype


def _check_mask(mask: Any, name: str = "mask") -> tuple[Tensor, Tensor]:
    """Validate a [B, T] 0/1 mask; return (original tensor, bool mask)."""
    m = _Mask(mask, name)
    return m.raw, m.b


def _check_group_ids(group_ids: Any, B: int, device: torch.device) -> tuple[Tensor, int]:
    """Validate [B] integer labels; return (inverse indices 0..G-1 as long [B], G)."""
    group_ids = _as_tensor(group_ids, "group_ids", device)
    if group_ids.dim() != 1:
        raise ValueError(f"group_ids must be 1-D [B], got shape {tuple(group_ids.shape)}")
    if group_ids.shape[0] != B:
        raise ValueError(f"group_ids has {group_ids.shape[0]} entries but the batch has B = {B}")
    if B == 0:
        raise ValueError("group_ids: empty batch (B = 0)")
    if group_ids.is_floating_point() or group_ids.is_complex() or group_ids.dtype == torch.bool:
        raise ValueError(f"group_ids must be an integer tensor, got dtype {group_ids.dtype}")
    uniq, inv = torch.unique(group_ids, return_inverse=True)
    return inv, int(uniq.numel())


def _check_rewards(rewards: Any, B: int | None, device: torch.device | None) -> Tensor:
    rewards = _as_tensor(rewards, "rewards", device)
    if rewards.dim() != 1:
        raise ValueError(f"rewards must be 1-D [B], got shape {tuple(rewards.shape)}")
    if rewards.shape[0] == 0:
        raise ValueError("rewards: empty batch (B = 0)")
    if B is not None and rewards.shape[0] != B:
        raise ValueError(f"rewards has {rewards.shape[0]} entries but mask has B = {B} rows")
    if rewards.is_complex():
        raise ValueError(f"rewards must be real, got {rewards.dtype}")
    if rewards.is_floating_point():
        finite = torch.isfinite(rewards)
        if not bool(finite.all()):
            row = int((~finite).nonzero()[0, 0])
            raise ValueError(f"rewards must be finite; rewards[{row}] = {rewards[row].item()}")
    return rewards.detach()


def _check_bt(x: Any, name: str, shape: torch.Size, device: torch.device) -> Tensor:
    x = _as_tensor(x, name, device)
    if x.dim() != 2:
        raise ValueError(f"{name} must be 2-D [B, T], got shape {tuple(x.shape)}")
    if x.shape != shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)} but mask has shape {tuple(shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    return x.detach()


def _check_scalar(value: Any, name: str, *, nonneg: bool = False, positive: bool = False) -> float:
    try:
        v = float(value)
    except Exception as exc:
        raise ValueError(f"{name} must be a real number, got {value!r}") from exc
    if v != v or v in (float("inf"), float("-inf")):
        raise ValueError(f"{name} must be finite, got {v}")
    if nonneg and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    return v


def _check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {value!r}")
    return value


def _raise_nonfinite(name: str, x: Tensor, mb: Tensor) -> None:
    bad = (~torch.isfinite(x)) & mb
    if bool(bad.any()):
        r, t = bad.nonzero()[0].tolist()
        raise ValueError(
            f"{name} must be finite at valid (mask = 1) positions; "
            f"{name}[{r}, {t}] = {x[r, t].item()}"
        )


def _masked_values(x: Tensor, m: _Mask, name: str, dtype: torch.dtype) -> Tensor:
    """x as `dtype`, 0 where mask is 0, checked finite at valid positions. Fresh tensor.

    Fast path: multiply by the float mask and test the sum for finiteness; only when that
    fails (non-finite values somewhere, possibly only at masked positions) are the valid
    positions inspected and the masked ones replaced with ``torch.where``."""
    out = torch.mul(x.to(dtype), m.f(dtype))
    if bool(torch.isfinite(out.sum())):
        return out
    _raise_nonfinite(name, x, m.b)
    out = torch.where(m.b, x.to(dtype), 0.0)
    if not bool(torch.isfinite(out.sum())):
        raise ValueError(f"{name}: values overflow when summed; rescale them")
    return out


class _NonFinite(Exception):
    """Raised inside a fast path when a non-finite value showed up; the caller redoes the
    computation on the checked slow path (which raises a ValueError or sanitises)."""


def _process_reward(
    logp: Tensor, ref_logp: Tensor, m: _Mask, beta: float, dtype: torch.dtype, names=("logp", "ref_logp"),
    check: bool = True, sanitize: bool = False,
) -> Tensor:
    """beta * (logp - ref_logp) at valid positions, 0 elsewhere. Fresh [B, T] tensor (same
    fast path / slow path as `_masked_values`). With ``check=False`` the result is not
    tested (the caller tests something downstream that a non-finite value would reach, and
    calls again with ``sanitize=True`` if it fails)."""
    if not sanitize:
        p = torch.sub(logp.to(dtype), ref_logp.to(dtype))
        # p = 0 + beta * p * mask in one pass
        torch.addcmul(torch.zeros((), dtype=dtype, device=p.device), p, m.f(dtype), value=beta, out=p)
        if not check or bool(torch.isfinite(p.sum())):
            return p
    _raise_nonfinite(names[0], logp, m.b)
    _raise_nonfinite(names[1], ref_logp, m.b)
    p = torch.where(m.b, logp.to(dtype) - ref_logp.to(dtype), 0.0).mul_(beta)
    if not bool(torch.isfinite(p.sum())):
        raise ValueError(f"beta * ({names[0]} - {names[1]}) overflows when summed; check the inputs")
    return p


def _contiguous_group_size(inv: Tensor, G: int) -> int | None:
    """n when the batch is laid out as G consecutive blocks of n responses each (the layout
    trainers produce with repeat_interleave), else None. Costs O(B)."""
    B = inv.shape[0]
    if B % G:
        return None
    n = B // G
    expected = torch.arange(G, device=inv.device).repeat_interleave(n)
    return n if bool(torch.equal(inv, expected)) else None


def _group_sum(values: Tensor, inv: Tensor, G: int) -> Tensor:
    """Sum rows of `values` ([B] or [B, T]) into their groups: [G] or [G, T]."""
    out = torch.zeros((G,) + tuple(values.shape[1:]), dtype=values.dtype, device=values.device)
    return out.index_add_(0, inv, values)


# --------------------------------------------------------------------------------------------
# outcome-level estimators
# --------------------------------------------------------------------------------------------


def outcome_advantage(
    rewards: Tensor,
    group_ids: Tensor,
    *,
    scale: Literal["group", "none"] = "group",
    eps: float = 1e-6,
) -> Tensor:
    """GRPO outcome advantage per response.

    ``A[i] = (r[i] - mean_g r) / (std_g r + eps)`` with the unbiased (n-1) group std, where
    ``g`` is the group of response ``i``. ``scale="none"`` (Dr. GRPO) skips the division:
    ``A[i] = r[i] - mean_g r``. A group of one response gets exactly 0, and so does a group
    whose rewards are all equal (also with ``eps = 0``, where 0/0 would be NaN).

    Args:
        rewards: ``[B]`` outcome rewards.
        group_ids: ``[B]`` integer group labels (any values, any order).
        scale: ``"group"`` (divide by the group std + eps) or ``"none"``.
        eps: added to the std before dividing (>= 0).

    Returns:
        ``[B]`` advantages (floating dtype of ``rewards``, default dtype for int/bool).
    """
    _check_choice(scale, "scale", ("group", "none"))
    eps = _check_scalar(eps, "eps", nonneg=True)
    rewards = _check_rewards(rewards, None, None)
    inv, G = _check_group_ids(group_ids, rewards.shape[0], rewards.device)
    return _outcome_advantage(rewards.to(_float_dtype(rewards)), inv, G, scale, eps)


def _outcome_advantage(r: Tensor, inv: Tensor, G: int, scale: str, eps: float) -> Tensor:
    n = _group_sum(torch.ones_like(r), inv, G)
    mean = _group_sum(r, inv, G) / n
    centered = r - mean[inv]
    if scale == "none":
        return centered
    var = _group_sum(centered * centered, inv, G) / (n - 1).clamp(min=1)
    return centered / _safe_denom(var.sqrt(), eps, n)[inv]


def rloo_advantage(rewards: Tensor, group_ids: Tensor) -> Tensor:
    """RLOO (leave-one-out) advantage per response.

    ``A[i] = r[i] - mean_{k in g, k != i} r[k]``; a group of one response gets 0.

    Args:
        rewards: ``[B]`` outcome rewards.
        group_ids: ``[B]`` integer group labels (any values, any order).

    Returns:
        ``[B]`` advantages.
    """
    rewards = _check_rewards(rewards, None, None)
    inv, G = _check_group_ids(group_ids, rewards.shape[0], rewards.device)
    return _rloo(rewards.to(_float_dtype(rewards)), inv, G)


def _rloo(r: Tensor, inv: Tensor, G: int) -> Tensor:
    n = _group_sum(torch.ones_like(r), inv, G)[inv]
    s = _group_sum(r, inv, G)[inv]
    adv = r - (s - r) / (n - 1).clamp(min=1)
    return torch.where(n > 1, adv, 0.0)


# --------------------------------------------------------------------------------------------
# process-level pieces (SPRO)
# --------------------------------------------------------------------------------------------


def cumulative_process_reward(logp: Tensor, ref_logp: Tensor, mask: Tensor, beta: float) -> Tensor:
    """SPRO's cumulative process reward (CPR).

    ``p[i, t] = beta * (logp[i, t] - ref_logp[i, t])`` (self-guided per-token process reward),
    ``R[i, t] = sum_{j <= t, mask[i, j] = 1} p[i, j]`` for ``mask[i, t] = 1``, else 0.

    Args:
        logp: ``[B, T]`` log-probs of the sampled tokens under the sampling policy (pi_old).
        ref_logp: ``[B, T]`` log-probs under the frozen reference policy.
        mask: ``[B, T]`` 0/1 response mask.
        beta: process-reward scale, finite and >= 0.

    Returns:
        ``[B, T]`` cumulative process reward, 0 at masked positions.
    """
    beta = _check_scalar(beta, "beta", nonneg=True)
    m = _Mask(mask)
    logp = _check_bt(logp, "logp", m.shape, m.device)
    ref_logp = _check_bt(ref_logp, "ref_logp", m.shape, m.device)
    dtype = _float_dtype(logp, ref_logp)
    p = _process_reward(logp, ref_logp, m, beta, dtype)
    p.cumsum_(dim=1)
    return p.mul_(m.f(dtype))


def masked_step_advantage(
    cpr: Tensor,
    mask: Tensor,
    group_ids: Tensor,
    *,
    scale_std: bool = False,
    eps: float = 1e-6,
) -> Tensor:
    """SPRO's Masked Step Advantage (MSA).

    At each token index ``t``, compare the responses of a group that still have a token there:
    ``b[g, t] = mean{ cpr[k, t] : group(k) = g, mask[k, t] = 1 }`` (inclusive mean) and
    ``MSA[i, t] = cpr[i, t] - b[g(i), t]`` where ``mask[i, t] = 1``, else 0. A response that is
    alone at index ``t`` gets exactly 0 there. With ``scale_std``, divide by the unbiased std
    of those values plus ``eps`` (0 where fewer than two responses share the index, or where
    they are all equal).

    Args:
        cpr: ``[B, T]`` values to compare (normally ``cumulative_process_reward(...)``).
        mask: ``[B, T]`` 0/1 response mask.
        group_ids: ``[B]`` integer group labels (any values, any order).
        scale_std: divide by the per-(group, index) std.
        eps: added to that std.

    Returns:
        ``[B, T]`` MSA, 0 at masked positions.
    """
    eps = _check_scalar(eps, "eps", nonneg=True)
    m = _Mask(mask)
    cpr = _check_bt(cpr, "cpr", m.shape, m.device)
    inv, G = _check_group_ids(group_ids, m.shape[0], m.device)
    vals = _masked_values(cpr, m, "cpr", _float_dtype(cpr))
    return _msa_(vals, m, inv, G, scale_std, eps)


def _safe_denom(std: Tensor, eps: float, n: Tensor) -> Tensor:
    """std + eps, replaced by 1 where fewer than two values or where it is 0 (then the centred
    values are all 0 and stay 0 instead of becoming 0/0)."""
    denom = std.add_(eps)
    return torch.where((n < 2) | (denom == 0), 1.0, denom)


def _msa_(
    vals: Tensor, m: _Mask, inv: Tensor, G: int, scale_std: bool, eps: float, a_out: Tensor | None = None,
    finite_check: bool = False,
) -> Tensor:
    """Per-index masked group baseline, in place on `vals` (0 at masked positions already);
    adds the per-response outcome term `a_out` [B] when given. 0 at masked positions.
    With `finite_check`, raises `_NonFinite` if the [G, T] group sums are not finite (which
    they are iff every value of `vals` is finite), before `vals` is modified."""
    mf = m.f(vals.dtype)
    B, T = vals.shape
    n = _contiguous_group_size(inv, G)
    if n is not None and not scale_std:
        # fast path, groups are consecutive blocks of n rows: strided sums and a broadcast
        # subtraction instead of index_add_ / index_select (same arithmetic otherwise)
        count = mf.view(G, n, T).sum(dim=1)
        base = vals.view(G, n, T).sum(dim=1)
        if finite_check and not bool(torch.isfinite(base.sum())):
            raise _NonFinite
        base.div_(count.clamp_(min=1))
        vals.view(G, n, T).sub_(base.unsqueeze(1))
        if a_out is not None:
            vals.add_(a_out.unsqueeze(1))
        return vals.mul_(mf)
    count = _group_sum(mf, inv, G)  # [G, T] number of valid responses at each index
    base = _group_sum(vals, inv, G)
    if finite_check and not bool(torch.isfinite(base.sum())):
        raise _NonFinite
    base.div_(count.clamp(min=1))
    scratch = base.index_select(0, inv)
    vals.sub_(scratch)
    if scale_std:
        vals.mul_(mf)
        var = _group_sum(torch.mul(vals, vals, out=scratch), inv, G).div_((count - 1).clamp(min=1))
        vals.div_(torch.index_select(_safe_denom(var.sqrt_(), eps, count), 0, inv, out=scratch))
    if a_out is not None:
        vals.add_(a_out.unsqueeze(1))
    return vals.mul_(mf)


def _pooled_(vals: Tensor, m: _Mask, inv: Tensor, G: int, scale_std: bool, eps: float) -> Tensor:
    """Token-pooled group baseline: mean over all valid tokens of the group (inclusive)."""
    count = _group_sum(m.b.sum(dim=1).to(vals.dtype), inv, G)
    base = _group_sum(vals.sum(dim=1), inv, G) / count.clamp(min=1)
    vals.sub_(base[inv].unsqueeze(1))
    vals.masked_fill_(m.notb, 0.0)
    if scale_std:
        var = _group_sum((vals * vals).sum(dim=1), inv, G) / (count - 1).clamp(min=1)
        vals.div_(_safe_denom(var.sqrt(), eps, count)[inv].unsqueeze(1))
    return vals


def _pooled_loo_(vals: Tensor, m: _Mask, inv: Tensor, G: int) -> Tensor:
    """PRIME-style leave-one-out baseline: mean over the group's OTHER non-empty responses of
    their per-response mean value. 0 for a response with no other non-empty response."""
    length = m.b.sum(dim=1).to(vals.dtype)
    nonempty = (length > 0).to(vals.dtype)
    rmean = vals.sum(dim=1) / length.clamp(min=1)  # 0 for empty rows
    n_other = _group_sum(nonempty, inv, G)[inv] - nonempty
    s_other = _group_sum(rmean, inv, G)[inv] - rmean
    base = s_other / n_other.clamp(min=1)
    vals.sub_(base.unsqueeze(1))
    vals.masked_fill_(m.notb | (n_other == 0).unsqueeze(1), 0.0)
    return vals


def spro_advantage(
    rewards: Tensor,
    logp: Tensor,
    ref_logp: Tensor,
    mask: Tensor,
    group_ids: Tensor,
    *,
    beta: float,
    outcome_scale: Literal["group", "none"] = "group",
    msa_scale_std: bool = False,
    eps: float = 1e-6,
    process_reward: Literal["cumulative", "per_token"] = "cumulative",
    baseline: Literal["masked_step", "pooled", "pooled_loo"] = "masked_step",
    process_only: bool = False,
) -> Tensor:
    """SPRO advantage (Fei et al. 2025, arXiv 2507.01551): ``(A_out[i] + MSA[i, t]) * mask``.

    Default (the paper's reading in the method note):

    * ``A_out = outcome_advantage(rewards, group_ids, scale=outcome_scale, eps=eps)``
    * ``p[i, t] = beta * (logp - ref_logp)[i, t]``, ``R = cumsum_t p`` over valid tokens
    * ``MSA = masked_step_advantage(R, mask, group_ids, scale_std=msa_scale_std, eps=eps)``

    Ablation options (all one keyword away):

    * ``process_reward="per_token"``: use ``p[i, t]`` itself instead of the cumulative ``R``.
    * ``baseline="pooled"``: instead of the per-index mean, subtract one baseline per group:
      the mean of the values over ALL valid tokens of ALL responses of the group (token-weighted,
      inclusive); ``msa_scale_std`` then divides by the unbiased std over those same tokens.
    * ``baseline="pooled_loo"``: PRIME-style leave-one-out baseline per response: the mean over
      the OTHER non-empty responses of the group of their per-response mean value (0 advantage
      from this term if there is no other non-empty response). ``msa_scale_std`` is not
      supported with it.
    * ``process_only=True``: drop the outcome term, return ``MSA * mask``.

    Args:
        rewards: ``[B]`` outcome rewards.
        logp: ``[B, T]`` log-probs of the sampled tokens under the sampling policy (pi_old).
        ref_logp: ``[B, T]`` log-probs under the frozen reference policy.
        mask: ``[B, T]`` 0/1 response mask.
        group_ids: ``[B]`` integer group labels (any values, any order).
        beta: process-reward scale, finite and >= 0 (required).
        outcome_scale: ``"group"`` (GRPO std scaling) or ``"none"``.
        msa_scale_std: divide the process term by its baseline's std (+ eps).
        eps: numerical epsilon for both std divisions.

    Returns:
        ``[B, T]`` per-token advantages, exactly 0 at masked positions.
    """
    beta = _check_scalar(beta, "beta", nonneg=True)
    eps = _check_scalar(eps, "eps", nonneg=True)
    _check_choice(outcome_scale, "outcome_scale", ("group", "none"))
    _check_choice(process_reward, "process_reward", ("cumulative", "per_token"))
    _check_choice(baseline, "baseline", ("masked_step", "pooled", "pooled_loo"))
    if baseline == "pooled_loo" and msa_scale_std:
        raise ValueError("msa_scale_std=True is not supported with baseline='pooled_loo'")
    m = _Mask(mask)
    B = m.shape[0]
    rewards = _check_rewards(rewards, B, m.device)
    logp = _check_bt(logp, "logp", m.shape, m.device)
    ref_logp = _check_bt(ref_logp, "ref_logp", m.shape, m.device)
    inv, G = _check_group_ids(group_ids, B, m.device)
    dtype = _float_dtype(rewards, logp, ref_logp)

    a_out = None if process_only else _outcome_advantage(rewards.to(dtype), inv, G, outcome_scale, eps)

    def process_values(sanitize: bool) -> Tensor:
        # p (or its cumulative sum R), 0 at masked positions. The default path skips the
        # finiteness test of p: a non-finite p (even at a masked position) reaches the MSA
        # group sums, which _msa_ tests; then this runs again with the checked slow path.
        check = baseline != "masked_step" or sanitize
        v = _process_reward(logp, ref_logp, m, beta, dtype, check=check, sanitize=sanitize)
        if process_reward == "cumulative":
            v.cumsum_(dim=1)
            v.mul_(m.f(dtype))
        return v

    if baseline == "masked_step":
        try:
            return _msa_(process_values(False), m, inv, G, msa_scale_std, eps, a_out, finite_check=True)
        except _NonFinite:
            vals = process_values(True)
            if not bool(torch.isfinite(vals.sum())):
                raise ValueError("beta * (logp - ref_logp) overflows when accumulated; check the inputs") from None
            return _msa_(vals, m, inv, G, msa_scale_std, eps, a_out)
    vals = process_values(False)
    adv = _pooled_(vals, m, inv, G, msa_scale_std, eps) if baseline == "pooled" else _pooled_loo_(vals, m, inv, G)
    if a_out is not None:
        adv.add_(a_out.unsqueeze(1)).masked_fill_(m.notb, 0.0)
    return adv


# --------------------------------------------------------------------------------------------
# PRIME
# --------------------------------------------------------------------------------------------


def _masked_whiten(x: Tensor, mb: Tensor, shift_mean: bool, eps: float = 1e-8) -> Tensor:
    """verl-style masked whitening over all valid tokens: ``(x - mean) / sqrt(var + eps)`` with
    the Bessel-corrected variance; ``shift_mean=False`` adds the mean back. 0 at masked
    positions. With fewer than two valid tokens the variance is taken as 0."""
    n = mb.sum().to(x.dtype)
    xm = torch.where(mb, x, 0.0)
    mean = xm.sum() / n.clamp(min=1)
    centered = torch.where(mb, x - mean, 0.0)
    var = (centered * centered).sum() / (n - 1).clamp(min=1)
    out = centered * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out.masked_fill_(~mb, 0.0)


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
) -> Tensor:
    """PRIME advantage (Cui et al. 2025, arXiv 2502.01456), leave-one-out per reward source.

    1. Process reward of the implicit PRM: ``q[i, t] = beta * (prm_logp - ref_logp)[i, t]``.
    2. Process source, ``process_baseline="others_mean"`` (the method note): the baseline of
       response ``i`` is the mean, over the OTHER responses ``k`` of its group that have at least
       one valid token, of ``mean_t q[k, t]``; ``q'[i, t] = q[i, t] - baseline[i]``. If ``i`` has
       no such neighbour its process term is 0. ``"verl_recipe"`` reproduces verl's
       ``recipe/prime`` token formula ``q'[i, t] = q[i, t] - (sum_k m_k - q[i, t]) / (n - 1)``
       with ``m_k = mean_t q[k, t]`` over the ``n`` non-empty responses of the group (it equals
       "others_mean" only when ``q`` is constant along the response).
    3. Outcome source: ``rloo_advantage(rewards, group_ids)`` placed at the last valid token of
       each response (empty rows get nothing).
    4. ``c = outcome_coef * outcome + process_coef * q'``; returns
       ``G[i, t] = sum_{j >= t, mask[i, j] = 1} c[i, j]`` (reverse cumulative sum, gamma = 1).
    5. If ``whiten``: ``(G - mean) / sqrt(var + whiten_eps)`` with mean and Bessel-corrected
       variance over all valid tokens of the batch, as verl's ``masked_whiten``. By default the
       mean is NOT added back (verl's ``shift_mean=True``, which PRIME uses);
       ``whiten_shift_mean=False`` adds it back.

    Args:
        rewards: ``[B]`` outcome rewards (PRIME: 0/1 accuracy).
        prm_logp: ``[B, T]`` log-probs of the sampled tokens under the implicit PRM.
        ref_logp: ``[B, T]`` log-probs under the frozen reference model.
        mask: ``[B, T]`` 0/1 response mask.
        group_ids: ``[B]`` integer group labels (any values, any order).
        beta: implicit-PRM scale (PRIME: 0.05), finite and >= 0.
        outcome_coef, process_coef: weights of the two sources (PRIME's ``gt_coef`` /
            ``dpo_coef``; only their ratio matters after whitening).

    Returns:
        ``[B, T]`` per-token advantages, exactly 0 at masked positions.
    """
    beta = _check_scalar(beta, "beta", nonneg=True)
    outcome_coef = _check_scalar(outcome_coef, "outcome_coef")
    process_coef = _check_scalar(process_coef, "process_coef")
    whiten_eps = _check_scalar(whiten_eps, "whiten_eps", positive=True)
    _check_choice(process_baseline, "process_baseline", ("others_mean", "verl_recipe"))
    m = _Mask(mask)
    mask, mb = m.raw, m.b
    B, T = mask.shape
    rewards = _check_rewards(rewards, B, mask.device)
    prm_logp = _check_bt(prm_logp, "prm_logp", mask.shape, mask.device)
    ref_logp = _check_bt(ref_logp, "ref_logp", mask.shape, mask.device)
    inv, G = _check_group_ids(group_ids, B, mask.device)
    dtype = _float_dtype(rewards, prm_logp, ref_logp)

    q = _process_reward(prm_logp, ref_logp, m, beta, dtype, names=("prm_logp", "ref_logp"))
    if process_baseline == "others_mean":
        q = _pooled_loo_(q, m, inv, G)
    else:
        length = mb.sum(dim=1).to(dtype)
        nonempty = (length > 0).to(dtype)
        rmean = q.sum(dim=1) / length.clamp(min=1)
        n = _group_sum(nonempty, inv, G)[inv].unsqueeze(1)
        s = _group_sum(rmean, inv, G)[inv].unsqueeze(1)
        q = torch.where(mb & (n > 1), q - (s - q) / (n - 1).clamp(min=1), 0.0)
    c = q.mul_(process_coef)

    # outcome RLOO at the last valid token of each non-empty row
    a_out = _rloo(rewards.to(dtype), inv, G) * outcome_coef
    pos = torch.arange(T, device=mask.device)
    last = torch.where(mb, pos, -1).amax(dim=1) if T > 0 else torch.full((B,), -1, device=mask.device)
    rows = (last >= 0).nonzero().squeeze(1)
    c.index_put_((rows, last[rows]), a_out[rows], accumulate=True)

    returns = c.flip(1).cumsum(1).flip(1).masked_fill_(~mb, 0.0)
    if not whiten:
        return returns
    return _masked_whiten(returns, mb, whiten_shift_mean, whiten_eps)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------

EstimatorFn = Callable[..., Tensor]
_REGISTRY: dict[str, EstimatorFn] = {}

# data inputs the trainer passes to every estimator; an estimator ignores those it does not use
_IGNORABLE = frozenset({"rewards", "mask", "group_ids", "logp", "old_logp", "ref_logp", "prm_logp", "beta"})


def register_estimator(name: str, *, overwrite: bool = False) -> Callable[[EstimatorFn], EstimatorFn]:
    """Decorator registering an advantage estimator under ``name``.

    The function must accept keyword arguments ``rewards, mask, group_ids, logp, ref_logp,
    prm_logp`` (plus its own options) and ignore those it does not need (take ``**kwargs``),
    and return per-token advantages ``[B, T]`` that are 0 where ``mask`` is 0. Registering an
    existing name raises ``ValueError`` unless ``overwrite=True``.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"estimator name must be a non-empty string, got {name!r}")

    def deco(fn: EstimatorFn) -> EstimatorFn:
        if name in _REGISTRY and not overwrite and _REGISTRY[name] is not fn:
            raise ValueError(f"advantage estimator {name!r} is already registered")
        _REGISTRY[name] = fn
        return fn

    return deco


def get_estimator(name: str) -> EstimatorFn:
    """Return the estimator registered as ``name`` (see ``list_estimators()``)."""
    try:
        return _REGISTRY[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown advantage estimator {name!r}; known: {', '.join(list_estimators())}"
        ) from None


def list_estimators() -> list[str]:
    """Names of all registered estimators, sorted."""
    return sorted(_REGISTRY)


def _reject_unknown(est: str, extra: dict[str, Any], options: tuple[str, ...]) -> None:
    unknown = sorted(k for k in extra if k not in _IGNORABLE)
    if unknown:
        raise ValueError(
            f"estimator {est!r} got unknown option(s) {', '.join(unknown)}; "
            f"its options are: {', '.join(options) or '(none)'}"
        )


def _need(est: str, **inputs: Any) -> None:
    for key, value in inputs.items():
        if value is None:
            raise ValueError(f"estimator {est!r} needs the input {key!r} ([B, T] or [B] tensor)")


def _broadcast(adv: Tensor, mask: Tensor) -> Tensor:
    """[B] -> [B, T]: adv[i] at valid positions, 0 elsewhere."""
    m = _Mask(mask)
    if adv.shape[0] != m.shape[0]:
        raise ValueError(f"rewards has {adv.shape[0]} entries but mask has B = {m.shape[0]} rows")
    return adv.to(m.device).unsqueeze(1) * m.f(adv.dtype)


@register_estimator("grpo")
def _grpo_estimator(*, rewards=None, mask=None, group_ids=None, scale="group", eps=1e-6, **extra) -> Tensor:
    """GRPO (arXiv 2402.03300): outcome_advantage(scale="group") broadcast over valid tokens."""
    _reject_unknown("grpo", extra, ("scale", "eps"))
    _need("grpo", rewards=rewards, mask=mask, group_ids=group_ids)
    return _broadcast(outcome_advantage(rewards, group_ids, scale=scale, eps=eps), mask)


@register_estimator("dr_grpo")
def _dr_grpo_estimator(*, rewards=None, mask=None, group_ids=None, **extra) -> Tensor:
    """Dr. GRPO (arXiv 2503.20783): r - group mean (no std division) broadcast over tokens."""
    _reject_unknown("dr_grpo", extra, ())
    _need("dr_grpo", rewards=rewards, mask=mask, group_ids=group_ids)
    return _broadcast(outcome_advantage(rewards, group_ids, scale="none"), mask)


@register_estimator("rloo")
def _rloo_estimator(*, rewards=None, mask=None, group_ids=None, **extra) -> Tensor:
    """RLOO (arXiv 2402.14740): leave-one-out advantage broadcast over valid tokens."""
    _reject_unknown("rloo", extra, ())
    _need("rloo", rewards=rewards, mask=mask, group_ids=group_ids)
    return _broadcast(rloo_advantage(rewards, group_ids), mask)


_SPRO_OPTIONS = ("outcome_scale", "msa_scale_std", "eps", "process_reward", "baseline", "process_only")


@register_estimator("spro")
def _spro_estimator(*, rewards=None, mask=None, group_ids=None, logp=None, ref_logp=None, beta=None, **extra) -> Tensor:
    """SPRO (arXiv 2507.01551): spro_advantage; ``logp`` is the sampling policy's log-probs."""
    options = {k: extra.pop(k) for k in _SPRO_OPTIONS if k in extra}
    _reject_unknown("spro", extra, ("beta",) + _SPRO_OPTIONS)
    _need("spro", rewards=rewards, mask=mask, group_ids=group_ids, logp=logp, ref_logp=ref_logp, beta=beta)
    return spro_advantage(rewards, logp, ref_logp, mask, group_ids, beta=beta, **options)


_PRIME_OPTIONS = ("outcome_coef", "process_coef", "process_baseline", "whiten", "whiten_shift_mean", "whiten_eps")


@register_estimator("prime")
def _prime_estimator(*, rewards=None, mask=None, group_ids=None, prm_logp=None, ref_logp=None, beta=None, **extra) -> Tensor:
    """PRIME (arXiv 2502.01456): prime_advantage; beta defaults to 0.05 when not given."""
    options = {k: extra.pop(k) for k in _PRIME_OPTIONS if k in extra}
    _reject_unknown("prime", extra, ("beta",) + _PRIME_OPTIONS)
    _need("prime", rewards=rewards, mask=mask, group_ids=group_ids, prm_logp=prm_logp, ref_logp=ref_logp)
    return prime_advantage(
        rewards, prm_logp, ref_logp, mask, group_ids, beta=0.05 if beta is None else beta, **options
    )
