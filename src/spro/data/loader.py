"""The trainer's view of the data: the training and evaluation sets a config names, and the step order."""

from __future__ import annotations

from typing import Any

import warnings

import numpy as np

__all__ = ["load_datasets", "prompt_order", "check_prompt_lengths"]


def load_datasets(cfg: Any) -> tuple[Any, Any]:
    """(train, eval) datasets with at least a 'prompt' column."""
    d = cfg.data
    if d.task is not None:
        from spro.data.tasks import get_task

        task = get_task(d.task, **d.task_kwargs)
        train = task.split(d.split, n=d.train_size)
        evals = task.split(d.eval_split, n=d.eval_size or None) if cfg.eval_every >= 0 else None
        return train, evals
    from spro.data.reasoning_gym import is_reasoning_gym, load_reasoning_gym

    if is_reasoning_gym(d.source):  # procedural questions: disjoint train and eval sets (spro.data.reasoning_gym)
        return load_reasoning_gym(d, with_eval=cfg.eval_every >= 0)
    from spro.data import load_prompt_dataset

    kw = dict(schema=d.schema, column_map=d.column_map, prompt_template=d.prompt_template)
    train = load_prompt_dataset(d.source, split=d.split, **kw)
    if d.train_size:
        train = train.select(range(min(d.train_size, len(train))))
    evals = None
    if cfg.eval_every >= 0:
        evals = load_prompt_dataset(d.eval_source or d.source, split=d.eval_split, **kw)
        if d.eval_size:
            evals = evals.select(range(min(d.eval_size, len(evals))))
    return train, evals


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
        from spro.options import ConfigError

        i = bad[0]
        raise ConfigError(
            f"data ({split} split), row {i}: the prompt has {lens[i]} tokens, and with rollout.max_new_tokens="
            f"{max_new_tokens} that exceeds the model's context of {context} tokens ({len(bad)} such prompt(s)); "
            f"shorten them, lower max_new_tokens or set data.long_prompts=drop"
        )
    warnings.warn(f"dropping {len(bad)} {split} prompt(s) longer than the context allows")
    keep = sorted(set(range(len(prompts))) - set(bad))
    return ds.select(keep), [prompts[i] for i in keep]
