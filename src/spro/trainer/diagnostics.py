"""Process-reward diagnostics, from tensors the trainer already has.

**Does a per-token signal locate the first wrong step?** On a task with a step checker (the
built-in tasks' ``first_wrong_step`` and ``step_spans``), every wrong response whose first wrong
step k is known is scored: a step's score is the sum of the signal over the step's tokens;

* ``diag/<signal>/first_error_top1``: how often the lowest-scoring step is step k (ties share the
  hit) (``diag/first_error_top1_chance``: the same for a random pick, the mean of 1 / number of steps);
* ``diag/<signal>/first_error_auroc``: how often step k scores below an earlier (correct) step of
  the same response, over all such pairs (ties count half; chance is 0.5).

Signals: ``self_reward`` = the step's process probe, SPRO's self-guided reward beta * (log pi_old -
log pi_ref) (of the policy that sampled the batch, for every algorithm; ``spro.algorithms.probes``),
``msa`` = the probe's process term (the Masked Step Advantage by default), the algorithm's own
signals (``Algorithm.diagnostic_signals``; PRIME: ``prm`` = its implicit reward log pi_phi - log
pi_ref), and ``advantage`` = the advantage the update used.

**Drift** (where the outcome is sparse): ``drift/zero_var_adv_share`` is the share of sum |advantage|
that falls on responses of groups whose outcomes are all equal; ``drift/msa_logratio_corr`` the
correlation, over valid tokens, between the probe's process term and its log-ratio to the reference
(the reference that trains), and
``drift/msa_logratio_corr_zero_var`` the same within those groups (positive: the process term
rewards what the policy already prefers over the reference, a feedback loop).
"""

from __future__ import annotations

from typing import Any

import torch

from spro.algorithms.core import _check_groups, _zero_variance_groups
from spro.algorithms.registry import ProcessSignal

__all__ = ["ProcessDiagnostics", "first_error_sums", "first_error_table", "token_steps"]

Tensor = torch.Tensor


def token_steps(tokenizer: Any, completion_ids: Tensor, mask: Tensor, spans: list[list[tuple[int, int]]],
                cache: dict[int, int] | None = None) -> Tensor:
    """``[B, T]`` long: the step each response token belongs to (-1: none), from the steps' character spans
    in the decoded text (each token's characters are found by decoding the tokens one by one; ``cache``
    keeps their lengths)."""
    cache = {} if cache is None else cache
    out = torch.full(completion_ids.shape, -1, dtype=torch.long)
    for i, row_spans in enumerate(spans):
        n = int(mask[i].sum())
        pos = 0
        for t, tid in enumerate(completion_ids[i, :n].tolist()):
            if tid not in cache:
                cache[tid] = len(tokenizer.decode([tid], skip_special_tokens=True))
            length = cache[tid]
            mid = pos + max(length - 1, 0) / 2  # a token spanning a boundary goes where its middle is
            for k, (a, b) in enumerate(row_spans):
                if a <= mid < b:
                    out[i, t] = k
                    break
            pos += length
    return out


def first_error_sums(signal: Tensor, steps: Tensor, first_wrong: Tensor, n_steps: Tensor) -> Tensor:
    """``[5]`` sums over the responses with ``0 <= first_wrong < n_steps``: top-1 hits (a tie for the lowest
    score counts 1 / the number of tied steps), responses, chance (sum of 1 / n_steps), AUROC wins (ties
    half), AUROC pairs.

    signal, steps: ``[B, T]`` (steps -1 outside a step); first_wrong, n_steps: ``[B]`` long.
    """
    out = torch.zeros(5, dtype=torch.float64)
    S = int(n_steps.max()) if n_steps.numel() else 0
    if S == 0:
        return out
    valid = steps >= 0
    scores = torch.zeros(signal.shape[0], S, dtype=torch.float64)
    scores.scatter_add_(1, steps.clamp(min=0), torch.where(valid, signal.double(), 0.0))
    for i in range(signal.shape[0]):
        k, n = int(first_wrong[i]), int(n_steps[i])
        if not 0 <= k < n:
            continue
        row = scores[i, :n]
        lowest = row == row.min()
        out[0] += float(lowest[k]) / float(lowest.sum())  # ties share the hit, as a random tie-break would
        out[1] += 1
        out[2] += 1.0 / n
        if k > 0:
            earlier = row[:k]
            out[3] += float((row[k] < earlier).sum() + 0.5 * (row[k] == earlier).sum())
            out[4] += k
    return out


def first_error_table(sums: dict[str, Tensor]) -> dict[str, dict[str, float | None]]:
    """``{signal: first_error_sums(...)}`` -> ``{signal: {n, top1, top1_chance, auroc, auroc_pairs}}``."""
    table = {}
    for name, t in sums.items():
        n, pairs = float(t[1]), float(t[4])
        table[name] = {"n": n, "top1": float(t[0]) / n if n else None, "top1_chance": float(t[2]) / n if n else None,
                       "auroc": float(t[3]) / pairs if pairs else None, "auroc_pairs": pairs}
    return table


class ProcessDiagnostics:
    """The ``diag/*`` and ``drift/*`` metrics of a step (see the module docstring).

    ``task``: an object with ``first_wrong_step(prompt, completion)`` and ``step_spans(completion)``
    (None: no ``diag/*`` metrics, only ``drift/*``).
    """


    def __init__(self, task: Any, tokenizer: Any, own_signals: tuple[str, ...] = (),
                 task_prompts: dict[str, str] | None = None) -> None:
        """``own_signals``: the names of the algorithm's signals (``Algorithm.diagnostic_names``);
        ``task_prompts``: the task's prompt of each rendered prompt the model saw (with ``data.chat_template``
        a prompt reaches the model through the chat template, and the step checker reads the task's own)."""
        self.signals = ("self_reward", "msa", *own_signals, "advantage")
        self.task_prompts = task_prompts or {}
        ok = task is not None and hasattr(task, "first_wrong_step") and hasattr(task, "step_spans")
        self.task, self.tok = (task, tokenizer) if ok else (None, tokenizer)
        self._lengths: dict[int, int] = {}

    def _first_wrong(self, prompt: str, completion: str) -> int:
        try:
            k = self.task.first_wrong_step(prompt, completion)
        except ValueError:  # not a prompt of this task
            return -1
        return -1 if k is None else k

    def _steps(self, batch: Any, correct: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(token steps [B, T], first wrong step [B] (-1: right or unknown), number of steps [B])."""
        spans = [self.task.step_spans(c) for c in batch.completions]
        first = [-1 if ok else self._first_wrong(self.task_prompts.get(p, p), c)
                 for p, c, ok in zip(batch.prompts, batch.completions, correct.tolist())]
        steps = token_steps(self.tok, batch.completion_ids.cpu(), batch.completion_mask.cpu(), spans, self._lengths)
        return steps, torch.tensor(first, dtype=torch.long), torch.tensor([len(s) for s in spans], dtype=torch.long)

    def __call__(self, acc: Any, full: Any, kept: Any, kept_rows: Tensor | None, adv: Tensor | None,
                 probe: ProcessSignal | None, own: dict[str, Tensor] | None = None) -> dict[str, float | None]:
        """``full`` / ``kept``: the step's sampled and trained ``Step`` (``kept`` None: none trained),
        ``kept_rows``: the rows of ``full`` that ``kept`` holds; ``probe``: the step's process probe on
        ``full`` (None: no reference model); ``own``: the algorithm's signals on ``kept``'s rows."""
        x = full.x
        out: dict[str, float | None] = {}
        signals: dict[str, tuple[Tensor, Tensor]] = {}  # name -> (signal [b, T], rows of the full batch)
        all_rows = torch.arange(x.mask.shape[0])
        if probe is not None:
            signals["self_reward"] = (probe.reward, all_rows)
            signals["msa"] = (probe.term, all_rows)
            out.update(self._drift(probe, x))
        if kept is not None and adv is not None:
            rows = kept_rows.cpu()
            for name, sig in (own or {}).items():
                if name not in self.signals:
                    raise ValueError(f"diagnostic signal {name!r} is not among the algorithm's diagnostic_names "
                                     f"{self.signals[2:-1]}")
                signals[name] = (sig, rows)
            signals["advantage"] = (adv, rows)
            out["drift/zero_var_adv_share"] = _zero_var_share(adv, kept.x)
        if self.task is not None:
            steps, first, n_steps = self._steps(full.batch, x.correct.cpu())
            chance = None
            for name in self.signals:  # the same names on every process (each reduce is collective)
                sums = torch.zeros(5, dtype=torch.float64)
                if name in signals:
                    sig, rows = signals[name]
                    sums = first_error_sums(sig.detach().cpu(), steps[rows], first[rows], n_steps[rows])
                sums = acc.reduce(sums.to(acc.device), "sum").cpu()
                if name in signals or float(sums[1]) > 0:
                    out[f"diag/{name}/first_error_top1"] = float(sums[0] / sums[1]) if sums[1] > 0 else None
                    out[f"diag/{name}/first_error_auroc"] = float(sums[3] / sums[4]) if sums[4] > 0 else None
                    out[f"diag/{name}/n"] = float(sums[1])
                if name == "self_reward" and sums[1] > 0:
                    chance = float(sums[2] / sums[1])
            out["diag/first_error_top1_chance"] = chance
        return out

    @staticmethod
    def _drift(probe: ProcessSignal, x: Any) -> dict[str, float | None]:
        m = x.mask
        process, ratio = probe.term, probe.logratio
        zero_var = _zero_variance_groups(x.rewards.double(), _check_groups(x.group_ids, m.shape[0], m.device))
        return {
            "drift/msa_logratio_corr": _corr(process[m], ratio[m]),
            "drift/msa_logratio_corr_zero_var": _corr(process[m & zero_var[:, None]], ratio[m & zero_var[:, None]]),
        }


def _corr(a: Tensor, b: Tensor) -> float | None:
    if a.numel() < 3 or float(a.std()) == 0 or float(b.std()) == 0:
        return None
    return float(torch.corrcoef(torch.stack([a.double(), b.double()]))[0, 1])


def _zero_var_share(adv: Tensor, x: Any) -> float | None:
    total = float(adv.abs()[x.mask].sum())
    if total == 0:
        return None
    zero_var = _zero_variance_groups(x.rewards.double(), _check_groups(x.group_ids, x.mask.shape[0], x.mask.device))
    return float(adv.abs()[x.mask & zero_var[:, None]].sum()) / total
