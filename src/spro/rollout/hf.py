"""Sampling G responses per prompt with ``transformers``' ``generate`` (the ``hf`` backend)."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch

from spro.models.precision import autocast_scope
from spro.rollout.batch import RolloutBatch, completion_mask_from_ids

__all__ = ["RolloutBackend", "HFGenerateBackend", "make_backend", "neutral_generation_kwargs"]


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
        self.min_p = min_p or 0.0
        self.repetition_penalty = repetition_penalty
        self.generation_batch_size = generation_batch_size
        _warn_ignored_generation_config(model, self._sampling())

    def _sampling(self) -> dict[str, Any]:
        """Every setting of ``generate`` that changes which tokens are drawn, explicitly: the rollout's own, and
        the neutral value of each other one, so that nothing comes from the model's ``generation_config.json``
        (``generate`` fills each setting not passed from it, e.g. Qwen2.5-Instruct's top_k=20 and
        repetition_penalty=1.05); the log-prob passes score the tokens under the policy's own distribution."""
        own = dict(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                   min_p=self.min_p or None, repetition_penalty=self.repetition_penalty)
        return {**neutral_generation_kwargs(), **own}

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
            max_new_tokens=self.max_new_tokens, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id,
            use_cache=True, **self._sampling(),
        )
        P = ids.shape[1]
        if self.share_prompt_prefix and P >= 2:
            cache = _prefill(model, ids, attn, G)
            out = model.generate(input_ids=ids.repeat_interleave(G, 0), attention_mask=attn.repeat_interleave(G, 0),
                                 **{_cache_kw(model): cache}, **kwargs)
        else:
            out = model.generate(input_ids=ids, attention_mask=attn, num_return_sequences=G, **kwargs)
        return out[:, P:]


# generate's settings that change the drawn tokens or where a response stops, at the values that leave them off
# (those this transformers' GenerationConfig lacks are not passed)
_NEUTRAL_GENERATION: dict[str, Any] = dict(
    num_beams=1, penalty_alpha=None, guidance_scale=None, sequence_bias=None, no_repeat_ngram_size=0,
    bad_words_ids=None, min_length=0, min_new_tokens=None, forced_bos_token_id=None, forced_eos_token_id=None,
    remove_invalid_values=False, exponential_decay_length_penalty=None, suppress_tokens=None,
    begin_suppress_tokens=None, top_h=None, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0,
    watermarking_config=None, renormalize_logits=False, max_time=None, stop_strings=None,
    prompt_lookup_num_tokens=None, repetition_penalty=1.0, min_p=None,
)


def neutral_generation_kwargs() -> dict[str, Any]:
    """``generate`` keyword arguments that switch off every setting that changes the drawn tokens or where a
    response stops (repetition penalty, min-p, typical-p, n-gram blocking, suppressed tokens, ...), each of which
    ``generate`` would otherwise take from the model's generation_config.json."""
    from transformers import GenerationConfig

    known = GenerationConfig().to_dict()
    return {k: v for k, v in _NEUTRAL_GENERATION.items() if k in known}


def _warn_ignored_generation_config(model: Any, used: dict[str, Any]) -> None:
    """One warning naming the sampling settings of the model's ``generation_config.json`` that the rollout does not
    use (the rollout's settings decide; this says which rollout.* key would take them over)."""
    import warnings

    gc = getattr(getattr(model, "module", model), "generation_config", None)
    if gc is None:
        return
    from transformers import GenerationConfig

    base = GenerationConfig().to_dict()
    mine = gc.to_dict()
    differ = {k: mine[k] for k in used
              if k in mine and k != "do_sample" and mine[k] != base.get(k) and mine[k] != used[k]}
    if differ:
        keys = {"temperature", "top_p", "top_k", "min_p", "repetition_penalty"}
        how = ", ".join(f"rollout.{k}={v}" for k, v in differ.items() if k in keys)
        warnings.warn(
            "the model's generation_config sets " + ", ".join(f"{k}={v!r}" for k, v in differ.items())
            + "; rollouts sample with the rollout's settings only (" + ", ".join(f"{k}={used[k]!r}" for k in differ)
            + ")" + (f"; to sample as the model's file says, set {how}" if how else ""), stacklevel=3)


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
    keep = {"logits_to_keep": 1} if "logits_to_keep" in forward_params(model) else {}
    out = model(input_ids=ids[:, :-1], attention_mask=attn[:, :-1], position_ids=pos[:, :-1], use_cache=True, **keep)
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

        return DecodeBackend(model, tokenizer, share_prompt_prefix=share_prompt_prefix, **kwargs)
    raise ValueError(f"rollout.backend: unknown backend '{name}' (available: hf, decode)")
