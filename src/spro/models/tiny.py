"""A tiny causal LM for offline CPU work: a character tokenizer and a small Llama.

The tokenizer is a `tokenizers` BPE model with no merges over a character vocabulary (so every
character is one token), no pre-tokenizer and a ``Fuse`` decoder (tokens are concatenated back,
spaces included). It is wrapped as a ``PreTrainedTokenizerFast`` with ``<pad>``, ``<eos>`` and
``<unk>`` and a simple chat template; it adds no BOS token. Both round-trip through
``save_pretrained`` / ``AutoTokenizer.from_pretrained`` offline.

The model is a ``LlamaForCausalLM`` (a Llama config keeps ``AutoTokenizer`` on the saved
tokenizer class instead of mapping to a hub tokenizer), about 1M parameters by default.
"""

from __future__ import annotations

import string
from typing import Any

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, EOS, UNK)
# Digits and arithmetic symbols first (ids stable for the arithmetic task), then printable ASCII.
_CORE_CHARS = "0123456789+-*/=;:QA "
CHARS = _CORE_CHARS + "".join(
    c for c in string.ascii_letters + string.punctuation + "\n" if c not in _CORE_CHARS
)

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ message['role'] }}: {{ message['content'] }}\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}assistant: {% endif %}"
)


def build_char_tokenizer(chars: str = CHARS, *, model_max_length: int = 512) -> Any:
    """A character-level ``PreTrainedTokenizerFast``: ids 0-2 are <pad>, <eos>, <unk>, then ``chars``.

    Unknown characters map to <unk>. No BOS is added; ``eos_token`` and ``pad_token`` are set.
    """
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    if len(set(chars)) != len(chars):
        raise ValueError("chars: duplicate characters in the tokenizer alphabet")
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for c in chars:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=UNK))
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=model_max_length,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def build_tiny_model(
    tokenizer: Any,
    *,
    hidden_size: int = 128,
    num_layers: int = 4,
    num_heads: int = 4,
    intermediate_size: int = 512,
    max_position_embeddings: int = 256,
    tie_word_embeddings: bool = True,
    seed: int = 0,
) -> Any:
    """A randomly initialised ``LlamaForCausalLM`` sized for ``tokenizer`` (~1.05M params by default).

    The config's pad/eos (and bos = eos) ids come from the tokenizer; the generation config stops
    at eos and pads with pad.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    for knob, v in (("hidden_size", hidden_size), ("num_layers", num_layers), ("num_heads", num_heads),
                    ("intermediate_size", intermediate_size), ("max_position_embeddings", max_position_embeddings)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{knob} must be a positive int, got {v!r}")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("tokenizer must have pad_token and eos_token set")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=tie_word_embeddings,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    gc = model.generation_config
    gc.pad_token_id = tokenizer.pad_token_id
    gc.eos_token_id = tokenizer.eos_token_id
    gc.bos_token_id = tokenizer.eos_token_id
    return model


def count_parameters(model: Any) -> int:
    """Number of distinct parameters (tied weights counted once)."""
    return sum(p.numel() for p in model.parameters())
