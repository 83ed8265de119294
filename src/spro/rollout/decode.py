"""Sampling decode loop over the model's forward pass: ``generate``'s sampling, without its per-step overhead.

:func:`sample_decode` does what ``model.generate(do_sample=True, ...)`` does for a decoder-only model with a
dynamic KV cache, step for step: the same forward inputs (attention mask grown by one column per step,
or none when there is no padding, position ids from the mask, ``logits_to_keep=1``), the same float32 copy of the last logits, the same
transformers logits warpers in the same order (temperature, top-k, top-p: ``TemperatureLogitsWarper``,
``TopKLogitsWarper``, ``TopPLogitsWarper``, each only when it changes something), ``softmax`` then
``torch.multinomial`` on every row at every step (so the random stream is consumed the same way), rows
that have emitted eos continued with the pad token, and a stop when every row has. So with the same seed
it samples the same tokens as ``generate`` (tests/rollout/test_decode.py checks it), at less cost per step:
``generate``'s stopping criteria, input preparation and bookkeeping are ~25% of a bf16 decode step of
SmolLM2-135M at 16 responses on one CPU thread (issue 23; benchmarks/roofline.py measures both).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["sample_decode", "supports_sample_decode"]


# generation_config keys that do not change what generate samples here (the backend passes temperature and
# top_p itself, and top_k when it is set).
_NEUTRAL_KEYS = {"bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "use_cache",
                 "transformers_version", "_from_model_config", "output_attentions", "output_hidden_states",
                 "max_length", "max_new_tokens", "do_sample", "temperature", "top_p", "return_dict_in_generate",
                 "output_scores", "output_logits", "num_beams", "num_return_sequences"}


def supports_sample_decode(model: Any, top_k: int | None = None) -> bool:
    """Whether :func:`sample_decode` samples what ``generate`` would for ``model``: its forward takes a KV cache
    and ``logits_to_keep``, it is a decoder-only model, and its ``generation_config`` sets nothing that adds a
    logits processor (a repetition penalty, top-k when ``top_k`` is not given, min-p, ...). Otherwise the
    backend uses ``generate``."""
    import inspect

    inner = getattr(model, "module", model)
    if hasattr(inner, "get_base_model"):
        inner = inner.get_base_model()
    try:
        params = inspect.signature(inner.forward).parameters
    except (TypeError, ValueError):
        return False
    config = getattr(inner, "config", None)
    if config is None or getattr(config, "is_encoder_decoder", False):
        return False
    if "logits_to_keep" not in params or not ("cache" in params or "past_key_values" in params):
        return False
    gc = getattr(inner, "generation_config", None)
    diff = gc.to_diff_dict() if gc is not None else {}
    extra = {k for k, v in diff.items() if k not in _NEUTRAL_KEYS and v is not None}
    if top_k is not None:
        extra.discard("top_k")
    return not extra


def _warpers(temperature: float, top_k: int | None, top_p: float) -> Any:
    from transformers.generation.logits_process import (
        LogitsProcessorList,
        TemperatureLogitsWarper,
        TopKLogitsWarper,
        TopPLogitsWarper,
    )

    procs = LogitsProcessorList()
    if temperature is not None and temperature != 1.0:
        procs.append(TemperatureLogitsWarper(temperature))
    if top_k is not None and top_k != 0:
        procs.append(TopKLogitsWarper(top_k=top_k, min_tokens_to_keep=1))
    if top_p is not None and top_p < 1.0:
        procs.append(TopPLogitsWarper(top_p=top_p, min_tokens_to_keep=1))
    return procs


@torch.no_grad()
def sample_decode(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    pad_token_id: int,
    eos_token_id: int | list[int] | None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    cache: Any = None,
    cache_kw: str = "cache",
) -> torch.Tensor:
    """Sample up to ``max_new_tokens`` tokens after each row of ``input_ids`` ``[B, P]`` (left padded,
    ``attention_mask`` ``[B, P]``), continuing ``cache`` (the KV cache of the first ``P - 1`` positions)
    when given. Returns the new tokens ``[B, n]`` (n <= max_new_tokens; pad after a row's eos).
    """
    from transformers import DynamicCache

    warp = _warpers(temperature, top_k, top_p)
    eos = None if eos_token_id is None else torch.as_tensor(eos_token_id, device=input_ids.device).reshape(-1)
    pos = attention_mask.long().cumsum(-1) - 1
    pos = pos.masked_fill(attention_mask == 0, 0)
    # generate drops an all-ones mask (no padding): the attention then takes its causal path
    attn = None if bool((attention_mask == 1).all()) else attention_mask
    if cache is None:
        cache = DynamicCache(config=getattr(model, "config", None))
        step_ids, step_pos = input_ids, pos
    else:  # the cache holds the first P - 1 positions: run the last prompt token
        step_ids, step_pos = input_ids[:, -1:], pos[:, -1:]
    seq = input_ids  # the warpers see the sequence so far, as in generate
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    new = []
    for t in range(max_new_tokens):
        out = model(input_ids=step_ids, attention_mask=attn, position_ids=step_pos, use_cache=True,
                    logits_to_keep=1, **{cache_kw: cache})
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        scores = warp(seq, out.logits[:, -1, :].to(copy=True, dtype=torch.float32))
        nxt = torch.multinomial(torch.softmax(scores, dim=-1), num_samples=1).squeeze(1)
        nxt = torch.where(unfinished, nxt, torch.full_like(nxt, pad_token_id))
        new.append(nxt)
        if eos is not None:
            unfinished &= ~torch.isin(nxt, eos)
        if not bool(unfinished.any()) or t == max_new_tokens - 1:
            break
        step_ids = nxt[:, None]
        seq = torch.cat([seq, step_ids], dim=1)
        step_pos = step_pos[:, -1:] + 1
        if attn is not None:
            attn = torch.cat([attn, attn.new_ones((attn.shape[0], 1))], dim=1)
    return torch.stack(new, dim=1)
