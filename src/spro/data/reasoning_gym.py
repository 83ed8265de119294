"""reasoning-gym tasks as training data: ``data.source=reasoning_gym:NAME`` (``pip install 'spro[gym]'``).

reasoning-gym (the PyPI package ``reasoning-gym``) generates questions procedurally, offline, and
scores answers with each task's own ``score_answer``. :func:`load_reasoning_gym` builds the
training and evaluation sets from the ``data.reasoning_gym`` section:

* ``size`` training questions: items ``0 .. size-1`` of ``reasoning_gym.create_dataset(NAME,
  seed=seed, **config)``;
* ``data.eval_size`` evaluation questions: the items after those (reasoning-gym seeds item ``i``
  with ``seed + i``, so they are new draws), skipping every question that is also in the training
  set, so the two sets are disjoint (a warning says so if the task cannot produce that many);
* ``config``: the task's own config keys (e.g. ``{min_terms: 2, max_terms: 3}`` for ``chain_sum``).

Each row has ``prompt`` (chat messages: reasoning-gym's default system prompt, which asks for the
answer inside ``<answer></answer>``, and the question; or, with ``chat: false``, plain text: the
question and that instruction), ``answer``, ``question``, ``data_source`` (``reasoning_gym/NAME``)
and ``reasoning_gym``: a JSON reference (task, config, seed, index) to the item.

The reward registered as ``"reasoning_gym"`` (:func:`reasoning_gym_reward`) regenerates the item
from that reference and returns the task's ``score_answer(answer, entry)`` for the text inside the
last ``<answer>...</answer>`` of the completion (reasoning-gym's ``extract_answer``; no tags = no
answer, usually 0).
"""

from __future__ import annotations

import difflib
import functools
import json
import warnings
from typing import Any, Sequence

__all__ = ["PREFIX", "INSTRUCTION", "is_reasoning_gym", "load_reasoning_gym", "reasoning_gym_reward",
           "check_unseen_by_warm_start"]

PREFIX = "reasoning_gym:"
INSTRUCTION = "Give the final answer inside <answer></answer> tags."
_EVAL_ATTEMPTS = 20  # evaluation draws per wanted question before giving up on finding new ones


def is_reasoning_gym(source: str | None) -> bool:
    return isinstance(source, str) and source.startswith(PREFIX)


def _rg() -> Any:
    try:
        import reasoning_gym
    except ImportError:
        raise ValueError("data.source=reasoning_gym:...: needs the reasoning-gym package: "
                         "pip install 'spro[gym]'") from None
    return reasoning_gym


def _task_name(source: str) -> str:
    from reasoning_gym.factory import DATASETS

    name = source[len(PREFIX):]
    if name not in DATASETS:
        close = difflib.get_close_matches(name, list(DATASETS), n=1)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise ValueError(f"data.source={source}: reasoning-gym has no task {name!r}{hint} "
                         f"({len(DATASETS)} tasks, e.g. chain_sum, basic_arithmetic)")
    return name


@functools.lru_cache(maxsize=64)
def _dataset(task: str, config_json: str, seed: int, size: int) -> Any:
    config = json.loads(config_json)
    for key in ("seed", "size"):
        if key in config:
            raise ValueError(f"data.reasoning_gym.config.{key}: set data.reasoning_gym.{key} instead")
    try:
        return _rg().create_dataset(task, seed=seed, size=size, **config)
    except (TypeError, AssertionError, ValueError) as e:
        raise ValueError(f"data.reasoning_gym.config {config}: not a valid config of reasoning-gym's {task!r} "
                         f"({type(e).__name__}: {e})") from None


def _prompt(question: str, chat: bool, template: str | None) -> Any:
    from spro.data.datasets import _apply_template

    if chat:
        from reasoning_gym.utils import SYSTEM_PROMPTS

        prompt: Any = [{"role": "system", "content": SYSTEM_PROMPTS["default"]}, {"role": "user", "content": question}]
    else:
        prompt = f"{question}\n\n{INSTRUCTION}"
    return _apply_template(prompt, template, {"question": question})


def _rows(task: str, config: dict, seed: int, size: int, indices: Sequence[int], chat: bool,
          template: str | None) -> list[dict[str, Any]]:
    ds = _dataset(task, json.dumps(config, sort_keys=True), seed, size)
    rows = []
    for i in indices:
        entry = ds[i]
        ref = {"task": task, "config": config, "seed": seed, "size": size, "index": i, "question": entry["question"]}
        rows.append({"prompt": _prompt(entry["question"], chat, template), "answer": str(entry["answer"]),
                     "question": entry["question"], "data_source": f"reasoning_gym/{task}",
                     "reasoning_gym": json.dumps(ref, sort_keys=True)})
    return rows


def load_reasoning_gym(data: Any, *, with_eval: bool = True) -> tuple[Any, Any]:
    """``(train, eval)`` datasets for the DataConfig ``data`` (``data.source=reasoning_gym:NAME``; the
    ``data.reasoning_gym`` section, ``data.eval_size``, ``data.train_size``, ``data.prompt_template``);
    ``eval`` is None when not ``with_eval``."""
    import datasets

    _rg()
    task = _task_name(data.source)
    rg = data.reasoning_gym
    if rg.size < 1:
        raise ValueError(f"data.reasoning_gym.size must be >= 1, got {rg.size}")
    n_eval = data.eval_size if with_eval else 0
    if with_eval and n_eval < 1:
        raise ValueError("data.eval_size must be >= 1 for a reasoning_gym source (it sets the number of "
                         "evaluation questions)")
    total = rg.size + n_eval * _EVAL_ATTEMPTS
    config = dict(rg.config)
    rows = _rows(task, config, rg.seed, total, range(rg.size), rg.chat, data.prompt_template)
    train = rows[: data.train_size] if data.train_size else rows
    evals = None
    if with_eval:
        seen = {r["question"] for r in rows}
        ds = _dataset(task, json.dumps(config, sort_keys=True), rg.seed, total)
        picked = []
        for i in range(rg.size, total):
            q = ds[i]["question"]
            if q not in seen:
                seen.add(q)
                picked.append(i)
                if len(picked) == n_eval:
                    break
        if not picked:
            raise ValueError(f"data.source={data.source}: every evaluation draw repeats a training question; the "
                             f"task's config {config} allows too few distinct questions")
        if len(picked) < n_eval:
            warnings.warn(f"data.source={data.source}: only {len(picked)} evaluation questions that are not in the "
                          f"training set (data.eval_size={n_eval})", stacklevel=2)
        evals = datasets.Dataset.from_list(_rows(task, config, rg.seed, total, picked, rg.chat, data.prompt_template))
    return datasets.Dataset.from_list(train), evals


def check_unseen_by_warm_start(model_dir: Any, evals: Any) -> None:
    """Stop with a ConfigError when evaluation questions ``evals`` were training questions of the model in
    ``model_dir``: a ``spro sft --data reasoning_gym:NAME`` warm start (its ``sft_config.json``) trained on
    items 0 .. N-1 at seed 0, which are evaluation questions of a run whose ``data.reasoning_gym`` seed or size
    differs, and its accuracy would then count memorised answers."""
    from pathlib import Path
    from types import SimpleNamespace

    from spro.options import ConfigError
    from spro.schema import ReasoningGymConfig

    meta_file = Path(str(model_dir)) / "sft_config.json"
    if evals is None or "question" not in evals.column_names or not meta_file.is_file():
        return
    meta = json.loads(meta_file.read_text())
    if not is_reasoning_gym(meta.get("data")):
        return
    knobs = meta.get("task_kwargs_resolved") or meta.get("task_kwargs") or {}
    source = SimpleNamespace(source=meta["data"], reasoning_gym=ReasoningGymConfig(config=dict(knobs)), eval_size=0,
                             train_size=meta.get("train_size"), prompt_template=None)
    questions = load_reasoning_gym(source, with_eval=False)[0]["question"]
    seen = set(questions)
    overlap = sum(q in seen for q in evals["question"])
    if overlap:
        raise ConfigError(f"{overlap} of the {len(evals)} evaluation questions are training questions of the warm start "
                          f"{model_dir} (spro sft --data {meta['data']}, items 0-{len(questions) - 1} at seed 0 with the "
                          f"config {dict(knobs)}): its accuracy would count memorised answers; leave "
                          "data.reasoning_gym.seed at 0 and data.reasoning_gym.size at 1000 or more")


def reasoning_gym_reward(prompts: Sequence[Any], completions: Sequence[Any], reasoning_gym: Sequence[Any] | None = None,
                         **columns: Any) -> list[float | None]:
    """The task's own ``score_answer`` of the answer inside the completion's last ``<answer></answer>``
    (TRL's convention; rows need the ``reasoning_gym`` column of :func:`load_reasoning_gym`; a row
    without it scores None)."""
    from reasoning_gym.utils import extract_answer

    from spro.rewards import completion_text

    if reasoning_gym is None:
        raise ValueError("the 'reasoning_gym' reward needs rows from data.source=reasoning_gym:NAME (their "
                         "'reasoning_gym' column)")
    out: list[float | None] = []
    for i, (completion, ref) in enumerate(zip(completions, reasoning_gym)):
        if not ref:
            out.append(None)
            continue
        r = json.loads(ref)
        ds = _dataset(r["task"], json.dumps(r["config"], sort_keys=True), r["seed"], r["size"])
        entry = ds[r["index"]]
        if entry["question"] != r["question"]:
            raise ValueError(f"row {i}: reasoning-gym's {r['task']} item {r['index']} (seed {r['seed']}) is no longer "
                             f"the question of this row (another reasoning-gym version?)")
        out.append(float(ds.score_answer(extract_answer(completion_text(completion)), entry)))
    return out
