"""Evaluating a causal LM on prompts with a verifier.

* :func:`spro.rollout.generate_completions` - batched generation with left padding (greedy or sampled).
* :func:`evaluate` - greedy pass@1, sampled mean@k and pass@k, response lengths, a
  per-``data_source`` breakdown when that column exists and, given a step checker (the
  arithmetic task's ``first_wrong_step``), statistics of the first wrong step on wrong greedy
  answers.

Metrics (all over the evaluated prompts):
  pass@1       mean greedy reward (for 0/1 rewards: greedy accuracy).
  accuracy     fraction of greedy responses that are correct (the Scorer's rule: the accuracy
               reward >= its threshold), the definition the trainer's eval/accuracy uses.
  mean@k       mean reward of k samples per prompt (temperature / top-p sampling).
  pass@k       fraction of prompts with at least one correct sample.
  length_mean  mean greedy response length in tokens (eos not counted).
  sampled_length_mean  the same for the samples.
  truncated_frac  fraction of greedy responses that hit max_new_tokens without eos.
  reward_none  number of greedy + sampled responses the reward scored None; following
               spro.rewards' None rule, such rows are left out of every mean (and of pass@k).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any, Callable, Sequence

from spro.rewards.scoring import Scorer
from spro.rollout.generate import generate_completions


def _score(scorer: Scorer, prompts: list[Any], completions: list[str], columns: dict[str, list[Any]]
           ) -> tuple[list[float | None], list[bool]]:
    """Rewards (None where no reward function gave a value) and correctness of each completion."""
    sc = scorer(prompts, completions, columns)
    rewards = [float(r) if ok else None for r, ok in zip(sc.rewards.tolist(), sc.scored.tolist())]
    return rewards, sc.correct.tolist()


def _mean(xs: Sequence[float | None]) -> float | None:
    """Mean of the non-None values (None if there are none)."""
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def evaluate(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    reward: Scorer | Callable[..., list[Any]],
    *,
    k: int = 0,
    temperature: float = 1.0,
    top_p: float = 1.0,
    max_new_tokens: int = 96,
    batch_size: int = 64,
    seed: int = 0,
    step_checker: Callable[[str, str], int | None] | None = None,
    keep_samples: int = 5,
    progress: bool = False,
    chat_template: bool = False,
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` (needs a ``prompt`` column; other columns go to the reward).

    ``reward``: a ``spro.rewards.scoring.Scorer`` (the trainer's definition of reward and
    correctness) or one reward function (correct = value >= 1).

    Greedy decoding gives pass@1; with ``k >= 1`` also ``k`` samples per prompt at
    ``temperature`` / ``top_p`` give mean@k and pass@k. ``chat_template``: string prompts through the
    tokenizer's chat template (``data.chat_template``, resolved by ``spro.data.prompts.resolve_chat_template``).
    The reward functions get TRL's ``completion_ids`` as the completions' text tokenized again. Returns a JSON-able dict (see the module
    docstring), with ``by_source`` when the dataset has a ``data_source`` column and
    ``step_checker`` stats when a checker is given: on wrong greedy answers, ``found_frac`` is
    how often the checker names a wrong step, ``positions`` counts the step index it names and
    ``relative_positions`` the index divided by the number of steps of the problem (bucketed);
    on right greedy answers, ``right_answer_all_steps_right_frac`` is how often it finds no wrong step.
    """
    if "prompt" not in dataset.column_names:
        raise ValueError(f"dataset has no 'prompt' column (columns: {dataset.column_names})")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    n = len(dataset)
    if n == 0:
        raise ValueError("dataset is empty")
    scorer = Scorer.of(reward)
    prompts = list(dataset["prompt"])
    columns = {c: list(dataset[c]) for c in dataset.column_names if c != "prompt"}

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=n * (2 if k else 1), desc="eval", unit="prompt", leave=False)

    def tick_factory():
        last = [0]

        def tick(done: int) -> None:
            bar.update(done - last[0])
            last[0] = done

        return tick if bar is not None else None

    from spro.data.prompts import render_prompt

    rendered = [render_prompt(tokenizer, p, chat_template=chat_template) for p in prompts]
    g_text, g_len, g_trunc = generate_completions(
        model, tokenizer, rendered, max_new_tokens=max_new_tokens, do_sample=False,
        batch_size=batch_size, progress=tick_factory(),
    )
    greedy = [t[0] for t in g_text]
    greedy_scores, greedy_correct = _score(scorer, prompts, greedy, {**columns, **_ids(tokenizer, greedy)})
    none_count = sum(s is None for s in greedy_scores)
    result: dict[str, Any] = {
        "n": n,
        "pass@1": _mean(greedy_scores),
        "accuracy": sum(greedy_correct) / n,
        "length_mean": sum(l[0] for l in g_len) / n,
        "truncated_frac": sum(t[0] for t in g_trunc) / n,
        "max_new_tokens": max_new_tokens,
        "k": k,
    }
    sample_scores: list[list[float | None]] = []
    sample_correct: list[list[bool]] = []
    if k:
        s_text, s_len, _ = generate_completions(
            model, tokenizer, rendered, max_new_tokens=max_new_tokens, do_sample=True,
            temperature=temperature, top_p=top_p, num_return_sequences=k,
            batch_size=max(1, batch_size // k), seed=seed, progress=tick_factory(),
        )
        flat_prompts = [p for p in prompts for _ in range(k)]
        flat_cols = {c: [v for v in vals for _ in range(k)] for c, vals in columns.items()}
        flat_texts = [t for row in s_text for t in row]
        flat_scores, flat_correct = _score(scorer, flat_prompts, flat_texts, {**flat_cols, **_ids(tokenizer, flat_texts)})
        none_count += sum(s is None for s in flat_scores)
        sample_scores = [flat_scores[i * k : (i + 1) * k] for i in range(n)]
        sample_correct = [flat_correct[i * k : (i + 1) * k] for i in range(n)]
        result.update({
            f"mean@{k}": _mean(flat_scores),
            f"pass@{k}": _pass_at(sample_scores, sample_correct, range(n)),
            "temperature": temperature,
            "top_p": top_p,
            "sampled_length_mean": sum(sum(l) for l in s_len) / (n * k),
        })
    if bar is not None:
        bar.close()
    result["reward_none"] = none_count

    if "data_source" in columns:
        groups: dict[str, list[int]] = defaultdict(list)
        for i, src in enumerate(columns["data_source"]):
            groups[str(src)].append(i)
        by = {}
        for src, idx in sorted(groups.items()):
            entry = {
                "n": len(idx),
                "pass@1": _mean([greedy_scores[i] for i in idx]),
                "length_mean": sum(g_len[i][0] for i in idx) / len(idx),
            }
            if k:
                entry[f"mean@{k}"] = _mean([s for i in idx for s in sample_scores[i]])
                entry[f"pass@{k}"] = _pass_at(sample_scores, sample_correct, idx)
            by[src] = entry
        result["by_source"] = by

    if step_checker is not None:
        wrong = [i for i in range(n) if greedy_scores[i] is not None and not greedy_correct[i]]
        right = [i for i in range(n) if greedy_scores[i] is not None and greedy_correct[i]]
        positions: Counter[int] = Counter()
        relative: Counter[str] = Counter()
        found = 0
        for i in wrong:
            pos = step_checker(prompts[i], greedy[i])
            if pos is None:
                continue
            found += 1
            positions[pos] += 1
            nsteps = _num_steps(prompts[i])
            if nsteps:
                frac = pos / nsteps
                bucket = "answer" if pos >= nsteps else f"{math.floor(frac * 4) / 4:.2f}-{math.floor(frac * 4) / 4 + 0.25:.2f}"
                relative[bucket] += 1
        consistent = sum(step_checker(prompts[i], greedy[i]) is None for i in right)
        result["step_checker"] = {
            "wrong_n": len(wrong),
            "found_frac": found / len(wrong) if wrong else None,
            "positions": {str(p): c for p, c in sorted(positions.items())},
            "relative_positions": dict(sorted(relative.items())),
            "right_n": len(right),
            "right_answer_all_steps_right_frac": consistent / len(right) if right else None,
        }

    result["examples"] = [
        {"prompt": prompts[i] if isinstance(prompts[i], str) else str(prompts[i]), "greedy": greedy[i],
         "reward": greedy_scores[i]}
        for i in range(min(keep_samples, n))
    ]
    return result


def _pass_at(sample_scores: list[list[float | None]], sample_correct: list[list[bool]], idx: Any) -> float | None:
    """Fraction of the prompts in ``idx`` (with at least one scored sample) with a correct sample."""
    rows = [[c for s, c in zip(sample_scores[i], sample_correct[i]) if s is not None] for i in idx]
    rows = [r for r in rows if r]
    return sum(any(r) for r in rows) / len(rows) if rows else None


def _ids(tokenizer: Any, texts: list[str]) -> dict[str, list]:
    """TRL's ``completion_ids`` for the reward functions: the texts tokenized again."""
    return {"completion_ids": tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []}


def _num_steps(prompt: Any) -> int | None:
    """Number of operator steps of an arithmetic prompt (None if not one)."""
    try:
        from spro.data.tasks.arithmetic import parse_prompt

        return len(parse_prompt(prompt)[1])
    except (ValueError, TypeError):
        return None
