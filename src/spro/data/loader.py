"""The trainer's view of the data: what a config trains and evaluates on, its default reward, the step order.

One rule each, used by ``spro train`` and ``spro eval`` alike:

* what is trained on (:func:`task_name`): ``data.source`` when given, ``data.task`` when given
  (not both), the arithmetic task when neither is;
* the held-out evaluation set (:func:`load_datasets`): the task's ``data.eval_split``; for a
  dataset ``data.eval_source``, another split ``data.eval_split`` of ``data.source`` that exists,
  or ``data.eval_fraction`` of its rows (seeded, not trained on); otherwise an error that says
  how to give one, never a silent evaluation on training rows;
* the default reward (:func:`default_reward`): a task's own verifier; for a dataset the reward
  its schema implies; none for the plain schema (an error asks for one).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from spro.options import ConfigError

if TYPE_CHECKING:
    from spro.schema import DataConfig, TrainConfig

__all__ = ["DEFAULT_TASK", "TrainingData", "task_name", "load_task", "default_reward", "reward_specs",
           "accuracy_verifier", "load_datasets", "training_data", "describe_datasets", "prompt_order", "check_prompt_lengths"]

DEFAULT_TASK = "arithmetic"
# the reward a dataset's schema implies (spro.data.load_prompt_dataset's schemas; "plain" implies none)
SCHEMA_REWARDS = {"gsm8k": "math", "math": "math", "eurus": "eurus"}
REASONING_GYM_PREFIX = "reasoning_gym:"


def task_name(d: DataConfig) -> str | None:
    """The built-in task a ``DataConfig`` trains on (None: the dataset ``data.source``)."""
    if d.task is not None:
        return d.task
    return DEFAULT_TASK if d.source is None else None


def _default_reward(task: str | None, source: str | None, dataset: Any, how: str) -> tuple[str, str]:
    if task is not None:
        from spro.data.tasks import task_reward

        return task_reward(task), f"the verifier of the task {task}"
    if source is not None and str(source).startswith(REASONING_GYM_PREFIX):
        return "reasoning_gym", "the verifier of reasoning_gym sources"
    from spro.data.datasets import get_load_report

    report = get_load_report(dataset) if dataset is not None else None
    schema = report.schema if report is not None else None
    if schema in SCHEMA_REWARDS:
        return SCHEMA_REWARDS[schema], f"what {schema} data implies"
    raise ConfigError(f"{source}: the {schema or 'unknown'} schema implies no reward function; name one with {how} "
                      "(a registered reward such as math, code, format, or module:function of your own)")


def default_reward(dataset: Any = None, *, task: str | None = None, source: str | None = None,
                   how: str = "data.rewards=[{name: ...}]") -> str:
    """The registered name of the reward that fits what is trained or evaluated on: the task's own verifier
    (``task``), ``reasoning_gym`` for a ``reasoning_gym:NAME`` source, else the one the schema of ``dataset``
    (from :func:`spro.data.load_prompt_dataset`) implies: math for gsm8k and math, eurus for eurus. The plain
    schema implies none: ConfigError telling to name one with ``how``."""
    return _default_reward(task, source, dataset, how)[0]


def reward_specs(d: DataConfig, train: Any) -> tuple[list[tuple[str, float]], str]:
    """``[(reward name, weight)]`` of a ``DataConfig`` whose training set is ``train``: ``data.rewards``, or when
    null the :func:`default_reward`; and a sentence saying which and why."""
    if d.rewards is not None:
        specs = [(s.name, s.weight) for s in d.rewards]
        return specs, "reward " + " + ".join(f"{w:g} x {n}" for n, w in specs) + " (data.rewards)"
    name, why = _default_reward(task_name(d), d.source, train, "data.rewards=[{name: ...}]")
    return [(name, 1.0)], f"reward {name} ({why}; data.rewards chooses another)"


def accuracy_verifier(d: DataConfig, train: Any, names: list[str]) -> tuple[str | None, str]:
    """The reward whose value decides "correct" (the accuracy metrics, PRIME's labels) among the reward
    functions ``names`` of a run on ``train``, and a sentence saying which and why. The rule, never a shaped
    reward by default:

    1. ``data.accuracy_reward`` when set (one of ``names``);
    2. else the verifier of the data (:func:`default_reward`: the task's own, ``reasoning_gym``, or the one
       the schema implies) when it is one of ``names`` (with ``data.rewards`` null it is the reward);
    3. else none: accuracy is not reported (null), and the sentence says how to set it.
    """
    if d.accuracy_reward is not None:
        return d.accuracy_reward, f"accuracy by {d.accuracy_reward} (data.accuracy_reward)"
    try:
        verifier, why = _default_reward(task_name(d), d.source, train, "data.accuracy_reward")
    except ConfigError:
        verifier, why = None, "the data implies no verifier"
    if verifier in names:
        return verifier, f"accuracy by {verifier} ({why})"
    which = f"its verifier {verifier} is not among the rewards" if verifier is not None else why
    return None, (f"accuracy not reported ({which}; set data.accuracy_reward=NAME, one of {', '.join(names)}, to "
                  "count a response correct when that reward is >= data.correct_threshold)")


def load_datasets(cfg: TrainConfig) -> tuple[Any, Any]:
    """(train, eval) datasets with at least a 'prompt' column; eval is None when ``cfg.eval_every < 0``.

    Raises ConfigError when a dataset run has no held-out set to evaluate on (see the module docstring).
    """
    d, evaluate = cfg.data, cfg.eval_every >= 0
    task = task_name(d)
    if task is not None:
        from spro.data.tasks import get_task

        split = d.eval_split or "validation"
        if evaluate and split == d.split:
            raise ConfigError(f"data.eval_split={split} is the training split (data.split); evaluate on another one")
        t = get_task(task, **d.task_kwargs)
        return t.split(d.split, n=d.train_size), (t.split(split, n=d.eval_size or None) if evaluate else None)
    from spro.data.reasoning_gym import is_reasoning_gym, load_reasoning_gym

    if is_reasoning_gym(d.source):  # procedural questions: disjoint train and eval sets (spro.data.reasoning_gym)
        return load_reasoning_gym(d, with_eval=evaluate)
    from spro.data import load_prompt_dataset

    kw = dict(schema=d.schema, prompt_template=d.prompt_template)
    train = load_prompt_dataset(d.source, split=d.split, column_map=d.column_map, **kw)
    evals = None
    if d.eval_fraction is not None:
        train, evals = _hold_out(train, d.eval_fraction, cfg.seed, d.source)
    elif d.eval_source is not None and evaluate:
        try:
            evals = load_prompt_dataset(d.eval_source, split=d.eval_split,
                                        column_map=d.eval_column_map or d.column_map, **kw)
        except ValueError as e:
            raise ConfigError(f"data.eval_source: {e}" + ("" if d.eval_split else " (data.eval_split)")) from None
    elif d.eval_split is not None and evaluate:
        from spro.data.datasets import get_load_report

        if d.eval_split == d.split:
            raise ConfigError(f"data.eval_split={d.eval_split} is the training split (data.split); evaluate on another "
                              "split, data.eval_source or data.eval_fraction")
        if get_load_report(train).split is None:
            raise ConfigError(f"data.eval_split={d.eval_split}: data.source={d.source} has no splits (a single file), so "
                              "no held-out rows; give data.eval_source=FILE or data.eval_fraction=0.1")
        evals = load_prompt_dataset(d.source, split=d.eval_split, column_map=d.column_map, **kw)
    elif evaluate:
        raise ConfigError(
            f"data.source={d.source}: no held-out set for the evaluation (at the end of the run and every eval_every "
            "steps); give data.eval_source=FILE (held-out prompts), data.eval_split=SPLIT (a split of data.source "
            f"other than data.split={d.split}) or data.eval_fraction=0.1 (a seeded part of data.source's rows, not "
            "trained on); or eval_every=-1 to never evaluate")
    if d.train_size:
        train = train.select(range(min(d.train_size, len(train))))
    if evals is not None and d.eval_size:
        if d.eval_fraction is not None and len(evals) > d.eval_size and evaluate:
            warnings.warn(f"data.eval_fraction={d.eval_fraction} holds out {len(evals)} rows of {d.source}, and the "
                          f"evaluation uses the first data.eval_size={d.eval_size} of them: the other "
                          f"{len(evals) - d.eval_size} are neither trained on nor evaluated (data.eval_size=0 "
                          "evaluates them all)", stacklevel=2)
        evals = evals.select(range(min(d.eval_size, len(evals))))
    return train, (evals if evaluate else None)


@dataclass
class TrainingData:
    """What the trainer trains and evaluates on: the datasets, the rendered training prompts, the ``(reward,
    weight)`` pairs and a one-line summary for the start of the run."""

    train: Any
    prompts: list[str]
    evals: Any
    rewards: list[tuple[str, float]]
    summary: str
    eval_prompts: list[str] | None = None  # the rendered evaluation prompts (data.chat_template applied)
    accuracy: str | None = None  # the reward that decides "correct" (accuracy_verifier); None = not reported
    accuracy_note: str = ""  # accuracy_verifier's sentence (also in summary)
    chat_template: bool = False  # prompts went through the chat template (chat messages, or strings by data.chat_template)


def training_data(cfg: TrainConfig, tokenizer: Any, context: int | None, datasets: tuple[Any, Any] | None = None
                  ) -> TrainingData:
    """:func:`load_datasets` (or ``datasets``, ``(train, eval or None)`` given as ``datasets.Dataset`` objects by
    the Python API, used as they are), prompts checked against the model's ``context``
    (:func:`check_prompt_lengths`) and :func:`reward_specs`."""
    from spro.data.prompts import render_prompt, resolve_chat_template

    d, max_new = cfg.data, cfg.rollout.max_new_tokens
    name = cfg.model.name_or_path
    if isinstance(name, str) and name.startswith("warmstart:"):  # (built by now: the model is loaded)
        from spro.trainer.warmstart import resolve_model

        name = resolve_model(name, progress=False)
    chat, why = resolve_chat_template(getattr(d, "chat_template", "off"), tokenizer, name, cfg.model.gguf_file)
    train, evals = load_datasets(cfg) if datasets is None else given_datasets(*datasets)
    from spro.data.reasoning_gym import check_unseen_by_warm_start, is_reasoning_gym

    if is_reasoning_gym(d.source):
        check_unseen_by_warm_start(name, evals)
    train, prompts = check_prompt_lengths(train, [render_prompt(tokenizer, p, chat_template=chat)
                                                  for p in train["prompt"]], tokenizer,
                                          context, max_new, d.long_prompts, "train")
    eval_prompts = None
    if evals is not None:
        evals, eval_prompts = check_prompt_lengths(evals, [render_prompt(tokenizer, p, chat_template=chat)
                                                           for p in evals["prompt"]], tokenizer,
                                                   context, max_new, d.long_prompts, "evaluation")
    if len(train) == 0:
        raise ConfigError("the training set is empty")
    specs, note = reward_specs(d, train)
    accuracy, acc_note = accuracy_verifier(d, train, [n for n, _ in specs])
    note = f"{note}; {acc_note}"
    what = describe_datasets(d, train, evals) if datasets is None else (
        f"train_dataset ({len(train)} prompts; " + (f"eval_dataset: {len(evals)})" if evals is not None
                                                    else "no evaluation)"))
    strings = isinstance(train[0]["prompt"], str)
    shown = prompts[0] if len(prompts[0]) <= 400 else prompts[0][:400] + "..."
    first = (f"\nspro: string prompts {'through the chat template' if chat else 'used as they are'} ({why}); "
             if strings else "\nspro: chat prompts through the tokenizer's chat template; ") + f"first prompt: {shown!r}"
    return TrainingData(train, prompts, evals, specs, f"data {what}; {note}{first}", eval_prompts, accuracy,
                        acc_note, chat_template=bool(chat or not strings))  # chat messages: always the template


def given_datasets(train: Any, evals: Any) -> tuple[Any, Any]:
    """``(train, eval)`` given to the Python API, checked: each has a ``prompt`` column and rows."""
    for name, ds in (("train_dataset", train), ("eval_dataset", evals)):
        if ds is None:
            continue
        cols = getattr(ds, "column_names", None)
        if cols is None:
            raise ConfigError(f"{name}: expected a datasets.Dataset, got {type(ds).__name__}")
        if "prompt" not in cols:
            raise ConfigError(f"{name}: no 'prompt' column (its columns: {', '.join(cols) or 'none'}); as in TRL, each "
                              "row's prompt (a string or a list of chat messages) is in a column named 'prompt' "
                              "(ds.rename_column(YOUR_COLUMN, 'prompt'))")
    return train, evals


def _hold_out(ds: Any, fraction: float, seed: int, source: str) -> tuple[Any, Any]:
    """(train, held out): a seeded ``fraction`` of the rows held out, each part in the source's order."""
    n = len(ds)
    k = int(round(n * fraction))
    if not 1 <= k < n:
        raise ConfigError(f"data.eval_fraction={fraction} of the {n} rows of {source} holds out {k}; it must leave at "
                          "least one row for each of training and evaluation")
    held = np.random.default_rng([seed, 0x5EED]).permutation(n)[:k]
    is_held = np.zeros(n, dtype=bool)
    is_held[held] = True
    return ds.select(np.flatnonzero(~is_held).tolist()), ds.select(np.flatnonzero(is_held).tolist())


def describe_datasets(d: DataConfig, train: Any, evals: Any) -> str:
    """One line saying what a run trains and evaluates on (printed at its start)."""
    task = task_name(d)
    if task is not None:
        what = f"task {task} ({d.split}: {len(train)} prompts"
        held = f"{d.eval_split or 'validation'}: {len(evals)}" if evals is not None else "no evaluation"
        return f"{what}; {held})"
    if d.eval_fraction is not None:
        held = f"{len(evals) if evals is not None else 0} held out by data.eval_fraction={d.eval_fraction}"
    elif d.eval_source is not None:
        held = f"{len(evals) if evals is not None else 0} from {d.eval_source}"
    elif evals is None:
        held = "no evaluation"
    elif d.eval_split is not None:
        held = f"{d.eval_split}: {len(evals)}"
    else:  # (reasoning_gym sources generate their evaluation questions apart from the training ones)
        held = f"{len(evals)} evaluation prompts, apart from the training ones"
    return f"{d.source} ({len(train)} prompts; {held})"


def load_task(data: DataConfig) -> Any:
    """The built-in task the ``data`` section (``spro.config.DataConfig``) trains on (:func:`task_name`), or
    None for a dataset."""
    name = task_name(data)
    if name is None:
        return None
    from spro.data.tasks import get_task

    return get_task(name, **data.task_kwargs)


def prompt_order(n: int, seed: int, epoch: int, shuffle: bool) -> np.ndarray:
    """The order of the n training prompts in ``epoch`` (seeded, independent of global RNG)."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([seed, epoch]).permutation(n)


def check_prompt_lengths(ds: Any, prompts: list[str], tokenizer: Any, context: int | None, max_new_tokens: int,
                         long_prompts: str, split: str) -> tuple[Any, list[str]]:
    """Rows whose rendered prompt leaves room for ``max_new_tokens`` in a ``context``-token model:
    ``long_prompts="error"`` stops at the first that does not (naming the row), ``"drop"`` drops them
    with a warning. Returns the (possibly filtered) dataset and rendered prompts."""
    if not context:
        return ds, prompts
    lens = [len(x) for x in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    room = context - max_new_tokens
    bad = [i for i, n in enumerate(lens) if n > room]
    if not bad:
        return ds, prompts
    if long_prompts == "error":
        i = bad[0]
        raise ConfigError(
            f"data ({split} split), row {i + 1}: the prompt has {lens[i]} tokens, and with rollout.max_new_tokens="
            f"{max_new_tokens} that exceeds the model's context of {context} tokens ({len(bad)} such prompt(s)); "
            f"shorten them, lower max_new_tokens or set data.long_prompts=drop"
        )
    warnings.warn(f"dropping {len(bad)} {split} prompt(s) longer than the context allows")
    keep = sorted(set(range(len(prompts))) - set(bad))
    return ds.select(keep), [prompts[i] for i in keep]
