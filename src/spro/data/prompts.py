"""Turning a dataset prompt into the text the model sees.

A prompt is either a plain string or a list of chat messages ``[{"role": ..., "content": ...}, ...]``.
Chat messages are always rendered with the tokenizer's chat template and a generation prompt. A string
is used verbatim, or, with ``chat_template=True``, sent as one user message through the template
(``data.chat_template``; :func:`resolve_chat_template` decides ``auto``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

__all__ = ["render_prompt", "resolve_chat_template", "names_chat_model", "warm_start_rendering", "CHAT_MODES"]

CHAT_MODES = ("auto", "on", "off")
# how instruction-tuned releases are named: ...-Instruct, ...-chat, gemma-2-2b-it, ...
_CHAT_NAME = re.compile(r"instruct|chat|(?:^|[-_.])it(?:$|[-_.])", re.IGNORECASE)


def render_prompt(tokenizer: Any, prompt: Any, *, chat_template: bool = False) -> str:
    """Return the prompt text to tokenize: chat messages through the template; a string as is, or with
    ``chat_template`` as the one user message of a chat through the template."""
    if isinstance(prompt, str):
        if not chat_template:
            return prompt
        prompt = [{"role": "user", "content": prompt}]
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


def names_chat_model(*names: str | None) -> str | None:
    """The first of ``names`` (model paths / file names, their last part is looked at) that names an
    instruction-tuned model (``instruct``, ``chat`` or ``it`` as a word: ``SmolLM2-135M-Instruct``,
    ``Llama-2-7b-chat``, ``gemma-2-2b-it``), else None."""
    for name in names:
        if name and _CHAT_NAME.search(Path(str(name).rstrip("/")).name):
            return Path(str(name).rstrip("/")).name
    return None


# the files in which spro records how string prompts are rendered for a model it saved ("chat_template_applied"):
# spro sft's folder, each checkpoint of spro train, and (PROMPTS_RECORD) what spro export writes from a source with a
# record and the start model that spro.train saves from a model object
PROMPTS_RECORD = "spro_prompts.json"
RECORDS = {"sft_config.json": "spro sft trained it so", "trainer_state.json": "spro train trained it so",
           PROMPTS_RECORD: "recorded from the model it was saved from"}


def warm_start_rendering(*names: str | None) -> tuple[bool, str] | None:
    """How spro rendered string prompts for the model in the first of ``names`` that is a folder it saved
    (``spro sft``'s output, a ``spro train`` checkpoint, ``spro export``'s output, ``spro.train``'s start model:
    their ``sft_config.json`` / ``trainer_state.json`` / ``spro_prompts.json`` record ``chat_template_applied``):
    ``(applied, "for 'FOLDER' (spro sft trained it so)")``; None if none is."""
    import json

    for name in names:
        for record, who in RECORDS.items():
            path = Path(str(name)) / record if name else None
            if path is None or not path.is_file():
                continue
            try:
                applied = json.loads(path.read_text(encoding="utf-8")).get("chat_template_applied")
            except (OSError, ValueError):
                continue
            if isinstance(applied, bool):
                return applied, f"for {str(name)!r} ({who})"
    return None


def resolve_chat_template(mode: Any, tokenizer: Any, *names: str | None, key: str = "data.chat_template"
                          ) -> tuple[bool, str]:
    """``(apply the chat template to string prompts, why)`` for ``data.chat_template`` = ``mode``.

    ``on``: yes (an error when the tokenizer has no chat template); ``off``: no; ``auto``: as spro trained the
    model when ``names`` holds a folder it saved (:func:`warm_start_rendering`: a ``spro sft`` warm start or a
    ``spro train`` checkpoint trained on templated prompts is trained and evaluated on them, one trained on
    plain prompts on plain ones), else yes when the tokenizer has a chat template *and* the model's name (``names``:
    ``model.name_or_path``, ``model.gguf_file``) says it is an instruct/chat model (:func:`names_chat_model`),
    no otherwise (a base model's tokenizer often carries a template too, so the template alone does not
    decide). YAML's ``true``/``false`` stand for on/off. Prompts given as chat messages always use the template.
    ``key``: the setting's name in the caller's messages (``chat_template=`` of spro sft, ``--chat-template``).
    """
    from spro.options import ConfigError

    mode = {True: "on", False: "off"}.get(mode, mode) if isinstance(mode, bool) else mode
    if mode not in CHAT_MODES:
        raise ConfigError(f"{key}: expected auto, on or off, got {mode!r}")
    has = getattr(tokenizer, "chat_template", None) is not None
    if mode == "on":
        if not has:
            where = "model.tokenizer one" if key == "data.chat_template" else "the model a tokenizer"
            raise ConfigError(f"{key}=on: the model's tokenizer has no chat template; set {key}=off (or auto), "
                              f"or give {where} with a template")
        return True, f"{key}=on"
    if mode == "off":
        return False, f"{key}=off"
    warm = warm_start_rendering(*names)
    if warm is not None and (has or not warm[0]):
        how = "through the chat template" if warm[0] else "as they are"
        return warm[0], f"{key}=auto: prompts {how} {warm[1]}"
    chat_name = names_chat_model(*names)
    if has and chat_name:
        return True, f"{key}=auto: the tokenizer has a chat template and {chat_name!r} names a chat model"
    why = "the tokenizer has no chat template" if not has else "the model's name does not say instruct, chat or it"
    if warm is not None:  # recorded through a template this tokenizer does not have
        why = f"prompts through a chat template {warm[1]}, and this tokenizer has none"
    return False, f"{key}=auto: {why}; {key}=on applies it"
