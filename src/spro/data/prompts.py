"""Turning a dataset prompt into the text the model sees.

A prompt is either a plain string (used verbatim, as for the built-in arithmetic task) or a
list of chat messages ``[{"role": ..., "content": ...}, ...]`` rendered with the tokenizer's
chat template and a generation prompt.
"""

from __future__ import annotations

from typing import Any


def render_prompt(tokenizer: Any, prompt: Any) -> str:
    """Return the prompt text to tokenize: a string as is, chat messages through the template."""
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, (list, tuple)) and all(
        isinstance(m, dict) and "role" in m and "content" in m for m in prompt
    ):
        if getattr(tokenizer, "chat_template", None) is None:
            raise ValueError(
                "prompt is a list of chat messages but the tokenizer has no chat_template; "
                "give plain-string prompts or a tokenizer with a chat template"
            )
        return tokenizer.apply_chat_template(list(prompt), tokenize=False, add_generation_prompt=True)
    raise ValueError(
        f"prompt must be a string or a list of {{'role', 'content'}} messages, got {type(prompt).__name__}"
    )
