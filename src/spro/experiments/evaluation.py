"""Evaluating a causal LM on prompts with a verifier.

* :func:`generate_completions` - batched generation with left padding (greedy or sampled).
* :func:`evaluate` - greedy pass@1, sampled mean@k and pass@k, response lengths, a
  per-``data_source`` breakdown when that column exists and, given a step checker (the
  arithmetic task's ``first_wrong_step``), statistics of the first wrong step on wrong greedy
  answers.

Metrics (all over the evaluated prompts):
  pass@1       mean greedy reward (for 0/1 rewards: greedy accuracy).
  mean@k       mean reward of k samples per prompt (temperature / top-p sampling).
  pass@k       fraction of prompts with at least one sample of reward >= 1 (0/1 rewards).
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

from spro.data.prompts import render_prompt


def generate_completions(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Any],
    *,
    max_new_tokens: int = 96,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
    batch_size: int = 64,
    seed: int | None = None,
    progress: Any = None,
) -> tuple[list[list[str]], list[list[int]], list[list[bool]]]:
    """Generate for each prompt ``num_return_sequences`` completions.

    Prompts are rendered with :func:`spro.data.prompts.render_prompt` and left-padded in batches of
    ``batch_size`` prompts. Returns ``(texts, lengths, truncated)``, each a list (one per prompt) of
    lists (one per sequence): decoded text without special tokens, number of generated tokens
    before eos, and whether generation hit ``max_new_tokens`` without eos.
    ``progress``: optional callable(n_prompts_done) called after each batch.
    """
    import torch

    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if num_return_sequences < 1:
        raise ValueError(f"num_return_sequences (k) must be >= 1, got {num_return_sequences}")
    if do_sample and not (temperature > 0):
        raise ValueError(f"temperature must be > 0 for sampling, got {temperature}")
    if not (0 < top_p <= 1):
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")
    texts = [render_prompt(tokenizer, p) for p in prompts]
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    was_training = model.training
    model.eval()
    out_text: list[list[str]] = []
    out_len: list[list[int]] = []
    out_trunc: list[list[bool]] = []
    gen_kwargs: dict[str, Any] = dict(
        max_new_tokens=max_new_tokens,
        do_sample=do_sample,
        num_return_sequences=num_return_sequences,
        pad_token_id=pad_id,
        eos_token_id=eos_id,
    )
    if do_sample:
        gen_kwargs.update(temperature=temperature, top_p=top_p, top_k=0)
    else:
        gen_kwargs.update(temperature=None, top_p=None, top_k=None)
    device = next(model.parameters()).device
    try:
        if seed is not None:
            torch.manual_seed(seed)
        for start in range(0, len(texts), batch_size):
            chunk = texts[start : start + batch_size]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                seqs = model.generate(**enc, **gen_kwargs)
            gen = seqs[:, enc["input_ids"].shape[1] :]
            for i in range(len(chunk)):
                row_t, row_l, row_tr = [], [], []
                for j in range(num_return_sequences):
                    ids = gen[i * num_return_sequences + j].tolist()
                    n = ids.index(eos_id) if eos_id in ids else len(ids)
                    # Tokens after eos are padding; a response without eos is truncated.
                    row_t.append(tokenizer.decode(ids[:n], skip_special_tokens=True))
                    row_l.append(n)
                    row_tr.append(eos_id not in ids)
                out_text.append(row_t)
                out_len.append(row_l)
                out_trunc.append(row_tr)
            if progress is not None:
                progress(min(start + batch_size, len(texts)))
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return out_text, out_len, out_trunc


def _score(
    reward_fn: Callable[..., list[Any]], prompts: list[Any], completions: list[str], columns: dict[str, list[Any]]
) -> list[float | None]:
    """Call a TRL-convention reward (checked by ``spro.rewards.call_reward`` when available)."""
    try:
        from spro.rewards import call_reward
    except ImportError:  # pragma: no cover - rewards package always ships with spro
        call_reward = None
    if call_reward is not None:
        return call_reward(reward_fn, prompts, completions, **columns)
    scores = reward_fn(prompts, completions, **columns)
    if len(scores) != len(completions):
        raise ValueError(f"reward returned {len(scores)} scores for {len(completions)} completions")
    return [None if s is None else float(s) for s in scores]


def _mean(xs: Sequence[float | None]) -> float | None:
    """Mean of the non-None values (None if there are none)."""
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def evaluate(
    model: Any,
    tokenizer: Any,
    dataset: Any,
    reward_fn: Callable[..., list[Any]],
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
) -> dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` (needs a ``prompt`` column; other columns go to the reward).

    Greedy decoding gives pass@1; with ``k >= 1`` also ``k`` samples per prompt at
    ``temperature`` / ``top_p`` give mean@k and pass@k. Returns a JSON-able dict (see the module
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

    g_text, g_len, g_trunc = generate_completions(
        model, tokenizer, prompts, max_new_tokens=max_new_tokens, do_sample=False,
        batch_size=batch_size, progress=tick_factory(),
    )
    greedy = [t[0] for t in g_text]
    greedy_scores = _score(reward_fn, prompts, greedy, columns)
    none_count = sum(s is None for s in greedy_scores)
    result: dict[str, Any] = {
        "n": n,
        "pass@1": _mean(greedy_scores),
        "length_mean": sum(l[0] for l in g_len) / n,
        "truncated_frac": sum(t[0] for t in g_trunc) / n,
        "max_new_tokens": max_new_tokens,
        "k": k,
    }
    sample_scores: list[list[float]] = []
    if k:
        s_text, s_len, _ = generate_completions(
            model, tokenizer, prompts, max_new_tokens=max_new_tokens, do_sample=True,
            temperature=temperature, top_p=top_p, num_return_sequences=k,
            batch_size=max(1, batch_size // k), seed=seed, progress=tick_factory(),
        )
        flat_prompts = [p for p in prompts for _ in range(k)]
        flat_cols = {c: [v for v in vals for _ in range(k)] for c, vals in columns.items()}
        flat_scores = _score(reward_fn, flat_prompts, [t for row in s_text for t in row], flat_cols)
        none_count += sum(s is None for s in flat_scores)
        sample_scores = [flat_scores[i * k : (i + 1) * k] for i in range(n)]
        result.update({
            f"mean@{k}": _mean(flat_scores),
            f"pass@{k}": _pass_at(sample_scores, range(n)),
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
                entry[f"pass@{k}"] = _pass_at(sample_scores, idx)
            by[src] = entry
        result["by_source"] = by

    if step_checker is not None:
        wrong = [i for i in range(n) if greedy_scores[i] is not None and greedy_scores[i] < 1.0]
        right = [i for i in range(n) if greedy_scores[i] is not None and greedy_scores[i] >= 1.0]
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


def _pass_at(sample_scores: list[list[float | None]], idx: Any) -> float | None:
    """Fraction of the prompts in ``idx`` (with at least one scored sample) with a sample >= 1."""
    rows = [[s for s in sample_scores[i] if s is not None] for i in idx]
    rows = [r for r in rows if r]
    return sum(max(r) >= 1.0 for r in rows) / len(rows) if rows else None


def _num_steps(prompt: Any) -> int | None:
    """Number of operator steps of an arithmetic prompt (None if not one)."""
    try:
        from spro.data.tasks.arithmetic import parse_prompt

        return len(parse_prompt(prompt)[1])
    except (ValueError, TypeError):
        return None
