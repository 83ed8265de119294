"""Format reward and length penalty.

:func:`make_format_reward` builds ``fn(prompts, completions, **kw) -> list[float]`` that gives
``reward`` when the completion matches a regular expression (``re.search``, DOTALL) and
``0.0`` otherwise, optionally minus a length penalty. Without a pattern (the registered
``"format"`` reward) it checks for a closed, non-empty ``\\boxed{...}``: braces matched as
:func:`spro.rewards.math.extract_boxed` matches them, content not only white space
(``\\boxed{5`` and ``\\boxed{ }`` score 0).

Length penalty (``length_penalty=c``, ``max_length=L``, lengths in characters, or in tokens
when a ``tokenizer`` is given): ``- c * min(len, L) / L``, so 0 for an empty completion and
``-c`` at or past ``L``. :func:`make_length_penalty` gives the penalty alone as a reward
function, to be mixed with others through :func:`spro.rewards.combine_rewards`.
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from spro.rewards import completion_text, limits_itself, register_reward

__all__ = ["make_format_reward", "make_length_penalty", "format_reward", "BOXED_PATTERN", "TAG_PATTERN"]

BOXED_PATTERN = r"\\boxed\s*\{\s*[^\s}]"
"""A ``\\boxed{`` whose content starts with something other than white space or ``}`` (an
opening only: the default format reward also requires the box to be closed)."""
TAG_PATTERN = r"<answer>.+?</answer>"
"""An ``<answer>...</answer>`` tag pair with content."""


def _lengths(completions: Sequence[Any], tokenizer: Any) -> list[int]:
    texts = [completion_text(c) for c in completions]
    if tokenizer is None:
        return [len(t) for t in texts]
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def make_length_penalty(coef: float, max_length: int, *, tokenizer: Any = None):
    """Reward function ``-coef * min(len, max_length) / max_length`` per completion."""
    if max_length <= 0:
        raise ValueError(f"max_length must be positive, got {max_length}")
    if coef < 0:
        raise ValueError(f"length penalty coefficient must be >= 0, got {coef}")

    @limits_itself
    def length_penalty(prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float]:
        return [-coef * min(n, max_length) / max_length for n in _lengths(completions, tokenizer)]

    return length_penalty


def _closed_box(text: str) -> bool:
    """A ``\\boxed{...}`` with its closing brace and non-blank content (linear time)."""
    from spro.rewards.math import _BOX_RE, _closing_braces

    matches = list(_BOX_RE.finditer(text))
    if not matches:
        return False
    close = _closing_braces(text, matches[0].end() - 1)
    for m in matches:
        j = close.get(m.end() - 1)
        if j is not None and text[m.end():j].strip():
            return True
    return False


def make_format_reward(
    pattern: str | None = None,
    *,
    reward: float = 1.0,
    length_penalty: float = 0.0,
    max_length: int = 1024,
    tokenizer: Any = None,
    flags: int = re.DOTALL,
):
    """Reward ``reward`` if ``re.search(pattern, completion)`` (``pattern=None``: a closed,
    non-empty ``\\boxed{...}``) else 0.0, minus the optional length penalty (``length_penalty`` *
    min(len, max_length) / max_length)."""
    match = _closed_box if pattern is None else re.compile(pattern, flags).search
    pen = make_length_penalty(length_penalty, max_length, tokenizer=tokenizer) if length_penalty else None

    def format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float]:
        out = [reward if match(completion_text(c)) else 0.0 for c in completions]
        if pen is not None:
            out = [a + b for a, b in zip(out, pen(prompts, completions))]
        return out

    # the closed-box check is linear in the completion; a pattern of your own may not be (it runs in the
    # Scorer's killable worker process)
    return limits_itself(format_reward) if pattern is None else format_reward


_default_format = make_format_reward()


@register_reward("format")
@limits_itself
def format_reward(prompts: Sequence[Any], completions: Sequence[Any], **kw: Any) -> list[float]:
    """1.0 if the completion contains a closed, non-empty ``\\boxed{...}``, else 0.0."""
    return _default_format(prompts, completions, **kw)
