"""Math reward: pull the final answer out of a completion and compare it with the ground truth
using ``math-verify`` (symbolic equivalence: ``1/2`` = ``0.5`` = ``\\frac{1}{2}``, sets, intervals,
percentages, ...).

Answer extraction (:func:`extract_answer`), first rule that matches wins:

1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (nested braces handled);
2. the last ``#### X`` (GSM8K style), X = rest of that line;
3. the last "the answer is X" / "answer: X" (case-insensitive), X = rest of that line;
4. the last ``A:`` followed by an answer (the arithmetic task's ``...;A:76`` style);
5. the last number in the text.

Time limits. A completion is written by the policy, so everything done with it counts against
one limit per (completion, answer) pair: answer extraction (linear-time, on at most the last
``max_chars`` characters, 16 KiB by default) *and* verification. math-verify's own time-outs use
``signal.alarm`` and fail off the main thread, so spro always calls it with
``parsing_timeout=None`` / ``timeout_seconds=None`` and enforces the limit itself:

* in the main thread of any process (also inside worker processes): a ``SIGALRM`` interval
  timer (``setitimer``, sub-second) around extraction + parse + verify;
* anywhere else (other threads), or with ``workers >= 1``: the pair is graded in a worker
  process (a plain ``python -c`` subprocess speaking JSON lines, grading in its own main thread
  with the timer above); the parent waits at most ``timeout + 2 s`` for the answer (plus 60 s
  for a fresh worker's start-up on its first pair), and a worker
  stuck past that (e.g. in C code the timer cannot interrupt) is killed and replaced.

So a degenerate completion (100 KB of unclosed ``\\boxed{``, or ``"$."`` repeated) costs at most
the time limit. A call as a whole stays within the budget of ``spro.rewards.reward_budget`` (the
trainer's ``data.reward_timeout``): no row is graded once it is spent, a row's limit is cut to what
is left, and the rows not graded (or cut short) score None, counted as ``math/batch_budget``.

Scoring rule: no ground truth (None/empty) -> ``None`` (counted as ``math/no_gold``); no answer
found in the completion -> 0.0 (``math/no_answer``); grader time-out -> 0.0 (``math/timeout``,
with a warning naming the row); otherwise 1.0 if equivalent else 0.0. An answer is graded only
as a whole: one that math-verify's LaTeX parser does not read entirely, or that holds several
alternatives (``72 \\lor 73``, ``72|73``, ``72 \\text{ (or 73)}``), scores 0.0; golds that are not
mathematics (names) are compared by spelling only.

Why over 600 lines: extraction, grading and the two time-limit mechanisms (the in-process timer
and the worker processes that stand in for it off the main thread) belong to one guarantee, a
row costs at most its limit, and are kept together.
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import functools
import logging
import math as _math
import json
import os
import queue
import re
import select
import signal
import subprocess
import sys
import threading
import time
import warnings
import weakref
from typing import Any, Sequence

from spro.rewards import budget_left, completion_text, count_event, limits_itself, register_reward

__all__ = [
    "extract_boxed",
    "extract_answer",
    "normalize_gold",
    "grade_answer",
    "MathGrader",
    "GradeTimeout",
    "make_math_reward",
    "math_reward",
    "MAX_CHARS",
]

# math-verify logs a warning every time the timeout is disabled; we handle time-outs ourselves.
logging.getLogger("math_verify").setLevel(logging.ERROR)
logging.getLogger("math_verify.parser").setLevel(logging.ERROR)
logging.getLogger("math_verify.grader").setLevel(logging.ERROR)


class GradeTimeout(BaseException):
    """Grading ran past its limit. A BaseException so that math-verify's ``except Exception``
    handlers cannot swallow it."""


# ------------------------------------------------------------------------------------------
# Extraction
# ------------------------------------------------------------------------------------------
_BOX_RE = re.compile(r"\\(?:boxed|fbox)\s*\{")


def _closing_braces(text: str, start: int) -> dict[int, int]:
    """Index of each ``{`` at or after ``start`` -> index of its matching ``}`` (a backslash
    escapes the next character), in one pass."""
    close: dict[int, int] = {}
    stack: list[int] = []
    j, n = start, len(text)
    while j < n:
        c = text[j]
        if c == "\\" and j + 1 < n:
            j += 2
            continue
        if c == "{":
            stack.append(j)
        elif c == "}" and stack:
            close[stack.pop()] = j
        j += 1
    return close


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), nested braces matched.

    ``\\boxed 5`` (no braces) gives ``"5"``. Unbalanced braces -> None. Linear in the length
    of the text (completions are written by the policy; a degenerate one must stay cheap).
    """
    matches = list(_BOX_RE.finditer(text))
    if not matches:
        m = list(re.finditer(r"\\boxed\s+([^\s$]+)", text))
        return m[-1].group(1) if m else None
    close = _closing_braces(text, matches[0].end() - 1)
    for m in reversed(matches):
        j = close.get(m.end() - 1)
        if j is not None:
            return text[m.end():j].strip()
    return None


_NUM_RE = re.compile(r"-?\d[\d,]*(?:\.\d+)?(?:/\d+)?|-?\.\d+")
_ANSWER_IS_RE = re.compile(r"(?:the\s+(?:final\s+)?answer\s+is|answer\s*:)\s*:?\s*(.+)", re.IGNORECASE)
_A_RE = re.compile(r"(?:^|[\s;:,.])A:\s*([^\s;].*)")


def _clean(s: str) -> str:
    """Strip white space and ``$`` on the left, white space, ``$`` and ``.`` on the right (one
    linear pass each way)."""
    i, j = 0, len(s)
    while i < j and (s[i] == "$" or s[i].isspace()):
        i += 1
    while j > i and (s[j - 1] in ".$" or s[j - 1].isspace()):
        j -= 1
    return s[i:j]


def extract_answer(text: str | None) -> str | None:
    """The final answer written in ``text`` (rules in the module docstring), or None."""
    if not text:
        return None
    b = extract_boxed(text)
    if b is not None and b.strip():
        return b.strip()
    idx = text.rfind("####")
    if idx >= 0:
        line = text[idx + 4:].strip().split("\n", 1)[0]
        if _clean(line):
            return _clean(line)
    ms = list(_ANSWER_IS_RE.finditer(text))
    if ms:
        line = ms[-1].group(1).split("\n", 1)[0]
        if _clean(line):
            return _clean(line)
    ms = list(_A_RE.finditer(text))
    if ms:
        line = ms[-1].group(1).split("\n", 1)[0].split(";", 1)[0]
        if _clean(line):
            return _clean(line)
    nums = _NUM_RE.findall(text)
    if nums:
        return nums[-1].replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", nums[-1]) else nums[-1]
    return None


def normalize_gold(gold: Any) -> str | None:
    """Ground truth as a bare answer string: ``\\boxed{}`` and ``$`` stripped, GSM8K ``#### n``
    reduced to ``n``; None/empty -> None. Lists (several accepted answers) are not handled here."""
    if gold is None:
        return None
    if isinstance(gold, float) and _math.isnan(gold):
        return None
    s = str(gold).strip()
    if not s:
        return None
    if "\\boxed" in s or "\\fbox" in s:
        b = extract_boxed(s)
        if b:
            s = b
    if "####" in s:
        s = s.rsplit("####", 1)[1].strip() or s
    s = _clean(s)
    return s or None


# ------------------------------------------------------------------------------------------
# Grading
# ------------------------------------------------------------------------------------------
_TEXT_RE = re.compile(r"\\(?:text|textbf|textit|mbox|mathrm)\s*\{([^{}]*)\}")


def _plain(s: str) -> str:
    """Spelling-only normalisation for answers math-verify cannot read: LaTeX spacing and sizing
    commands, ``\\text{}`` wrappers, white space and case. Nothing that changes a value (no
    leading ``.`` or brackets are stripped: ``.5`` never becomes ``5``)."""
    s = s.replace("\\left", "").replace("\\right", "").replace("\\!", "").replace("\\,", "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = _TEXT_RE.sub(lambda m: m.group(1), s)
    return re.sub(r"\s+", "", s).strip("$").lower()


# Several alternatives in one answer ("72 \\lor 73", "72|73", "72 \\text{ (or 73)}", "72 or 73"):
# graded as wrong, whatever the gold (unless the gold itself is written so).
_HEDGE_RE = re.compile(r"\\lor|\\vee|\bor\b|\d\s*\|\s*-?\d|\\(?:text|textbf|textit|mbox|mathrm)\s*\{[^{}]*\d",
                       re.IGNORECASE)


def _hedged(pred: str, gold: str) -> bool:
    return bool(_HEDGE_RE.search(pred)) and not _HEDGE_RE.search(gold)


def _is_math(parsed: tuple) -> bool:
    return any(not isinstance(x, str) for x in parsed)


@functools.lru_cache(maxsize=4096)
def _parse(s: str, strict: bool = False) -> tuple:
    """math-verify's parse; ``strict``: LaTeX extraction only, so that an answer that does not
    parse as a whole gives no value (math-verify's expression fallback would grade a fragment:
    ``5 + \\undefined{3}`` as ``5``)."""
    from math_verify import LatexExtractionConfig, parse

    if strict:
        return tuple(parse("$" + s + "$", parsing_timeout=None, extraction_config=[LatexExtractionConfig()]))
    return tuple(parse("$" + s + "$", parsing_timeout=None))


def _grade_unlimited(pred: str, gold: str) -> bool:
    """Equivalence of two answer strings with math-verify, no time limit. The answer must parse
    as a whole (no fragment is graded) and hold one alternative; where the gold is not
    mathematics math-verify reads (a name), the answer must spell it (:func:`_plain`)."""
    from math_verify import verify

    if _hedged(pred, gold):
        return False
    g = _parse(gold)
    if _is_math(g):
        p = _parse(pred, strict=True)
        return _is_math(p) and bool(verify(list(g), list(p), timeout_seconds=None))
    return _plain(pred) == _plain(gold) and bool(_plain(gold))


def _can_use_alarm() -> bool:
    return threading.current_thread() is threading.main_thread() and hasattr(signal, "setitimer")


_WARM = False
# One pair of each common kind: sympy imports parts of itself on first use, which on a busy
# machine can take seconds; paid here, not out of the first such row's time limit.
_WARMUP_PAIRS = (("1", "1"), ("\\frac{1}{2}", "0.5"), ("\\{1, 2\\}", "\\{2, 1\\}"), ("x^2+1", "1+x^{2}"),
                 ("\\sqrt{8}", "2\\sqrt{2}"), ("10\\%", "0.1"), ("(0, 1]", "(0,1]"), ("x = 4", "4"))

MAX_CHARS = 16384
"""Default number of characters, from the end of a completion, that answer extraction examines."""


def _warmup() -> None:
    """Import math-verify and run it on one pair of each common kind, so that its one-off start-up
    costs (imports, grammar set-up: seconds on a busy machine) are not charged to a row's limit."""
    global _WARM
    if not _WARM:
        for p, g in _WARMUP_PAIRS:
            try:
                _grade_unlimited(p, g)
            except Exception:  # pragma: no cover - warm-up only
                pass
        _WARM = True


def _with_alarm(fn: Any, timeout: float) -> Any:
    """``fn()`` in the current (main) thread under a SIGALRM interval timer."""
    _warmup()

    def handler(signum: int, frame: Any) -> None:
        raise GradeTimeout()

    old = signal.signal(signal.SIGALRM, handler)
    old_timer = signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        if old_timer[0] > 0:  # re-arm an outer timer that was running
            signal.setitimer(signal.ITIMER_REAL, *old_timer)


def _grade_with_alarm(pred: str, gold: str, timeout: float) -> bool:
    """Grade in the current (main) thread under a SIGALRM interval timer."""
    return _with_alarm(lambda: _grade_unlimited(pred, gold), timeout)


NO_ANSWER = "no_answer"
BUDGET = "batch_budget"  # (a row not graded, or cut short, because the call's budget was spent)


def _cut(limit: float, deadline: float | None) -> float:
    """``limit`` cut to the time left before ``deadline`` (None: no deadline)."""
    return limit if deadline is None else min(limit, deadline - time.monotonic())


def _grade_text(text: str, gold: str) -> bool | str:
    """Extract the answer from (the tail of) a completion and grade it; ``NO_ANSWER`` if none."""
    pred = extract_answer(text)
    if pred is None:
        return NO_ANSWER
    return _grade_unlimited(pred, gold)


def _grade_limited(kind: str, text: str, gold: str, timeout: float) -> bool | str | None:
    """Grade one item under the alarm, in the main thread: ``kind`` "text" (a completion: extract,
    then grade) or "pair" (an extracted answer). None = timed out; an error in math-verify = False."""
    fn = _grade_text if kind == "text" else _grade_unlimited
    try:
        return _with_alarm(lambda: fn(text, gold), timeout)
    except GradeTimeout:
        return None
    except Exception:
        return False


def grade_answer(pred: str | None, gold: str | None, *, timeout: float | None = 5.0) -> bool:
    """True if answer string ``pred`` is equivalent to ``gold``.

    In the main thread the limit is a SIGALRM timer; in other threads the pair is graded in the
    shared one-worker process pool. Raises :class:`GradeTimeout` past ``timeout`` seconds
    (``None`` = no limit).
    """
    if pred is None or gold is None:
        return False
    if timeout is None:
        return _grade_unlimited(pred, gold)
    if _can_use_alarm():
        return _grade_with_alarm(pred, gold, timeout)
    r = _shared_pool().grade_items([("pair", pred, gold, timeout)])[0]
    if r is None:
        raise GradeTimeout()
    return bool(r)


class _Worker:
    """One grading process (``python -c`` running :func:`_serve`), spoken to in JSON lines.

    A plain subprocess rather than ``multiprocessing`` so that it works from any caller (no
    ``if __name__ == "__main__"`` guard needed, no fork of a threaded parent).
    """

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self._buf = b""
        self._warm = False

    def _start(self) -> subprocess.Popen:
        if self.proc is None or self.proc.poll() is not None:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from spro.rewards.math import _serve; _serve()"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            )
            self._buf = b""
        return self.proc

    def _readline(self, timeout: float) -> bytes:
        """The worker's next answer line, or b"" if none arrives within ``timeout`` seconds (or it
        died). Reads the pipe's file descriptor directly: behind a buffered reader, a second line
        that arrived with the first would wait unseen by select() and look like a hang."""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return b""
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return b""
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    def grade_batch(self, items: Sequence[tuple[str, str, str, float]], deadline: float | None = None
                    ) -> list[bool | str | None]:
        """Grade ``items`` (``(kind, text, gold, timeout)``, kind ``"pair"`` for an extracted
        answer or ``"text"`` for a completion) in one round trip; the answer to each must arrive
        within its ``timeout + 2 s`` of the previous one. An item that does not answer in time gets
        None, the worker is killed and the rest of the batch goes to a fresh worker. Past ``deadline``
        (``time.monotonic()``) the worker is killed and the items left get ``BUDGET``."""
        out: list[bool | str | None] = []
        todo = list(items)
        while todo:
            if deadline is not None and deadline - time.monotonic() <= 0:  # (nothing of todo sent yet)
                return out + [BUDGET] * len(todo)
            proc = self._start()
            slack = 2.0 + (0.0 if self._warm else 60.0)
            try:
                proc.stdin.write((json.dumps([list(it) for it in todo]) + "\n").encode())  # type: ignore[union-attr]
                proc.stdin.flush()  # type: ignore[union-attr]
            except (OSError, ValueError):
                self.kill()
                out.append(None)
                todo = todo[1:]
                continue
            done = 0
            for item in todo:
                wait = item[3] + slack if deadline is None else min(item[3] + slack, deadline - time.monotonic())
                try:
                    line = self._readline(wait)
                except (OSError, ValueError):
                    line = b""
                if not line:
                    if deadline is not None and deadline - time.monotonic() <= 0:
                        self.kill()
                        return out + [BUDGET] * (len(todo) - done)
                    break
                self._warm = True
                slack = 2.0
                r = json.loads(line)
                out.append(r if r in (None, NO_ANSWER) else bool(r))
                done += 1
            if done < len(todo):  # the pair at index `done` hung: drop it, restart, go on
                self.kill()
                out.append(None)
                done += 1
            todo = todo[done:]
        return out

    def kill(self) -> None:
        if self.proc is not None:
            try:
                self.proc.kill()
                self.proc.wait()
                for f in (self.proc.stdin, self.proc.stdout):
                    if f is not None:
                        f.close()
            except OSError:
                pass
            self.proc = None
            self._warm = False
            self._buf = b""


def _serve() -> None:
    """Worker loop: each input line is a JSON list of ``[kind, text, gold, timeout]``; one output
    line per item, ``true``/``false``/``null`` (null = timed out) or ``"no_answer"``."""
    _warmup()
    for line in sys.stdin:
        for kind, text, gold, timeout in json.loads(line):
            r = _grade_limited(kind, text, gold, timeout)
            sys.stdout.write(json.dumps(r) + "\n")
            sys.stdout.flush()


_ALL_POOLS: "weakref.WeakSet[_Pool]" = weakref.WeakSet()


@atexit.register
def _close_all_pools() -> None:
    for p in list(_ALL_POOLS):
        p.close()


class _Pool:
    """``workers`` grading processes; a worker that does not answer in time is killed and
    replaced on next use."""

    def __init__(self, workers: int):
        self.workers = max(1, int(workers))
        self._free: queue.Queue[_Worker] = queue.Queue()
        for _ in range(self.workers):
            self._free.put(_Worker())
        _ALL_POOLS.add(self)

    def _batch(self, items: Sequence[tuple[str, str, str, float]], deadline: float | None = None
               ) -> list[bool | str | None]:
        w = self._free.get()
        try:
            return w.grade_batch(items, deadline)
        finally:
            self._free.put(w)

    def grade_items(self, items: Sequence[tuple[str, str, str, float]], deadline: float | None = None
                    ) -> list[bool | str | None]:
        """Grade in ``workers`` processes at once, in chunks of at most 64 items (``deadline``: see
        :meth:`_Worker.grade_batch`)."""
        if not items:
            return []
        size = max(1, min(64, -(-len(items) // self.workers)))
        chunks = [list(items[i:i + size]) for i in range(0, len(items), size)]
        if self.workers == 1 or len(chunks) == 1:
            res = [self._batch(c, deadline) for c in chunks]
        else:
            with cf.ThreadPoolExecutor(self.workers) as ex:
                res = list(ex.map(lambda c: self._batch(c, deadline), chunks))
        return [r for chunk in res for r in chunk]

    def warm(self) -> None:
        """Start every worker process and wait until each has math-verify loaded."""
        ws = [self._free.get() for _ in range(self.workers)]
        try:
            with cf.ThreadPoolExecutor(self.workers) as ex:
                list(ex.map(lambda w: w.grade_batch([("pair", "1", "1", 5.0)]), ws))
        finally:
            for w in ws:
                self._free.put(w)

    def close(self) -> None:
        ws = []
        while not self._free.empty():
            ws.append(self._free.get())
        for w in ws:
            w.kill()
            self._free.put(w)


_SHARED: _Pool | None = None
_SHARED_LOCK = threading.Lock()


def _shared_pool() -> _Pool:
    global _SHARED
    with _SHARED_LOCK:
        if _SHARED is None:
            _SHARED = _Pool(1)
        return _SHARED


class MathGrader:
    """Grades completions against ground-truth answers.

    Args:
        timeout: seconds per (completion, answer) pair, answer extraction included; past it the
            pair scores as wrong.
        workers: 0 = grade in this process (SIGALRM timer in the main thread, a one-worker
            process pool from other threads); N >= 1 = a pool of N spawned processes, graded in
            parallel.
        max_chars: answer extraction looks at most at this many characters from the end of a
            completion (where the final answer is); the rest is never examined.
    """

    def __init__(self, timeout: float = 5.0, workers: int = 0, max_chars: int = MAX_CHARS):
        if timeout is None or timeout <= 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout}")
        if max_chars < 1:
            raise ValueError(f"max_chars must be positive, got {max_chars}")
        self.timeout = float(timeout)
        self.workers = int(workers)
        self.max_chars = int(max_chars)
        self._pool = _Pool(workers) if workers >= 1 else None

    def grade(self, completions: Sequence[Any], golds: Sequence[Any],
              timeout: float | Sequence[float] | None = None) -> list[bool | None]:
        """Per row: True/False, or None where the ground truth is missing or the call's budget
        (``spro.rewards.budget_left``) was spent before the row was graded. Time-outs -> False.

        ``timeout`` overrides the grader's limit for this call: one number, or one per row."""
        n = len(completions)
        if len(golds) != n:
            raise ValueError(f"{n} completions but {len(golds)} answers")
        limits = [self.timeout] * n if timeout is None else (
            [float(timeout)] * n if isinstance(timeout, (int, float)) else [float(t) for t in timeout])
        if len(limits) != n or any(not t > 0 for t in limits):
            raise ValueError(f"timeout must be a positive number or one per row ({n}), got {timeout!r}")
        left = budget_left()
        deadline = None if left is None else time.monotonic() + left
        golds_n = [normalize_gold(g) for g in golds]
        out: list[bool | None] = [None] * n
        todo: list[int] = []
        for i, g in enumerate(golds_n):
            if g is None:
                count_event("math/no_gold")
                warnings.warn(f"math reward: row {i} has no ground-truth answer; reward None", stacklevel=3)
            else:
                todo.append(i)
        items = [("text", self._tail(completions[i]), golds_n[i], limits[i]) for i in todo]
        if self._pool is None and _can_use_alarm():
            res = [self._graded_here(it, deadline) for it in items]
        else:
            sent = [it[:3] + (max(_cut(it[3], deadline), 1e-3),) for it in items]
            res = (self._pool or _shared_pool()).grade_items(sent, deadline)  # type: ignore[arg-type]
            res = [BUDGET if r is None and s[3] < it[3] else r for r, s, it in zip(res, sent, items)]
        for i, r in zip(todo, res):
            if r == BUDGET:
                count_event("math/batch_budget")
                out[i] = None
            elif r is None:
                out[i] = self._timed_out(i, limits[i])
            elif r == NO_ANSWER:
                count_event("math/no_answer")
                out[i] = False
            else:
                out[i] = bool(r)
        return out

    @staticmethod
    def _graded_here(item: tuple[str, str, str, float], deadline: float | None) -> bool | str | None:
        """One item in this (main) thread, its limit cut to the time left before ``deadline``; ``BUDGET`` when none
        is left or the cut limit ran out."""
        limit = _cut(item[3], deadline)
        if limit <= 0:
            return BUDGET
        r = _grade_limited(item[0], item[1], item[2], limit)
        return BUDGET if r is None and limit < item[3] else r

    def _tail(self, completion: Any) -> str:
        text = completion if isinstance(completion, str) else completion_text(completion)
        return text[-self.max_chars:]

    def warm(self) -> None:
        """Pay the start-up cost now (load math-verify here, or start every worker process)."""
        if self._pool is not None:
            self._pool.warm()
        else:
            _warmup()

    def _timed_out(self, i: int, limit: float) -> bool:
        count_event("math/timeout")
        warnings.warn(f"math reward: grading row {i} timed out after {limit:g}s; reward 0.0", stacklevel=4)
        return False

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()

    def __enter__(self) -> "MathGrader":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def make_math_reward(timeout: float = 5.0, workers: int = 0, max_chars: int = MAX_CHARS):
    """A math reward function ``fn(prompts, completions, answer, **kw) -> list[float | None]``
    with its own :class:`MathGrader` (``timeout`` seconds per row, ``workers`` processes, the last
    ``max_chars`` characters of each completion examined)."""
    grader = MathGrader(timeout=timeout, workers=workers, max_chars=max_chars)

    @limits_itself
    def math_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any] | None = None,
                    **kw: Any) -> list[float | None]:
        if answer is None:
            raise ValueError("math reward needs an 'answer' column (the ground-truth answer per row)")
        res = grader.grade(completions, answer)
        return [None if r is None else float(r) for r in res]

    math_reward.grader = grader  # type: ignore[attr-defined]
    return math_reward


_default = make_math_reward()


@register_reward("math")
@limits_itself
def math_reward(prompts: Sequence[Any], completions: Sequence[Any], answer: Sequence[Any] | None = None,
                **kw: Any) -> list[float | None]:
    """1.0 if the completion's final answer is equivalent to ``answer`` (math-verify), else 0.0;
    None where the row has no answer (or was not graded within the call's budget). 5 s limit per
    row (see the module docstring)."""
    return _default(prompts, completions, answer=answer, **kw)
