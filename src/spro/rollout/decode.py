"""Sampling G responses per prompt with spro's own decode loop (the ``decode`` backend).

The loop is ``generate``'s sampling path written out over the model's forward: each prompt is
pre-filled once and its KV cache repeated G times (G copies pre-filled with
``model.share_prompt_prefix=false``), then each step feeds the last sampled token of
every response, filters the logits as ``generate`` does (temperature, then top-k, top-p, min-p) and
draws the next token by inverse transform sampling: one uniform number per response against the
cumulative distribution (:func:`sample_from_logits`), where ``generate``'s ``torch.multinomial`` draws
an exponential number per vocabulary entry (49,152 per response and step for SmolLM2, 8% of its
generation time on one core). On a CPU the linear layers multiply by packed weights
(:mod:`spro.models.packed`), re-packed at each call.

Same distribution as the ``hf`` backend, not the same tokens for a seed: tests/rollout/test_decode.py
checks that the log-probs the loop samples from equal those of the training forward on the sampled
tokens, and that the sampled tokens' frequencies match the model's distribution (a chi-square test).
The speed-up on SmolLM2-135M: benchmarks/roofline.py (``--backends``).
"""

from __future__ import annotations

from typing import Any

import torch

from spro.models.packed import packed_linears
from spro.rollout.batch import RolloutBatch
from spro.rollout.hf import HFGenerateBackend, _cache_kw, forward_params

__all__ = ["DecodeBackend", "filter_logits", "sample_from_logits"]


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  min_p: float = 0.0) -> torch.Tensor:
    """logits [B, V] -> float32 logits [B, V] with the tokens ``generate``'s warpers would drop set to -inf.

    Temperature divides; top-k keeps the k largest (ties at the k-th kept); top-p drops the tokens whose
    ascending cumulative probability is <= 1 - top_p; min-p drops tokens below min_p times the largest
    probability. Each keeps at least the most likely token, as transformers' warpers do.
    """
    x = logits.float() / temperature
    if top_k and top_k < x.shape[-1]:
        kth = torch.topk(x, top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1)  # ascending
        cum = sorted_x.softmax(-1).cumsum(-1)
        drop = cum <= 1 - top_p
        drop[:, -1] = False
        x = x.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    if min_p > 0.0:
        p = x.softmax(-1)
        x = x.masked_fill(p < min_p * p.max(-1, keepdim=True).values, float("-inf"))
    return x


def sample_from_logits(x: torch.Tensor, generator: torch.Generator | None = None, block: int = 256) -> torch.Tensor:
    """One token per row from softmax(x): x [B, V] float -> [B] long, by inverse transform sampling.

    u ~ U[0, 1) per row (float64); the token is the first index whose cumulative probability exceeds u times
    the total. Two levels, so that nothing costs more than a pass over the probabilities: the cumulative sums of
    the ``block``-token blocks' totals pick the block, the cumulative sum inside it the token (float64 sums of
    the float32 probabilities: the rounding is ~1e-16). Tokens of probability 0 (-inf) are never drawn.
    """
    B, V = x.shape
    nb = -(-V // block)
    p = torch.nn.functional.pad(torch.softmax(x.float(), dim=-1), (0, nb * block - V)).view(B, nb, block)
    c = p.sum(-1, dtype=torch.float64).cumsum(-1)  # [B, nb]
    if not bool(torch.isfinite(c[:, -1]).all() and (c[:, -1] > 0).all()):  # NaN logits, or all -inf
        bad = (~torch.isfinite(c[:, -1]) | (c[:, -1] <= 0)).nonzero().flatten().tolist()
        raise RuntimeError(f"rollout: the next-token distribution of response(s) {bad[:8]} is not a distribution "
                           "(NaN or infinite logits, or every token filtered out)")
    u = torch.rand(B, 1, dtype=torch.float64, device=x.device, generator=generator) * c[:, -1:]
    blk = torch.searchsorted(c, u, right=True).clamp_(max=nb - 1)  # [B, 1]
    before = torch.where(blk > 0, c.gather(1, (blk - 1).clamp(min=0)), torch.zeros_like(u))
    bp = p.gather(1, blk[:, :, None].expand(B, 1, block)).squeeze(1)  # [B, block]
    j = torch.searchsorted(bp.cumsum(-1, dtype=torch.float64), u - before, right=True)
    # rounding can put u - before at the block's end: the last token of positive probability in the block
    last = block - 1 - (bp > 0).flip(-1).int().argmax(-1, keepdim=True)
    return (blk * block + torch.minimum(j, last)).squeeze(-1)


class DecodeBackend(HFGenerateBackend):
    """G samples per prompt from spro's own decode loop over ``model``'s forward (see the module docstring).

    Same options as :class:`HFGenerateBackend` but ``repetition_penalty`` (not implemented: use the ``hf``
    backend). ``pack``: multiply by packed weights on a CPU where :func:`spro.models.packed.packable` finds
    layers (set False to compare), packed once per call (all its ``generation_batch_size`` chunks).
    """

    def __init__(self, model: Any, tokenizer: Any, *, pack: bool = True, **kwargs: Any) -> None:
        if kwargs.get("repetition_penalty", 1.0) != 1.0:
            raise ValueError("rollout.repetition_penalty is not implemented by rollout.backend=decode; use "
                             "rollout.backend=hf for it")
        super().__init__(model, tokenizer, **kwargs)
        self.pack = pack

    @torch.no_grad()
    def generate(self, prompts: list[str], num_generations: int) -> RolloutBatch:
        if not self.pack:
            return super().generate(prompts, num_generations)
        per_call = max(1, (self.generation_batch_size or len(prompts) * num_generations) // num_generations)
        with packed_linears(self.model, rows=min(per_call, len(prompts)) * num_generations):
            return super().generate(prompts, num_generations)

    def _sample(self, model: Any, ids: torch.Tensor, attn: torch.Tensor, G: int) -> torch.Tensor:
        """ids, attn [n, P] left padded -> sampled token ids [n*G, T], T <= max_new_tokens (pad after eos)."""
        eos_id, pad_id = self.tokenizer.eos_token_id, self.tokenizer.pad_token_id
        n, P = ids.shape
        T = self.max_new_tokens
        cache_kw = _cache_kw(model)
        keep = {"logits_to_keep": 1} if "logits_to_keep" in forward_params(model) else {}
        if not self.share_prompt_prefix:  # G copies of each prompt pre-filled (model.share_prompt_prefix=false)
            ids, attn, n, G = ids.repeat_interleave(G, 0), attn.repeat_interleave(G, 0), n * G, 1
        pos = (attn.cumsum(-1) - 1).clamp(min=0)
        out = model(input_ids=ids, attention_mask=attn, position_ids=pos, use_cache=True, **keep)
        cache = out.cache if hasattr(out, "cache") else out.past_key_values
        if G > 1:
            cache.batch_repeat_interleave(G)
        logits = out.logits[:, -1].repeat_interleave(G, 0)
        B = n * G
        mask = torch.ones(B, P + T, dtype=attn.dtype, device=ids.device)
        mask[:, :P] = attn.repeat_interleave(G, 0)
        next_pos = pos[:, -1].repeat_interleave(G, 0) + 1
        tokens = torch.full((B, T), pad_id, dtype=torch.long, device=ids.device)
        done = torch.zeros(B, dtype=torch.bool, device=ids.device)
        for t in range(T):
            x = filter_logits(logits, self.temperature, self.top_k, self.top_p, self.min_p)
            tok = sample_from_logits(x).masked_fill_(done, pad_id)
            tokens[:, t] = tok
            done |= tok == eos_id
            if t == T - 1 or bool(done.all()):
                return tokens[:, : t + 1]
            out = model(input_ids=tok[:, None], attention_mask=mask[:, : P + t + 1], position_ids=(next_pos + t)[:, None],
                        use_cache=True, **{cache_kw: cache})
            cache = out.cache if hasattr(out, "cache") else out.past_key_values
            logits = out.logits[:, -1]
        return tokens
