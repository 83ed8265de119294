"""Offline process-reward diagnostics: how well does a trained policy's self-guided reward locate errors?

For a model (pi, e.g. an RL checkpoint) and a reference (pi_ref, e.g. its starting point) on a task
with a step checker: sample ``k`` responses per problem from the model, keep the wrong ones whose
first wrong step the checker finds, and score each signal's ability to point at that step (the
ProcessBench question, asked of an implicit PRM): top-1 (the lowest-scoring step is the first
wrong one) and AUROC (the first wrong step scores below the earlier, correct steps). Signals:

* ``self_reward``: SPRO's self-guided reward log pi - log pi_ref per token (beta does not change a
  ranking);
* ``msa``: its Masked Step Advantage over the k responses of a problem (needs k >= 2);
* ``policy_logp``: the model's own log-prob of each token (confidence, no reference);
* ``random``: a random score per token (a check of the chance levels).
"""

from __future__ import annotations

from typing import Any

import torch

from spro.algorithms.core import masked_step_advantage
from spro.models.logprobs import logps_no_grad
from spro.rewards.scoring import Scorer
from spro.rollout import HFGenerateBackend
from spro.trainer.diagnostics import first_error_sums, first_error_table, token_steps

__all__ = ["diagnose"]


def diagnose(model: Any, ref: Any, tokenizer: Any, task: Any, *, split: str = "test", n: int = 200, k: int = 4,
             temperature: float = 1.0, max_new_tokens: int = 96, batch_prompts: int = 32, seed: int = 0,
             chat_template: bool = False) -> dict:
    """The diagnostics table (a JSON-able dict: ``signals`` -> {n, top1, top1_chance, auroc, auroc_pairs},
    plus ``accuracy`` and counts) of ``model`` against ``ref`` on ``n`` problems of ``task``'s ``split``
    (``chat_template``: the prompts reach the models through the tokenizer's chat template; the step checker
    reads the task's own prompts)."""
    from spro.data.prompts import render_prompt

    if not (hasattr(task, "first_wrong_step") and hasattr(task, "step_spans")):
        raise ValueError(f"task {getattr(task, 'name', task)!r} has no step checker (first_wrong_step / step_spans)")
    if k < 1 or n < 1:
        raise ValueError(f"n and k must be >= 1, got n={n}, k={k}")
    torch.manual_seed(seed)
    ds = task.split(split, n=n)
    scorer = Scorer.of(task.reward)
    backend = HFGenerateBackend(model, tokenizer, max_new_tokens=max_new_tokens, temperature=temperature)
    sums = {name: torch.zeros(5, dtype=torch.float64) for name in ("self_reward", "msa", "policy_logp", "random")}
    correct_total = responses = 0
    lengths: dict[int, int] = {}
    gen = torch.Generator().manual_seed(seed)
    model.eval()
    for start in range(0, len(ds), batch_prompts):
        rows = ds.select(range(start, min(start + batch_prompts, len(ds))))
        prompts = list(rows["prompt"])
        batch = backend.generate([render_prompt(tokenizer, p, chat_template=chat_template) for p in prompts], k)
        flat = [p for p in prompts for _ in range(k)]
        cols = {c: [v for v in rows[c] for _ in range(k)] for c in rows.column_names if c != "prompt"}
        correct = scorer(flat, batch.completions, cols).correct
        correct_total += int(correct.sum())
        responses += len(flat)
        logp = logps_no_grad(model, batch, temperature=temperature, with_entropy=False, group_size=k)[0]
        ref_logp = logps_no_grad(ref, batch, temperature=temperature, with_entropy=False, group_size=k)[0]
        mask = batch.completion_mask.bool()
        ratio = (logp - ref_logp) * mask
        signals = {"self_reward": ratio, "policy_logp": logp * mask,
                   "random": torch.rand(mask.shape, generator=gen) * mask}
        if k >= 2:
            signals["msa"] = masked_step_advantage(ratio.cumsum(1) * mask, mask, batch.group_ids)
        spans = [task.step_spans(c) for c in batch.completions]
        first = []
        for p, c, ok in zip(flat, batch.completions, correct.tolist()):
            f = None if ok else task.first_wrong_step(p, c)
            first.append(-1 if f is None else f)
        steps = token_steps(tokenizer, batch.completion_ids.cpu(), batch.completion_mask.cpu(), spans, lengths)
        first_t, n_steps = torch.tensor(first, dtype=torch.long), torch.tensor([len(s) for s in spans])
        for name, sig in signals.items():
            sums[name] += first_error_sums(sig.cpu(), steps, first_t, n_steps)
    return {"task": getattr(task, "name", None), "split": split, "problems": len(ds), "samples_per_problem": k,
            "responses": responses, "accuracy": correct_total / max(responses, 1),
            "signals": first_error_table({k_: v for k_, v in sums.items() if k >= 2 or k_ != "msa"})}
