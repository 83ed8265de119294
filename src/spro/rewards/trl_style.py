"""Calling reward functions the way TRL's ``GRPOTrainer`` calls them.

TRL (``GRPOTrainer._calculate_rewards``) calls every reward function by keyword::

    fn(prompts=..., completions=..., completion_ids=..., trainer_state=..., **columns)

* ``prompts``: the dataset's prompts, one per completion (a string, or a list of chat messages);
* ``completions``: for conversational prompts (lists of ``{"role", "content"}`` messages) each completion
  is a list of one message, ``[{"role": "assistant", "content": TEXT}]``; for string prompts, the text;
* ``completion_ids``: each completion's token ids (up to and including its end-of-sequence token);
* ``trainer_state``: a ``transformers.TrainerState`` (``global_step``, ``max_steps``, ``epoch``);
* ``**columns``: every other column of the dataset, one list each, aligned with ``completions``.

A value of ``None`` means "not applicable to this row" (TRL's rule, and spro's).

Which call a function gets is decided by its signature (:func:`reward_style`):

* ``"keyword"``: it has a parameter named ``completions`` or ``completion_ids`` (or takes only
  ``**kwargs``): TRL's call above. spro's own signature ``fn(prompts, completions, **columns)`` is one
  of these, and spro's built-in rewards accept both forms of a completion
  (:func:`spro.rewards.completion_text`).
* ``"positional"``: none of those names, two or more positional parameters (``fn(p, c, **kw)``, spro's
  earlier positional call): called ``fn(prompts, completions, **columns)`` with completions as text.

A function without ``**kwargs`` gets only the keywords it names (a column it does not name is not
passed). :func:`check_reward_signature` runs before any model loads and raises naming the function and
what is wrong; :func:`check_reward_columns` checks, once the dataset is loaded, that every parameter a
function needs is a column or one of TRL's keywords.

The trainer hands ``completion_ids`` and ``trainer_state`` to :func:`invoke_reward` inside ``columns``
(the :data:`PASSED_IN_COLUMNS` keys; ``trainer_state`` as a list with one entry per row, so that the
columns can be cut row by row); functions that do not take them never see them. TRL's ``log_extra``,
``log_metric`` and ``environments`` keywords are not provided.
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any, Callable, Sequence

if TYPE_CHECKING:
    from spro.schema import DataConfig

__all__ = ["TRL_KEYWORDS", "PASSED_IN_COLUMNS", "RewardSignatureError", "reward_style", "check_reward_signature",
           "check_reward_columns", "is_conversational", "as_trl_completions", "invoke_reward", "trainer_state"]

# the keywords TRL gives every reward function besides the dataset's columns
TRL_KEYWORDS = ("prompts", "completions", "completion_ids", "trainer_state")
# keys of the trainer's ``columns`` that are not dataset columns but TRL's keywords
PASSED_IN_COLUMNS = ("completion_ids", "trainer_state")
# TRL keywords spro does not provide (a function that requires one cannot be called)
_NOT_PROVIDED = ("log_extra", "log_metric", "environments")


class RewardSignatureError(TypeError):
    """A reward function that cannot be called with TRL's keywords nor with spro's positional call."""


def _name(fn: Any) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__name__


def _where(fn: Any) -> str:
    mod = getattr(fn, "__module__", None) or getattr(type(fn), "__module__", None)
    return f"{mod}:{_name(fn)}" if mod else _name(fn)


def _params(fn: Any) -> list[inspect.Parameter] | None:
    try:
        return list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # builtins without a signature: call them positionally
        return None


def reward_style(fn: Callable[..., Any]) -> str:
    """``"keyword"`` (TRL's call) or ``"positional"`` (``fn(prompts, completions, **columns)``), by the
    rule of the module docstring. Raises :class:`RewardSignatureError` (see :func:`check_reward_signature`)."""
    return check_reward_signature(fn)


def check_reward_signature(fn: Callable[..., Any]) -> str:
    """Check that ``fn`` can be called as a reward function and return its style (``"keyword"`` or
    ``"positional"``); raise :class:`RewardSignatureError` naming the function and what is wrong.

    Checked: it is callable; a keyword function names ``completions`` or ``completion_ids`` (or takes
    ``**kwargs``), has no positional-only parameter without a default, and requires none of TRL's
    ``log_extra`` / ``log_metric`` / ``environments`` (spro does not provide them); a positional function
    takes two positional arguments. Dataset columns a function names are checked later
    (:func:`check_reward_columns`), once the data is loaded.
    """
    if not callable(fn):
        raise RewardSignatureError(f"reward function {fn!r} is not callable ({type(fn).__name__})")
    params = _params(fn)
    if params is None:
        return "positional"
    kinds = inspect.Parameter
    named = {p.name: p for p in params if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)}
    var_kw = any(p.kind is kinds.VAR_KEYWORD for p in params)
    var_pos = any(p.kind is kinds.VAR_POSITIONAL for p in params)
    positional = [p for p in params if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)]
    required_pos_only = [p.name for p in params if p.kind is kinds.POSITIONAL_ONLY and p.default is p.empty]
    what = f"reward function {_where(fn)}{inspect.signature(fn)}"
    all_names = {p.name for p in params}
    if "completions" in all_names or "completion_ids" in all_names or (var_kw and not positional and not var_pos):
        if required_pos_only:
            raise RewardSignatureError(
                f"{what}: parameter(s) {', '.join(required_pos_only)} are positional-only; reward functions are called "
                "by keyword as TRL does (prompts=, completions=, completion_ids=, trainer_state=, and the dataset's "
                "columns); remove the '/' from its signature")
        missing = [n for n in _NOT_PROVIDED if n in named and named[n].default is named[n].empty]
        if missing:
            raise RewardSignatureError(
                f"{what}: it requires {', '.join(missing)}, a keyword of TRL's GRPOTrainer that spro does not provide; "
                f"give it a default (e.g. {missing[0]}=None) or read it from **kwargs")
        return "keyword"
    if var_pos or len(positional) >= 2:
        required = [p.name for p in positional[2:] if p.default is p.empty]
        if required and not var_kw:
            raise RewardSignatureError(
                f"{what}: called as fn(prompts, completions, **columns), its parameter(s) {', '.join(required)} would "
                "be missing; name its parameters prompts, completions and the dataset columns it reads (TRL's "
                "convention, called by keyword), e.g. def reward(completions, answer, **kwargs)")
        return "positional"
    raise RewardSignatureError(
        f"{what}: a reward function takes TRL's keywords (def reward(completions, **kwargs), with prompts, "
        "completion_ids, trainer_state and the dataset's columns as further keywords) or spro's positional pair "
        "(prompts, completions); this one takes neither. It must return one float (or None: not applicable) per "
        "completion")


def check_reward_columns(fn: Callable[..., Any], columns: Sequence[str], *, name: str | None = None) -> None:
    """Raise :class:`RewardSignatureError` when ``fn`` requires a keyword that is neither one of TRL's
    keywords nor one of the dataset's ``columns`` (so every call would fail)."""
    params = _params(fn)
    if params is None or check_reward_signature(fn) != "keyword":
        return
    kinds = inspect.Parameter
    given = set(TRL_KEYWORDS) | set(columns)
    missing = [p.name for p in params if p.kind in (kinds.POSITIONAL_OR_KEYWORD, kinds.KEYWORD_ONLY)
               and p.default is p.empty and p.name not in given]
    if missing:
        cols = ", ".join(c for c in columns if c not in PASSED_IN_COLUMNS) or "none"
        raise RewardSignatureError(
            f"reward function {name or _where(fn)}: it requires {', '.join(repr(m) for m in missing)}, which is not a "
            f"column of the dataset (its columns besides 'prompt': {cols}) nor one of TRL's keywords "
            f"({', '.join(TRL_KEYWORDS)}); rename the column (data.column_map) or give the parameter a default")


def is_conversational(prompt: Any) -> bool:
    """Whether ``prompt`` is a list of chat messages (TRL's ``is_conversational`` for one prompt)."""
    return (isinstance(prompt, (list, tuple)) and len(prompt) > 0
            and all(isinstance(m, dict) and "role" in m and "content" in m for m in prompt))


def as_trl_completions(prompts: Sequence[Any], completions: Sequence[Any]) -> list[Any]:
    """Completions in TRL's form: ``[{"role": "assistant", "content": text}]`` each when the prompts are
    conversational (TRL looks at the first prompt), else the text. A completion already in message form
    is kept."""
    if prompts and is_conversational(prompts[0]):
        return [[{"role": "assistant", "content": c}] if isinstance(c, str) else c for c in completions]
    from spro.rewards import completion_text

    return [completion_text(c) for c in completions]


def trainer_state(step: int, max_steps: int, *, epoch: float | None = None) -> Any:
    """A ``transformers.TrainerState`` for ``trainer_state=``: ``global_step`` = the step being scored
    (1-based), ``max_steps``, ``epoch`` (passes over the training prompts so far)."""
    from transformers import TrainerState

    return TrainerState(global_step=step, max_steps=max_steps, epoch=epoch)


def invoke_reward(fn: Callable[..., Any], prompts: Sequence[Any], completions: Sequence[Any],
                  columns: dict[str, Any]) -> Any:
    """Call ``fn`` the way its signature asks (module docstring) and return what it returns, unchecked.

    ``columns``: the dataset's columns, plus optionally the :data:`PASSED_IN_COLUMNS` (``completion_ids``:
    a list per row; ``trainer_state``: a list with the state repeated, or the state itself)."""
    columns = dict(columns)
    passed = {k: columns.pop(k) for k in PASSED_IN_COLUMNS if k in columns}
    style = check_reward_signature(fn)
    if style == "positional":
        from spro.rewards import completion_text

        return fn(list(prompts), [completion_text(c) for c in completions], **columns)
    state = passed.get("trainer_state")
    if isinstance(state, (list, tuple)):
        state = state[0] if state else None
    kwargs = {"prompts": list(prompts), "completions": as_trl_completions(prompts, completions),
              "completion_ids": passed.get("completion_ids"), "trainer_state": state, **columns}
    params = _params(fn)
    if params is not None and not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        accepted = {p.name for p in params if p.kind is not inspect.Parameter.POSITIONAL_ONLY}
        kwargs = {k: v for k, v in kwargs.items() if k in accepted}
    return fn(**kwargs)


def check_configured_rewards(data_cfg: DataConfig, overrides: dict[str, Callable] | None = None) -> None:
    """Import the reward functions ``data_cfg.rewards`` names (``overrides``: ``{name: fn}`` given instead)
    and check each signature (:func:`check_reward_signature`): run before any model loads. A null
    ``data.rewards`` (the default reward of what is trained on, a spro built-in) has nothing to check."""
    if getattr(data_cfg, "rewards", None) is None:
        return
    from spro.options import ConfigError
    from spro.rewards.scoring import resolve_reward

    for spec in data_cfg.rewards:
        try:
            check_reward_signature(resolve_reward(spec.name, overrides))
        except RewardSignatureError as e:
            raise ConfigError(f"data.rewards '{spec.name}': {e}") from None


def check_scorer_columns(scorer: Any, columns: Sequence[str]) -> None:
    """:func:`check_reward_columns` for each reward function of a ``spro.rewards.scoring.Scorer``, once the
    training set's ``columns`` are known (before the first step)."""
    from spro.options import ConfigError

    for rf in scorer.rewards:
        try:
            check_reward_columns(rf.fn, columns, name=rf.name)
        except RewardSignatureError as e:
            raise ConfigError(f"data.rewards '{rf.name}': {e}") from None


def reward_columns(completion_ids: Sequence[Sequence[int]] | None, state: Any, n: int) -> dict[str, list]:
    """The :data:`PASSED_IN_COLUMNS` for ``n`` rows, to add to the dataset's columns before scoring."""
    out: dict[str, list] = {"trainer_state": [state] * n}
    if completion_ids is not None:
        out["completion_ids"] = [list(map(int, ids)) for ids in completion_ids]
    return out
