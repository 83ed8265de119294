"""Built-in tasks: procedurally generated problems with a verifier.

A task object provides ``split(name, n=None) -> datasets.Dataset`` (columns prompt, answer,
solution), ``reward(prompts, completions, answer, **kw) -> list[float]``, ``reward_name`` (that
reward's name in ``spro.rewards``' registry: the default ``data.rewards`` of a run on the task) and,
where it can judge steps, ``first_wrong_step(prompt, completion) -> int | None`` and
``step_spans(completion) -> [(start, end), ...]`` (the character span of each step in the
completion text, for process diagnostics).

* ``arithmetic``: chains of 3-5 additions/subtractions (2-4 steps and the answer);
* ``arithmetic_long``: the same with 7-10 operands (6-9 steps), where the outcome is sparse;
* ``multiplication``: long multiplication digit by digit (partial products, then their sum).
"""

from __future__ import annotations

import difflib
from typing import Any, Callable

from spro.data.tasks.arithmetic import ArithmeticTask, LongArithmeticTask
from spro.data.tasks.multiplication import MultiplicationTask

_TASKS: dict[str, Callable[..., Any]] = {
    "arithmetic": ArithmeticTask,
    "arithmetic_long": LongArithmeticTask,
    "multiplication": MultiplicationTask,
}


def list_tasks() -> list[str]:
    """Names of the registered tasks."""
    return sorted(_TASKS)


def _task_class(name: str) -> Callable[..., Any]:
    if name not in _TASKS:
        close = difflib.get_close_matches(str(name), list(_TASKS), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown task {name!r}{hint} (known tasks: {', '.join(list_tasks())})")
    return _TASKS[name]


def task_reward(name: str) -> str:
    """The registered name of the verifier of task ``name`` (its ``reward_name``)."""
    return _task_class(name).reward_name


def get_task(name: str, **knobs: Any) -> Any:
    """Build the task ``name`` with its knobs; unknown names raise ValueError with a suggestion."""
    cls = _task_class(name)
    try:
        return cls(**knobs)
    except TypeError as exc:  # unknown knob names
        raise ValueError(f"task {name!r}: {exc}") from exc


__all__ = ["ArithmeticTask", "LongArithmeticTask", "MultiplicationTask", "get_task", "list_tasks", "task_reward"]
