"""Per-token log-probs of sampled responses under a causal LM, in one batched forward pass.

One convention for every model the trainer scores (the policy as pi_old and during the update,
the frozen reference, PRIME's implicit PRM): prompt (left padded) and response (right padded)
concatenated, position ids from the attention mask as in ``generate``, logits divided by the
sampling temperature, and the output layer (lm_head, then the log-softmax in float32) computed
only over the response positions, not the prompt's; in the no-grad passes (pi_ref, pi_old when
not fused with the update) also not over the padding after a response ends (transformers'
boolean ``logits_to_keep``, which packs them into ``[N, V]``; bit-identical values; a model
that does not take it falls back to the last ``T + 1`` positions; :func:`_forward_kept` says why
not with gradients). Padding positions of the returned ``[B, T]`` tensors hold 0. So
``log pi_old - log pi_ref`` is exactly 0 for identical
models, and SPRO's process reward costs no extra pass.
"""

from __future__ import annotations

from typing import Any

import torch

from spro.rollout.batch import RolloutBatch
from spro.rollout.hf import _cache_kw

__all__ = ["sequence_logps", "logps_no_grad", "logprob_fn", "entropy_from_logits"]


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the softmax distribution at every position, computed stably.

    ``H = logsumexp(z) - sum_v softmax(z)_v * z_v`` written as ``-sum_v p_v log p_v`` with
    ``log p = log_softmax(z)``; entries with ``p_v = 0`` (e.g. ``z_v = -inf``) contribute 0.

    Args:
        logits: ``[B, T, V]`` (any leading shape ``[..., V]`` works) floating logits.

    Returns:
        ``[B, T]`` (the leading shape) entropies in nats; differentiable.
    """
    if not isinstance(logits, torch.Tensor):
        raise ValueError(f"logits must be a torch.torch.Tensor, got {type(logits).__name__}")
    if logits.dim() < 1 or logits.shape[-1] == 0:
        raise ValueError(f"logits must have a non-empty last (vocabulary) dim, got shape {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be floating, got dtype {logits.dtype}")
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, 0.0)
    return -plogp.sum(dim=-1)


def _groups_share_prompts(batch: RolloutBatch, G: int) -> bool:
    B = batch.prompt_ids.shape[0]
    if G < 2 or B % G:
        return False
    first = batch.prompt_ids[::G].repeat_interleave(G, 0)
    return torch.equal(first, batch.prompt_ids) and torch.equal(batch.prompt_mask[::G].repeat_interleave(G, 0), batch.prompt_mask)


def sequence_logps(
    model: Any,
    batch: RolloutBatch,
    *,
    temperature: float = 1.0,
    with_entropy: bool = False,
    entropy_grad: bool = True,
    idx: torch.Tensor | None = None,
    group_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probs of the response tokens (and per-token entropies) in one forward pass.

    The prompt (left padded) and response (right padded) are concatenated; position ids follow
    the attention mask as in ``generate``. Logits are divided by ``temperature`` (the sampling
    distribution). The output layer runs only at the response positions (without gradients: only at
    those that predict a response token, ``completion_mask``); padding positions of the result hold 0.
    Returns ``(logp [b, T], entropy [b, T] or None)`` for the rows ``idx`` (default: all).
    Gradients flow when called outside ``torch.no_grad()`` (to the entropy only if
    ``entropy_grad``).

    Prefix sharing: with ``group_size=G`` (and ``idx`` None), when every run of G consecutive
    rows has the same prompt, each prompt is run once, its KV cache repeated G times, and only
    the responses run on top of it; the result equals the plain pass up to float rounding
    (gradients included) and saves the prompt's share of the compute G-1 times.
    """
    if idx is None and group_size and _groups_share_prompts(batch, group_size):
        return _shared_prefix_logps(model, batch, group_size, temperature, with_entropy, entropy_grad)
    p_ids, p_mask, c_ids, c_mask = batch.prompt_ids, batch.prompt_mask, batch.completion_ids, batch.completion_mask
    if idx is not None:
        p_ids, p_mask, c_ids, c_mask = p_ids[idx], p_mask[idx], c_ids[idx], c_mask[idx]
    T = c_ids.shape[1]
    input_ids = torch.cat([p_ids, c_ids], dim=1)
    attn = torch.cat([p_mask, c_mask], dim=1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    P = p_ids.shape[1]
    keep = torch.zeros_like(attn, dtype=torch.bool)
    keep[:, P - 1 : P + T - 1] = c_mask.bool()  # position P-1+t predicts response token t
    out = _forward_kept(model, keep, T + 1, input_ids=input_ids, attention_mask=attn, position_ids=pos, use_cache=False)
    if out.logits.dim() == 3:  # [b, T+1, V]: with gradients, or a model that ignores the mask
        return _zero_padding(c_mask, *_token_logps(out.logits[:, :-1, :], c_ids, temperature, with_entropy, entropy_grad))
    return _scatter(c_mask, *_token_logps(out.logits, c_ids[c_mask.bool()], temperature, with_entropy, entropy_grad))


def _forward_kept(model: Any, keep: torch.Tensor, n_last: int, **kw: Any) -> Any:
    """``model(**kw)`` computing the output layer only at the ``True`` positions of ``keep`` ``[b, L]``
    (logits ``[N, V]``, N = keep.sum(): transformers' boolean ``logits_to_keep``), or at its last
    ``n_last`` positions (logits ``[b, n_last, V]``) when gradients are on or the model does not take
    a boolean mask.

    Why not with gradients: the forward values are the same either way (row by row), but the output
    layer's weight gradient sums over the rows it ran on, and without the padding rows (whose
    gradient is 0) the matmul's summation is blocked differently: the same gradient up to float
    rounding (~1e-7 relative), not bit for bit, and a fixed-seed run's metrics would change in their
    last digits. The no-grad passes (pi_ref, pi_old when not fused, PRIME's PRM scoring) are
    bit-identical packed, and take the saving."""
    if torch.is_grad_enabled():
        return model(logits_to_keep=n_last, **kw)
    try:
        out = model(logits_to_keep=keep, **kw)
        if out.logits.dim() == 2 and out.logits.shape[0] == int(keep.sum()):
            return out
    except (IndexError, TypeError):  # an older transformers indexes with the mask as positions
        pass
    return model(logits_to_keep=n_last, **kw)


def _zero_padding(mask: torch.Tensor, logp: torch.Tensor, ent: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``logp``, ``ent`` ``[b, T]`` with 0 where ``mask`` is 0 (the padding after a response)."""
    pad = mask == 0
    return logp.masked_fill(pad, 0.0), (None if ent is None else ent.masked_fill(pad, 0.0))


def _scatter(mask: torch.Tensor, logp: torch.Tensor, ent: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Values ``[N]`` at the ``True`` entries of ``mask`` ``[b, T]`` -> ``[b, T]`` with 0 elsewhere (differentiable)."""
    m = mask.bool()

    def put(v: torch.Tensor) -> torch.Tensor:
        return torch.zeros(m.shape, dtype=v.dtype, device=v.device).masked_scatter(m, v)

    return put(logp), (None if ent is None else put(ent))


def _token_logps(logits: torch.Tensor, c_ids: torch.Tensor, temperature: float, with_entropy: bool,
                 entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """logits [B, T, V] predicting c_ids [B, T] -> (logp [B, T], entropy [B, T] or None)."""
    logits = logits.float()
    if temperature != 1.0:
        logits = logits / temperature
    logp = logits.gather(-1, c_ids.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
    ent = None
    if with_entropy:
        if entropy_grad:
            ent = entropy_from_logits(logits)
        else:
            with torch.no_grad():
                ent = entropy_from_logits(logits.detach())
    return logp, ent


def _shared_prefix_logps(model: Any, batch: RolloutBatch, G: int, temperature: float, with_entropy: bool,
                         entropy_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    p_ids, p_mask = batch.prompt_ids[::G], batch.prompt_mask[::G]
    P = p_ids.shape[1]
    c_ids, c_mask = batch.completion_ids, batch.completion_mask
    kw = _cache_kw(model)
    out = model(input_ids=p_ids, attention_mask=p_mask, position_ids=(p_mask.cumsum(-1) - 1).clamp(min=0),
                use_cache=True, logits_to_keep=1)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    cache.batch_repeat_interleave(G)
    attn = torch.cat([batch.prompt_mask, c_mask], dim=1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)[:, P:]
    T = c_ids.shape[1]
    keep = torch.zeros_like(c_mask, dtype=torch.bool)
    keep[:, : T - 1] = c_mask[:, 1:].bool()  # response position t predicts token t+1
    out2 = _forward_kept(model, keep, T, input_ids=c_ids, attention_mask=attn, position_ids=pos, use_cache=True,
                         **{kw: cache})
    first = out.logits[:, -1:, :].repeat_interleave(G, 0)  # the prompt's last position predicts token 0
    if out2.logits.dim() == 3:  # with gradients, or a model that ignores the mask
        logits = torch.cat([first, out2.logits[:, :-1, :]], dim=1)
        return _zero_padding(c_mask, *_token_logps(logits, c_ids, temperature, with_entropy, entropy_grad))
    # [N, V] in the row-major order of c_mask: each row's token 0 from `first`, the others from out2.
    m = c_mask.bool()
    lp0, ent0 = _token_logps(first[:, 0, :], c_ids[:, 0], temperature, with_entropy, entropy_grad)
    lp, ent = _token_logps(out2.logits, c_ids[:, 1:][m[:, 1:]], temperature, with_entropy, entropy_grad)
    logp0, entropy0 = _zero_padding(m[:, :1], lp0[:, None], None if ent0 is None else ent0[:, None])
    logp1, entropy1 = _scatter(m[:, 1:], lp, ent)
    logp = torch.cat([logp0, logp1], dim=1)
    return logp, (None if ent is None else torch.cat([entropy0, entropy1], dim=1))


def logps_no_grad(model: Any, batch: RolloutBatch, *, temperature: float, with_entropy: bool,
                  chunk: int | None = None, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``sequence_logps`` without gradients, in chunks of ``chunk`` rows (None: the whole batch in one
    pass). Returns ``(logp [B, T], entropy [B, T] or None)``."""
    B = len(batch)
    chunk = chunk or B
    lps, ents = [], []
    with torch.no_grad():
        for s in range(0, B, chunk):
            idx = torch.arange(s, min(B, s + chunk), device=batch.completion_ids.device)
            lp, ent = sequence_logps(model, batch, temperature=temperature, with_entropy=with_entropy,
                                     idx=None if chunk >= B else idx, group_size=group_size)
            lps.append(lp)
            ents.append(ent)
    return torch.cat(lps), (torch.cat(ents) if with_entropy else None)


def logprob_fn(*, temperature: float = 1.0, group_size: int | None = None):
    """The trainer's log-prob function ``fn(model, batch, *, grad=False) -> [B, T]`` (what algorithms get as
    ``TrainerContext.logprobs``, and PRIME's implicit PRM uses): :func:`sequence_logps` at ``temperature``
    (with prompt-prefix sharing over groups of ``group_size``); without ``grad`` a no-grad pass in eval mode
    (no dropout)."""
    from spro.models.passes import eval_mode

    def fn(model: Any, batch: RolloutBatch, *, grad: bool = False) -> torch.Tensor:
        if grad:
            return sequence_logps(model, batch, temperature=temperature, group_size=group_size)[0]
        with eval_mode(model):
            return logps_no_grad(model, batch, temperature=temperature, with_entropy=False, group_size=group_size)[0]

    return fn
