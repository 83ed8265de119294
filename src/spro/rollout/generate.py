"""Batched generation for evaluation: greedy or sampled completions of many prompts."""

from __future__ import annotations

from typing import Any, Sequence

from spro.data.prompts import render_prompt
from spro.models.precision import autocast_scope
from spro.rollout.hf import neutral_generation_kwargs

__all__ = ["generate_completions"]


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    *,
    max_new_tokens: int = 96,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    batch_size: int = 64,
    seed: int | None = None,
    progress: Any = None,
) -> tuple[list[list[str]], list[list[int]], list[list[bool]]]:
    """Generate for each prompt ``num_return_sequences`` completions.

    Only these settings decide the tokens: none comes from the model's generation_config.json (its repetition
    penalty, top-k, ...), as in training's rollouts. Prompts are rendered with
    :func:`spro.data.prompts.render_prompt` and left-padded in batches of ``batch_size`` prompts. Returns ``(texts, lengths, truncated)``, each a list (one per prompt) of
    lists (one per sequence): decoded text without special tokens, number of generated tokens
    before eos, and whether generation hit ``max_new_tokens`` without eos.
    ``progress``: optional callable(n_prompts_done) called after each batch.
    """
    import torch

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_return_sequences < 1:
        raise ValueError(f"num_return_sequences (k) must be >= 1, got {num_return_sequences}")
    if do_sample and not (temperature > 0):
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    if not (0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    texts = [render_prompt(tokenizer, p) for p in prompts]
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    out_text: list[list[str]] = []
    out_len: list[list[int]] = []
    out_trunc: list[list[bool]] = []
    gen_kwargs: dict[str, Any] = dict(
        **neutral_generation_kwargs(),  # nothing from the model's generation_config.json
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        num_return_sequences=num_return_sequences,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
    )
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    device = next(model.parameters()).device
    try:
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad(), autocast_scope(model):  # bf16: weights cast once per batch
                seqs = model.generate(**enc, **gen_kwargs)
            gen = seqs[:, enc["input_ids"].shape[1] :]
            for i in range(len(chunk)):
                row_t, row_l, row_tr = [], [], []
                for j in range(num_return_sequences):
                    ids = gen[i * num_return_sequences + j].tolist()
                    n = ids.index(eos_id) if eos_id in ids else len(ids)
                    # Tokens after eos are padding; a response without eos is truncated.
                    row_t.append(tokenizer.decode(ids[:n], skip_special_tokens=True))
                    row_l.append(n)
                    row_tr.append(eos_id not in ids)
                out_text.append(row_t)
                out_len.append(row_l)
                out_trunc.append(row_tr)
            if progress is not None:
                progress(min(start + batch_size, len(texts)))
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return out_text, out_len, out_trunc
