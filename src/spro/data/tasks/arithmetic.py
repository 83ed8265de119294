"""The built-in multi-step arithmetic task.

A problem is a left-to-right chain of additions and subtractions::

    prompt    "Q:48+26-2="
    solution  "48+26=74;74-2=72;A:72"
    answer    "72"

The solution is a chain of thought with one *step* per operator (``left op right=result``,
where ``left`` is the previous step's result, or the first operand for step 0, and ``right`` is
the next operand of the prompt), followed by the answer segment ``A:<int>``. Steps are
separated by ``;``.

* :func:`verify` / :func:`arithmetic_reward` judge only the final answer (outcome reward).
* :func:`first_wrong_step` judges every step (the ground truth for process rewards).

* :func:`step_spans` locates the segments in the completion text (for process diagnostics).

Registered as ``arithmetic`` (3-5 operands) and ``arithmetic_long`` (7-10 operands).

Splits: each problem goes to ``train``, ``validation`` or ``test`` by a hash of its prompt text
(bucket ``sha256(prompt) mod 20``: 0-1 test, 2-3 validation, the rest train), so the three splits
are disjoint by construction, whatever the seed or size asked for. Within a split problems are
drawn by a seeded RNG and de-duplicated.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

from spro.rewards import completion_text, limits_itself

SPLITS = ("train", "validation", "test")

_PROMPT_RE = re.compile(r"^\s*Q:\s*(-?\d+(?:\s*[+\-]\s*\d+)+)\s*=\s*$")
_TERM_RE = re.compile(r"([+\-])\s*(\d+)")
_STEP_RE = re.compile(r"^(-?\d+)([+\-])(\d+)=(-?\d+)$")
_ANSWER_SEG_RE = re.compile(r"^A:(-?\d+)$")
_ANSWER_RE = re.compile(r"A:\s*(-?\d+)(?!\d)")


def parse_prompt(prompt: str) -> tuple[list[int], list[str]]:
    """Split ``"Q:48+26-2="`` into operands ``[48, 26, 2]`` and operators ``["+", "-"]``.

    Raises ValueError if the prompt is not an arithmetic-task prompt.
    """
    m = _PROMPT_RE.match(prompt)
    if m is None:
        raise ValueError(f"not an arithmetic prompt (expected like 'Q:48+26-2='): {prompt!r}")
    body = m.group(1)
    first = re.match(r"-?\d+", body)
    assert first is not None
    operands = [int(first.group(0))]
    ops: list[str] = []
    for op, num in _TERM_RE.findall(body[first.end():]):
        ops.append(op)
        operands.append(int(num))
    return operands, ops


def _apply(a: int, op: str, b: int) -> int:
    return a + b if op == "+" else a - b


def solve(operands: Sequence[int], ops: Sequence[str]) -> tuple[str, int]:
    """The reference chain-of-thought solution and the final value."""
    cur = operands[0]
    parts = []
    for op, b in zip(ops, operands[1:]):
        nxt = _apply(cur, op, b)
        parts.append(f"{cur}{op}{b}={nxt}")
        cur = nxt
    parts.append(f"A:{cur}")
    return ";".join(parts), cur


def extract_answer(completion: Any) -> int | None:
    """The integer after the first ``A:`` in the completion, or None if there is none."""
    m = _ANSWER_RE.search(completion_text(completion))
    return int(m.group(1)) if m else None


def verify(completion: Any, answer: str | int) -> float:
    """1.0 if the completion's first ``A:<int>`` equals ``answer``, else 0.0."""
    got = extract_answer(completion)
    try:
        want = int(str(answer).strip())
    except ValueError as exc:
        raise ValueError(f"answer must be an integer, got {answer!r}") from exc
    return 1.0 if got is not None and got == want else 0.0


@limits_itself  # (linear in the completion)
def arithmetic_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str], **kw: Any) -> list[float]:
    """Outcome reward in TRL's convention: 1.0 per completion whose final answer is right, else 0.0.

    ``prompts`` is unused (present for the convention); extra dataset columns arrive in ``kw``.
    """
    if len(completions) != len(answer):
        raise ValueError(f"got {len(completions)} completions but {len(answer)} answers")
    return [verify(c, a) for c, a in zip(completions, answer)]


def first_wrong_step(prompt: str, completion: Any) -> int | None:
    """Index of the first wrong or malformed step of ``completion``, or None if every step is right.

    The completion is split on ``;`` (surrounding whitespace ignored). With ``n`` operators in the
    prompt, segment ``k < n`` must read exactly ``left op right=result`` where ``left`` is the
    first operand (k = 0) or the true running value after step k-1, ``op`` and ``right`` are the
    prompt's k-th operator and (k+1)-th operand, and ``result`` is ``left op right``. Segment
    ``n`` must read ``A:<int>`` with the true final value. Any deviation at segment k (bad
    number, wrong operand or operator, skipped or merged steps, garbage, or the completion ending
    before segment k) makes k the answer; so the answer is in ``0..n``. Text after the answer
    segment is ignored (as the verifier ignores it).
    """
    operands, ops = parse_prompt(prompt)
    text = completion_text(completion).strip()
    segs = [s.strip() for s in text.split(";")] if text else []
    cur = operands[0]
    for k, (op, b) in enumerate(zip(ops, operands[1:])):
        if k >= len(segs):
            return k
        m = _STEP_RE.match(segs[k])
        nxt = _apply(cur, op, b)
        if m is None or int(m.group(1)) != cur or m.group(2) != op or int(m.group(3)) != b or int(m.group(4)) != nxt:
            return k
        cur = nxt
    n = len(ops)
    if n >= len(segs):
        return n
    m = _ANSWER_SEG_RE.match(segs[n])
    if m is None or int(m.group(1)) != cur:
        return n
    return None


def step_spans(completion: Any) -> list[tuple[int, int]]:
    """Character spans ``(start, end)`` of the ``;``-separated segments of a completion (steps, then the
    answer segment), in the text ``completion_text(completion)``: segment k of
    :func:`first_wrong_step` is ``text[start:end]`` of span k (surrounding whitespace included)."""
    text = completion_text(completion)
    spans, start = [], 0
    for i, ch in enumerate(text):
        if ch == ";":
            spans.append((start, i))
            start = i + 1
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def split_of(prompt: str) -> str:
    """The split a prompt belongs to (by a hash of its text)."""
    bucket = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "big") % 20
    return "test" if bucket < 2 else "validation" if bucket < 4 else "train"


def _range_knob(name: str, value: Any, lo_min: int | None = None) -> tuple[int, int]:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be an int or a (min, max) pair of ints, got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    if not (isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in value)):
        raise ValueError(f"{name} must be an int or a (min, max) pair of ints, got {value!r}")
    lo, hi = int(value[0]), int(value[1])
    if lo > hi:
        raise ValueError(f"{name}: empty range ({lo}, {hi}), min must be <= max")
    if lo_min is not None and lo < lo_min:
        raise ValueError(f"{name} must be >= {lo_min}, got {value!r}")
    return lo, hi


@dataclass
class ArithmeticTask:
    """Seeded generator of chain-of-thought arithmetic problems (see the module docstring).

    Knobs (all checked; nonsense raises ValueError naming the knob):
      num_operands: operands per problem, an int or an inclusive (min, max) range, >= 2
        (default 3-5: 2-4 steps plus the answer, 15-40 characters per solution).
      value_range: inclusive (min, max) range of each operand, min >= 0 (default 0-9).
      operators: string of allowed operators, a non-empty subset of "+-".
      allow_negative: if False (default), a "-" that would make the running value negative is
        turned into "+", so every intermediate value is >= 0.
      seed: seed of the problem stream (the split a problem belongs to does not depend on it).
      train_size, validation_size, test_size: default number of problems per split.
    """

    num_operands: Any = (3, 5)
    value_range: Any = (0, 9)
    operators: str = "+-"
    allow_negative: bool = False
    seed: int = 0
    train_size: int = 20000
    validation_size: int = 2000
    test_size: int = 2000
    name: str = field(default="arithmetic", init=False)
    # the registered name of this task's verifier (spro.rewards.get_reward): the default data.rewards
    reward_name: ClassVar[str] = "arithmetic"

    def __post_init__(self) -> None:
        self.num_operands = _range_knob("num_operands", self.num_operands)
        if self.num_operands[0] < 2:
            raise ValueError(f"num_operands must be >= 2 (one step at least), got {self.num_operands!r}")
        self.value_range = _range_knob("value_range", self.value_range, lo_min=0)
        if not isinstance(self.operators, str) or not self.operators:
            raise ValueError(f"operators must be a non-empty string of '+' and '-', got {self.operators!r}")
        bad = set(self.operators) - set("+-")
        if bad:
            raise ValueError(f"operators: unsupported operator(s) {sorted(bad)}; allowed are '+' and '-'")
        self.operators = "".join(sorted(set(self.operators), key="+-".index))
        if not isinstance(self.allow_negative, bool):
            raise ValueError(f"allow_negative must be a bool, got {self.allow_negative!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        for knob in ("train_size", "validation_size", "test_size"):
            v = getattr(self, knob)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{knob} must be a positive int, got {v!r}")

    def knobs(self) -> dict[str, Any]:
        """The knobs as a JSON-able dict (for cache keys and reports)."""
        return {
            "num_operands": list(self.num_operands),
            "value_range": list(self.value_range),
            "operators": self.operators,
            "allow_negative": self.allow_negative,
            "seed": self.seed,
            "train_size": self.train_size,
            "validation_size": self.validation_size,
            "test_size": self.test_size,
        }

    def sample(self, rng: random.Random) -> dict[str, str]:
        """One problem drawn with ``rng``: dict with prompt, answer, solution."""
        n = rng.randint(*self.num_operands)
        lo, hi = self.value_range
        operands = [rng.randint(lo, hi) for _ in range(n)]
        ops = []
        cur = operands[0]
        for b in operands[1:]:
            op = rng.choice(self.operators)
            if op == "-" and not self.allow_negative and cur - b < 0:
                op = "+"
            ops.append(op)
            cur = _apply(cur, op, b)
        prompt = "Q:" + str(operands[0]) + "".join(f"{o}{b}" for o, b in zip(ops, operands[1:])) + "="
        solution, value = solve(operands, ops)
        return {"prompt": prompt, "answer": str(value), "solution": solution}

    def problems(self, split: str, n: int | None = None) -> list[dict[str, str]]:
        """``n`` distinct problems of ``split`` (default: the split's size knob), as dicts."""
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        if n is None:
            n = getattr(self, f"{split}_size")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        rng = random.Random(f"spro-arithmetic:{self.seed}:{split}")
        seen: set[str] = set()
        out: list[dict[str, str]] = []
        attempts, max_attempts = 0, 200 * n + 1000
        while len(out) < n:
            attempts += 1
            if attempts > max_attempts:
                raise ValueError(
                    f"the problem space is too small for {n} distinct {split} problems with knobs "
                    f"{self.knobs()}; widen value_range or num_operands, or ask for fewer"
                )
            p = self.sample(rng)
            if p["prompt"] in seen or split_of(p["prompt"]) != split:
                continue
            seen.add(p["prompt"])
            out.append(p)
        return out

    def split(self, split: str, n: int | None = None):
        """The split as a ``datasets.Dataset`` with columns prompt, answer, solution."""
        import datasets

        rows = self.problems(split, n)
        return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in ("prompt", "answer", "solution")})

    # Task protocol used by sft/eval.
    def reward(self, prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str], **kw: Any) -> list[float]:
        return arithmetic_reward(prompts, completions, answer, **kw)

    def first_wrong_step(self, prompt: str, completion: Any) -> int | None:
        return first_wrong_step(prompt, completion)

    def step_spans(self, completion: Any) -> list[tuple[int, int]]:
        return step_spans(completion)


@dataclass
class LongArithmeticTask(ArithmeticTask):
    """The arithmetic task with long chains: 7-10 operands (6-9 steps), a sparse outcome for small models."""

    num_operands: Any = (7, 10)
    name: str = field(default="arithmetic_long", init=False)
