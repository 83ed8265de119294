"""The built-in multiplication task: long multiplication worked digit by digit.

A problem multiplies an ``a``-digit number by a ``b``-digit number; the solution writes one
partial product per digit of the second factor (least significant first), then adds them up
one at a time::

    prompt    "Q:123*45="
    solution  "123*5=615;123*40=4920;615+4920=5535;A:5535"
    answer    "5535"

A different structure from the arithmetic chain: independent partial products, then a running
sum, with carries. Steps are separated by ``;`` as there. :func:`first_wrong_step` compares each
segment with the reference solution's (the format is canonical, so a segment is right exactly
when it equals the reference one); the reward judges only the final ``A:<int>``.

Splits are disjoint by a hash of the prompt, as in ``spro.data.tasks.arithmetic``.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar, Sequence

from spro.data.tasks.arithmetic import SPLITS, _range_knob, arithmetic_reward, split_of, step_spans
from spro.rewards import completion_text

_PROMPT_RE = re.compile(r"^\s*Q:\s*(\d+)\s*\*\s*(\d+)\s*=\s*$")


def parse_prompt(prompt: str) -> tuple[int, int]:
    """``"Q:123*45="`` -> ``(123, 45)``; ValueError for anything else."""
    m = _PROMPT_RE.match(prompt)
    if m is None:
        raise ValueError(f"not a multiplication prompt (expected like 'Q:123*45='): {prompt!r}")
    return int(m.group(1)), int(m.group(2))


def solve(a: int, b: int) -> list[str]:
    """The reference solution's segments: partial products, running sums, ``A:<product>``."""
    segs, partials = [], []
    for k, d in enumerate(reversed(str(b))):
        part = a * int(d) * 10**k
        segs.append(f"{a}*{int(d) * 10**k}={part}")
        partials.append(part)
    total = partials[0]
    for part in partials[1:]:
        segs.append(f"{total}+{part}={total + part}")
        total += part
    segs.append(f"A:{total}")
    return segs


def first_wrong_step(prompt: str, completion: Any) -> int | None:
    """Index of the first segment that differs from the reference solution's (a missing segment counts),
    or None when every segment up to and including the answer is right; text after it is ignored."""
    ref = solve(*parse_prompt(prompt))
    text = completion_text(completion).strip()
    segs = [s.strip() for s in text.split(";")] if text else []
    for k, want in enumerate(ref):
        if k >= len(segs) or segs[k] != want:
            return k
    return None


@dataclass
class MultiplicationTask:
    """Seeded generator of long-multiplication problems (see the module docstring).

    Knobs: ``digits_a`` / ``digits_b``: digits of the two factors, an int or an inclusive (min, max)
    range (default 2-3 and 1-2: 1-3 partial-product and sum steps plus the answer); ``seed``;
    ``train_size``, ``validation_size``, ``test_size``.
    """

    digits_a: Any = (2, 3)
    digits_b: Any = (1, 2)
    seed: int = 0
    train_size: int = 20000
    validation_size: int = 2000
    test_size: int = 2000
    name: str = field(default="multiplication", init=False)
    # the registered name of this task's verifier (the same final "A:<int>" check): the default data.rewards
    reward_name: ClassVar[str] = "arithmetic"

    def __post_init__(self) -> None:
        self.digits_a = _range_knob("digits_a", self.digits_a, lo_min=1)
        self.digits_b = _range_knob("digits_b", self.digits_b, lo_min=1)
        for knob in ("seed", "train_size", "validation_size", "test_size"):
            v = getattr(self, knob)
            if isinstance(v, bool) or not isinstance(v, int) or (knob != "seed" and v < 1):
                raise ValueError(f"{knob} must be a{' positive' if knob != 'seed' else 'n'} int, got {v!r}")

    def knobs(self) -> dict[str, Any]:
        return {"digits_a": list(self.digits_a), "digits_b": list(self.digits_b), "seed": self.seed,
                "train_size": self.train_size, "validation_size": self.validation_size, "test_size": self.test_size}

    def sample(self, rng: random.Random) -> dict[str, str]:
        na, nb = rng.randint(*self.digits_a), rng.randint(*self.digits_b)
        a, b = rng.randint(10 ** (na - 1), 10**na - 1), rng.randint(10 ** (nb - 1), 10**nb - 1)
        segs = solve(a, b)
        return {"prompt": f"Q:{a}*{b}=", "answer": str(a * b), "solution": ";".join(segs)}

    def problems(self, split: str, n: int | None = None) -> list[dict[str, str]]:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
        n = getattr(self, f"{split}_size") if n is None else n
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        rng = random.Random(f"spro-multiplication:{self.seed}:{split}")
        seen: set[str] = set()
        out: list[dict[str, str]] = []
        for _ in range(200 * n + 1000):
            if len(out) == n:
                break
            p = self.sample(rng)
            if p["prompt"] not in seen and split_of(p["prompt"]) == split:
                seen.add(p["prompt"])
                out.append(p)
        if len(out) < n:
            raise ValueError(f"the problem space is too small for {n} distinct {split} problems with knobs "
                             f"{self.knobs()}; widen the digit ranges or ask for fewer")
        return out

    def split(self, split: str, n: int | None = None):
        import datasets

        rows = self.problems(split, n)
        return datasets.Dataset.from_dict({k: [r[k] for r in rows] for k in ("prompt", "answer", "solution")})

    def reward(self, prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[str], **kw: Any) -> list[float]:
        return arithmetic_reward(prompts, completions, answer, **kw)  # the same final "A:<int>" check

    def first_wrong_step(self, prompt: str, completion: Any) -> int | None:
        return first_wrong_step(prompt, completion)

    def step_spans(self, completion: Any) -> list[tuple[int, int]]:
        return step_spans(completion)
