"""Sampling G responses per prompt with ``transformers``' ``generate`` (the ``hf`` backend)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from spro.models.precision import autocast_scope
from spro.rollout.batch import RolloutBatch, completion_mask_from_ids

__all__ = ["RolloutBackend", "HFGenerateBackend", "make_backend"]


@runtime_checkable
class RolloutBackend(Protocol):
    """What the trainer needs from a generator."""

    def generate(self, prompts: list[str], num_generations: int) -> RolloutBatch:
        """Sample ``num_generations`` responses for each prompt string."""
        ...

    def sync_weights(self, model: Any) -> None:
        """Make the generator use ``model``'s current weights (no-op when it shares them)."""
        ...


class HFGenerateBackend:
    """G samples per prompt with ``model.generate`` (left padding, temperature, top-p, top-k).

    The backend generates with the very module being trained (``model``), so no weight sync is
    needed. ``generation_batch_size`` (in responses, a multiple of G; 0 = all at once) bounds the
    memory of one ``generate`` call. With ``share_prompt_prefix`` each prompt (but its last
    token) is pre-filled once and its KV cache repeated G times before ``generate`` continues
    from it, instead of pre-filling G copies (greedy outputs are identical either way). Under
    ``model.precision=bf16`` the whole call runs in one autocast region, so the weights are cast to bf16
    once per call, not once per decode step (:func:`spro.models.precision.autocast_scope`).
    """

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_p: float = 1.0,
        top_k: int = 0,
        min_p: float = 0.0,
        repetition_penalty: float = 1.0,
        generation_batch_size: int = 0,
        share_prompt_prefix: bool = True,
    ) -> None:
        self.model = model
        self.share_prompt_prefix = share_prompt_prefix
        self.tokenizer = tokenizer
        self.max_new_tokens = max_new_tokens
        self.temperature = temperature
        self.top_p = top_p
        self.top_k = top_k
        # (passed to generate only when set, so that the default call is the one of before)
        self.extra_sampling = {k: v for k, v in (("min_p", min_p or None), ("repetition_penalty", repetition_penalty))
                               if v is not None and not (k == "repetition_penalty" and v == 1.0)}
        self.generation_batch_size = generation_batch_size

    def sync_weights(self, model: Any) -> None:
        self.model = model

    @torch.no_grad()
    def generate(self, prompts: list[str], num_generations: int) -> RolloutBatch:
        tok, model = self.tokenizer, self.model
        G = num_generations
        per_call = max(1, (self.generation_batch_size or len(prompts) * G) // G)
        pad_id = tok.pad_token_id
        eos_id = tok.eos_token_id
        device = next(model.parameters()).device
        was_training = model.training
        model.eval()
        old_side = tok.padding_side
        tok.padding_side = "left"
        pieces = []
        try:
            for start in range(0, len(prompts), per_call):
                chunk = prompts[start : start + per_call]
                enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=False)
                ids = enc["input_ids"].to(device)
                attn = enc["attention_mask"].to(device)
                with autocast_scope(model):
                    new = self._sample(model, ids, attn, G)
                pieces.append((ids.repeat_interleave(G, 0), attn.repeat_interleave(G, 0), new))
        finally:
            tok.padding_side = old_side
            if was_training:
                model.train()
        prompt_ids = _cat_left_padded([p[0] for p in pieces], pad_id)
        prompt_mask = _cat_left_padded([p[1] for p in pieces], 0)
        completion_ids = _cat_right_padded([p[2] for p in pieces], pad_id)
        mask, truncated = completion_mask_from_ids(completion_ids, eos_id)
        completion_ids = completion_ids.masked_fill(mask == 0, pad_id)
        texts = tok.batch_decode(completion_ids.masked_fill(mask == 0, pad_id), skip_special_tokens=True)
        group_ids = torch.arange(len(prompts), device=device).repeat_interleave(G)
        return RolloutBatch(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            completion_ids=completion_ids,
            completion_mask=mask,
            truncated=truncated,
            group_ids=group_ids,
            prompts=[p for p in prompts for _ in range(G)],
            completions=texts,
        )

    def _sample(self, model: Any, ids: torch.Tensor, attn: torch.Tensor, G: int) -> torch.Tensor:
        """G responses to each of the n left-padded prompts ``ids``/``attn`` [n, P]: token ids [n*G, T] (rows
        g*G..g*G+G-1 answer prompt g; after eos, anything: the caller masks it)."""
        tok = self.tokenizer
        kwargs: dict[str, Any] = dict(
            do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or None,
            max_new_tokens=self.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            use_cache=True, **self.extra_sampling,
        )
        P = ids.shape[1]
        if self.share_prompt_prefix and P >= 2:
            cache = _prefill(model, ids, attn, G)
            out = model.generate(input_ids=ids.repeat_interleave(G, 0), attention_mask=attn.repeat_interleave(G, 0),
                                 **{_cache_kw(model): cache}, **kwargs)
        else:
            out = model.generate(input_ids=ids, attention_mask=attn, num_return_sequences=G, **kwargs)
        return out[:, P:]


def _cache_kw(model: Any) -> str:
    """Name of the KV-cache argument of ``model.forward`` ('cache' in newer transformers)."""
    return "cache" if "cache" in forward_params(model) else "past_key_values"


def forward_params(model: Any) -> Any:
    """The parameters of the forward of ``model`` itself, through DDP and peft (a peft model's forward passes
    everything on by keyword)."""
    import inspect

    model = getattr(model, "module", model)  # DDP
    if hasattr(model, "get_base_model"):
        model = model.get_base_model()
    return inspect.signature(model.forward).parameters


def _prefill(model: Any, ids: torch.Tensor, attn: torch.Tensor, G: int) -> Any:
    """KV cache of each prompt but its last token, computed once and repeated G times.

    ids, attn [n, P] (left padded) -> a cache for n*G rows holding P-1 positions.
    """
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids[:, :-1], attention_mask=attn[:, :-1], position_ids=pos[:, :-1],
                use_cache=True, logits_to_keep=1)
    cache = out.cache if hasattr(out, "cache") else out.past_key_values
    cache.batch_repeat_interleave(G)
    return cache


def _cat_left_padded(ts: list[torch.Tensor], value: int) -> torch.Tensor:
    width = max(t.shape[1] for t in ts)
    return torch.cat([torch.nn.functional.pad(t, (width - t.shape[1], 0), value=value) for t in ts])


def _cat_right_padded(ts: list[torch.Tensor], value: int) -> torch.Tensor:
    width = max(t.shape[1] for t in ts)
    return torch.cat([torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value) for t in ts])


def make_backend(name: str, model: Any, tokenizer: Any, rollout_config: Any, *,
                 share_prompt_prefix: bool = True) -> RolloutBackend:
    """The backend called ``name`` ('hf' or 'decode') configured from a RolloutConfig."""
    r = rollout_config
    kwargs = dict(max_new_tokens=r.max_new_tokens, temperature=r.temperature, top_p=r.top_p, top_k=r.top_k,
                  min_p=r.min_p, repetition_penalty=r.repetition_penalty,
                  generation_batch_size=r.generation_batch_size)
    if name == "hf":
        return HFGenerateBackend(model, tokenizer, share_prompt_prefix=share_prompt_prefix, **kwargs)
    if name == "decode":
        from spro.rollout.decode import DecodeBackend

        return DecodeBackend(model, tokenizer, **kwargs)
    raise ValueError(f"rollout.backend: unknown backend '{name}' (available: hf, decode)")
