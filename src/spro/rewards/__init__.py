"""Reward functions and their registry.

A reward function follows TRL's convention and is called as TRL's ``GRPOTrainer`` calls it, by keyword::

    fn(prompts=..., completions=..., completion_ids=..., trainer_state=..., **columns) -> list[float | None]

``columns`` are the dataset's other columns, one list per column, aligned with ``completions``
(e.g. ``answer=[...]``, ``tests=[...]``, ``data_source=[...]``); for conversational prompts each
completion is ``[{"role": "assistant", "content": TEXT}]``, else its text. A function takes
``**kwargs`` or names what it reads; one whose parameters are not named so (``fn(p, c, **kw)``) is
called positionally, ``fn(prompts, completions, **columns)`` with text completions. The rule and the
signature check (run before any model loads): :mod:`spro.rewards.trl_style`.

**None rule.** A reward of ``None`` means "this row cannot be scored" (no ground truth, an
unreadable test specification, ...). It is never turned into a number here: it is passed on,
and the trainer/evaluator counts such rows (and leaves them out of the mean). A completion that
*can* be judged but fails (wrong answer, crashing program, grader time-out) gets ``0.0``.
:func:`combine_values` (used by :func:`combine_rewards` and by the trainer's
``spro.rewards.scoring.Scorer``) propagates ``None``: if any component is ``None`` for a row, the
combined reward of that row is ``None``.

``RewardFn`` is the type of such a function (a callable); ``spro.rewards.scoring.WeightedReward``
pairs one with its name and weight.

Functions are looked up by registered name (``"math"``, ``"code"``, ``"format"``, ``"eurus"``,
``"arithmetic"``, ...; see :func:`list_rewards`) or by import path ``"package.module:function"``.
Counters of notable events (grader time-outs, sandbox failures, rows without ground truth) are
kept process-wide; read and reset them with :func:`pop_reward_stats` to log them as metrics.

**Limits.** Every reward call is bounded (``spro.rewards.scoring.Scorer``, ``data.reward_timeout``
seconds per call). A function that bounds its own cost (:func:`limits_itself`: spro's math, code,
eurus, format and arithmetic rewards) runs in the caller's process, each of its rows within its own
limit, and stops grading when the call's budget (:func:`reward_budget`, read with
:func:`budget_left`) is spent: the rows it did not grade get None and are counted
(``<reward>/batch_budget``). Any other function runs in a worker process that is killed at the
budget.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import math as _math
import threading
import time
from collections import Counter
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

__all__ = [
    "RewardError",
    "RewardFn",
    "register_reward",
    "get_reward",
    "list_rewards",
    "combine_rewards",
    "combine_values",
    "call_reward",
    "pop_reward_stats",
    "count_event",
    "limits_itself",
    "reward_budget",
    "budget_left",
]

RewardFn = Callable[..., list]


def completion_text(completion: Any) -> str:
    """A completion as text: a string as it is, TRL's conversational form (a list of chat messages: the last
    one's content, or a single message dict) as its content, None as "". Anything else raises ValueError."""
    if isinstance(completion, str):
        return completion
    if completion is None:
        return ""
    if isinstance(completion, (list, tuple)) and completion and isinstance(completion[-1], dict):
        return str(completion[-1].get("content", ""))
    if isinstance(completion, dict) and "content" in completion:
        return str(completion["content"])
    raise ValueError(f"completion must be a string or a list of chat messages, got {type(completion).__name__}")


class RewardError(ValueError):
    """A reward function raised, or returned something other than one float/None per row."""


_REGISTRY: dict[str, RewardFn] = {}
# Builtins that live in modules imported only when first asked for (keeps `import spro.rewards`
# light and avoids import cycles with the task modules).
_LAZY: dict[str, str] = {
    "arithmetic": "spro.data.tasks.arithmetic:arithmetic_reward",
    "math": "spro.rewards.math:math_reward",
    "code": "spro.rewards.code:code_reward",
    "format": "spro.rewards.format:format_reward",
    "eurus": "spro.rewards.code:eurus_reward",
    "reasoning_gym": "spro.data.reasoning_gym:reasoning_gym_reward",
}

_STATS_LOCK = threading.Lock()
_STATS: Counter = Counter()


def count_event(name: str, n: int = 1) -> None:
    """Add ``n`` to the process-wide counter ``name`` (e.g. ``"math/timeout"``)."""
    with _STATS_LOCK:
        _STATS[name] += n


def pop_reward_stats() -> dict[str, int]:
    """Return the counters collected since the last call and reset them."""
    with _STATS_LOCK:
        out = dict(_STATS)
        _STATS.clear()
    return out


_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("spro_reward_deadline", default=None)


def limits_itself(fn: RewardFn) -> RewardFn:
    """Mark ``fn`` as a reward that bounds its own cost: each row within a limit of its own, and no row started
    once :func:`budget_left` is spent (the Scorer then calls it in this process, not in a worker)."""
    fn.spro_limits_itself = True  # type: ignore[attr-defined]
    return fn


@contextlib.contextmanager
def reward_budget(seconds: float | None) -> Iterator[None]:
    """Within this block, the reward functions marked :func:`limits_itself` grade for at most ``seconds`` from now
    (None: no budget; <= 0: spent); see :func:`budget_left`."""
    token = _DEADLINE.set(None if seconds is None else time.monotonic() + seconds)
    try:
        yield
    finally:
        _DEADLINE.reset(token)


def budget_left() -> float | None:
    """Seconds left of the current call's :func:`reward_budget` (<= 0: spent; None: no budget). Read it in the
    calling thread (a thread pool does not inherit it): pass the deadline on to worker threads."""
    deadline = _DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def register_reward(name: str) -> Callable[[RewardFn], RewardFn]:
    """Decorator: make ``fn`` available to :func:`get_reward` as ``name``.

    Re-registering a name replaces the earlier function (last one wins).
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"reward name must be a non-empty string, got {name!r}")

    def deco(fn: RewardFn) -> RewardFn:
        if not callable(fn):
            raise TypeError(f"register_reward({name!r}) expects a callable, got {type(fn).__name__}")
        _REGISTRY[name] = fn
        _LAZY.pop(name, None)
        return fn

    return deco


def list_rewards() -> list[str]:
    """Names :func:`get_reward` accepts (registered plus lazily imported builtins), sorted."""
    return sorted(set(_REGISTRY) | set(_LAZY))


def _import_path(spec: str) -> RewardFn:
    from spro.imports import import_object

    obj = import_object(spec, f"reward {spec!r}")
    if not callable(obj):
        raise ValueError(f"reward {spec!r} is not callable ({type(obj).__name__})")
    return obj


def get_reward(spec: str | RewardFn) -> RewardFn:
    """Return the reward function for a registered name or a ``"module:function"`` path.

    A callable is returned unchanged. An unknown name raises ``ValueError`` listing the known
    names and the closest match.
    """
    if callable(spec):
        return spec
    if not isinstance(spec, str):
        raise ValueError(f"reward spec must be a name, 'module:function' or a callable, got {spec!r}")
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    if spec in _LAZY:
        fn = _import_path(_LAZY[spec])
        return fn
    if ":" in spec:
        return _import_path(spec)
    names = list_rewards()
    close = difflib.get_close_matches(spec, names, n=1, cutoff=0.5)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise ValueError(
        f"unknown reward {spec!r}.{hint} Known rewards: {', '.join(names)}; "
        "or give an import path 'package.module:function'."
    )


def _fn_name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def call_reward(fn: RewardFn, prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float | None]:
    """Call ``fn`` as TRL does (``spro.rewards.trl_style.invoke_reward``: by keyword, completions as chat
    messages for conversational prompts; spro's positional ``fn(prompts, completions, **columns)`` for a
    function whose parameters are not named so) and check what it returns: one
    ``float``/``int``/``bool``/``None`` per row.

    Returns floats (``None`` kept). Raises :class:`RewardError` naming the function (and the row
    index for a bad value) if it raises, returns a non-sequence, the wrong count, a non-number or
    NaN.
    """
    from spro.rewards.trl_style import RewardSignatureError, invoke_reward, is_conversational

    n = len(completions)
    name = _fn_name(fn)
    try:
        out = invoke_reward(fn, prompts, completions, columns)
    except (RewardError, RewardSignatureError):
        raise
    except Exception as e:
        hint = ""
        if prompts and is_conversational(prompts[0]) and isinstance(e, (TypeError, AttributeError)):
            hint = (" (the prompts are chat messages, so each completion is [{'role': 'assistant', 'content': TEXT}], "
                    "as in TRL; read completion[0]['content'], or spro.rewards.completion_text(completion))")
        raise RewardError(f"reward function {name} raised {type(e).__name__}: {e}{hint}") from e
    if isinstance(out, (str, bytes)) or not isinstance(out, Iterable):
        raise RewardError(f"reward function {name} returned {type(out).__name__}, expected a list of {n} floats")
    out = list(out)
    if len(out) != n:
        raise RewardError(f"reward function {name} returned {len(out)} values for {n} completions")
    res: list[float | None] = []
    for i, v in enumerate(out):
        if v is None:
            res.append(None)
            continue
        if isinstance(v, bool):
            v = float(v)
        try:
            f = float(v)
        except (TypeError, ValueError):
            raise RewardError(
                f"reward function {name} returned {type(v).__name__} {v!r} for row {i}; expected float or None"
            ) from None
        if _math.isnan(f):
            raise RewardError(f"reward function {name} returned NaN for row {i}")
        res.append(f)
    return res


def combine_values(values: Sequence[Sequence[float | None]], weights: Sequence[float]) -> list[float | None]:
    """The one rule for combining reward values (``combine_rewards`` and the trainer's ``Scorer``), TRL's
    (``GRPOTrainer`` sums the weighted values with ``nansum``): ``None`` means "not applicable to this row"
    (a math reward on a code row), so row ``i`` gets ``sum_k weights[k] * values[k][i]`` over the functions
    that gave a value, and ``None`` when none did. A ``None`` is never turned into 0: a row no function
    could judge stays ``None`` (the Scorer counts it in ``reward/none_frac`` and warns)."""
    if len(values) != len(weights):
        raise ValueError(f"combine_values: {len(values)} value lists but {len(weights)} weights")
    n = len(values[0]) if values else 0
    total: list[float | None] = [None] * n
    for vals, w in zip(values, weights):
        if len(vals) != n:
            raise ValueError(f"combine_values: value lists of different lengths ({n} and {len(vals)})")
        for i, v in enumerate(vals):
            if v is not None:
                total[i] = (total[i] or 0.0) + w * v
    return total


def combine_rewards(
    specs_with_weights: Mapping[str | RewardFn, float] | Sequence[tuple[str | RewardFn, float]],
) -> RewardFn:
    """One reward function that returns the weighted sum of several.

    ``specs_with_weights`` is a mapping or a list of ``(spec, weight)`` pairs; each spec goes
    through :func:`get_reward`. Every component is checked with :func:`call_reward`. Values combine
    by :func:`combine_values`: ``None`` components are left out of the sum, and a row is ``None`` only
    when every component gave ``None``.
    """
    items = list(specs_with_weights.items()) if isinstance(specs_with_weights, Mapping) else list(specs_with_weights)
    if not items:
        raise ValueError("combine_rewards needs at least one (reward, weight) pair")
    fns: list[tuple[RewardFn, float]] = []
    for pair in items:
        try:
            spec, w = pair
        except (TypeError, ValueError):
            raise ValueError(f"combine_rewards expects (reward, weight) pairs, got {pair!r}") from None
        fns.append((get_reward(spec), float(w)))

    def combined(prompts: Sequence[Any], completions: Sequence[str], **columns: Any) -> list[float | None]:
        return combine_values([call_reward(fn, prompts, completions, **columns) for fn, _ in fns],
                              [w for _, w in fns])

    combined.__name__ = combined.__qualname__ = "combined(" + ", ".join(
        f"{w:g}*{_fn_name(f)}" for f, w in fns) + ")"
    return combined
