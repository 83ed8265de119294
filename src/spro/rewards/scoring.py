"""Scoring responses: one definition of a response's reward and of whether it is correct.

The trainer (training batches and periodic evaluation) and ``spro.experiments.evaluation`` both
score through a :class:`Scorer`: the reward of a response is the weighted sum of the values of
its reward functions that gave a value, by the one rule of ``spro.rewards.combine_values`` (TRL's:
None means "not applicable"); None when no function gave a value. Such a response is unscored (``Scores.scored`` False, counted in
``reward/none_frac``, a :class:`RewardWarning`); the batch tensor holds 0 for it. It is
correct when the value of the accuracy reward is ``>= correct_threshold``.

Failures are visible. A function that raises on the batch is called again response by response;
the responses it still raises on get None. Any exception counts, ``SystemExit`` and other
``BaseException`` included (named in the message); raising on every response is an error.

Every call is bounded by ``timeout`` (``data.reward_timeout``; 0 = no limit, every function in this
process). A function that bounds its own cost (``spro.rewards.limits_itself``: spro's math, code,
eurus, format and arithmetic rewards) runs in this process under ``spro.rewards.reward_budget(timeout)``:
each of its rows has a limit of its own and it grades no row once the budget is spent (those rows get
None, counted as ``reward/<its counter>/batch_budget``, e.g. ``reward/math/batch_budget``; its
time-outs are counted as ``reward/math/timeout``, ``reward/code/timeouts``). Any other function (yours,
and spro's reasoning_gym reward, whose task graders have no limit of their own) runs in a worker
process forked once (:class:`_Worker`, it inherits the functions: closures work) and reused call
after call; a call that does not return in time is stopped by killing that process (a new one is
forked for the next call), and its responses get None. The cost per call is bounded: at most
``timeout`` for the batch, and ``timeout`` more for the response-by-response retry after the batch
raised. (A function's side effects, e.g. a counter it keeps, happen in the worker, not in the
caller.) Errors and time-outs are counted (``reward/errors``, ``reward/timeouts``) and reported with
a :class:`RewardWarning` naming the function, the count and the first error message: at the first
failure of each function, and again each time the share of a call's responses that fail is at least
double the share last reported.

A function that times out on every response of a call, or a call after which no response has a
value from any function (every function returned None: a run would train on reward 0), is an error
(:class:`RewardFunctionError`) once that has happened ``Scorer.grace`` (3) calls in a row.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import time
import warnings
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import torch

if TYPE_CHECKING:
    from spro.schema import DataConfig

__all__ = ["WeightedReward", "RewardFunctionError", "RewardWarning", "Scores", "Scorer", "resolve_reward",
           "CODE_REWARDS", "code_rewards", "code_isolation"]


class RewardFunctionError(ValueError):
    """A reward function returned something unusable (or failed on every response)."""


class RewardWarning(UserWarning):
    """A reward function raised on some responses or did not return in time."""


@dataclass
class _Health:
    """What went wrong with one reward function so far in this Scorer's life (a run)."""

    rows: int = 0
    errors: int = 0
    timeouts: int = 0
    first_error: str | None = None
    reported_rate: float = 0.0  # the failing share of a call at the last warning (0: none yet)
    empty_calls: int = 0  # calls in a row in which it timed out on every response


@dataclass
class WeightedReward:
    """A reward function ``fn(prompts, completions, **columns) -> list[float | None]`` (a
    ``spro.rewards.RewardFn``) with its name and weight."""

    name: str
    fn: Callable[..., Any]
    weight: float = 1.0


@dataclass
class Scores:
    """rewards ``[B]`` float (weighted sum), correct ``[B]`` bool, scored ``[B]`` bool (some function
    gave a value), and counters (``reward/errors``, ``reward/none_frac``, ...) and each function's
    ``reward/<name>/mean`` and ``reward/<name>/std`` (None when it scored nothing)."""

    rewards: torch.Tensor
    correct: torch.Tensor
    scored: torch.Tensor
    stats: dict[str, float | None]


def resolve_reward(name: str, overrides: dict[str, Callable] | None = None) -> Callable[..., Any]:
    """``overrides[name]`` if given, else ``spro.rewards.get_reward(name)`` (a registered name or a
    ``module:function`` import path)."""
    if overrides and name in overrides:
        return overrides[name]
    from spro.options import ConfigError
    from spro.rewards import get_reward

    try:
        return get_reward(name)
    except ValueError as e:
        raise ConfigError(f"data.rewards: {e}") from None


CODE_REWARDS = ("code", "eurus")
"""The registered rewards that run model-written programs in the sandbox (set by ``data.code``)."""


def code_rewards(data_cfg: DataConfig, names: Sequence[str]) -> dict[str, Callable]:
    """The code rewards among ``names`` built with ``data_cfg.code`` (row budget, isolation, workers)."""
    wanted = [n for n in names if n in CODE_REWARDS]
    if not wanted:
        return {}
    from spro.rewards.code import make_code_reward, make_eurus_reward

    c = data_cfg.code
    code = make_code_reward(row_seconds=c.row_seconds, isolation=c.isolation, workers=c.workers)
    return {"code": code, "eurus": make_eurus_reward(code=code)}


def code_isolation(data_cfg: DataConfig, names: Sequence[str]) -> str | None:
    """The sandbox mode (``"bwrap"``, ``"namespace"``, ``"none"``) that the code rewards among ``names`` run in here
    with ``data.code.isolation`` (``spro.rewards.sandbox.active_isolation``: any mode but bwrap warns); None when
    there is no code reward. ConfigError where that isolation is not available."""
    if not any(n in CODE_REWARDS for n in names):
        return None
    from spro.options import ConfigError
    from spro.rewards.sandbox import active_isolation

    try:
        return active_isolation(data_cfg.code.isolation)
    except (RuntimeError, ValueError) as e:
        raise ConfigError(f"data.code.isolation={data_cfg.code.isolation}: {e}") from None


class Scorer:
    """Scores batches of responses with weighted reward functions (see the module docstring).

    Args:
        rewards: the reward functions with their weights.
        accuracy_reward: name of the function whose value decides "correct" (None: the first).
        correct_threshold: a response is correct when that value is ``>=`` this.
    """

    def __init__(self, rewards: Sequence[WeightedReward], *, accuracy_reward: str | None = None,
                 correct_threshold: float = 1.0, timeout: float = 0.0) -> None:
        if not rewards:
            raise ValueError("Scorer: give at least one reward function")
        if not timeout >= 0:
            raise ValueError(f"Scorer: timeout must be >= 0 seconds (0 = none), got {timeout!r}")
        self.rewards = list(rewards)
        self.timeout = float(timeout)
        self.health = {rf.name: _Health() for rf in self.rewards}
        names = [rf.name for rf in self.rewards]
        acc_name = accuracy_reward or names[0]
        if acc_name not in names:
            raise ValueError(f"accuracy reward {acc_name!r} is not one of the reward functions ({', '.join(names)})")
        self.acc_index = names.index(acc_name)
        self.correct_threshold = correct_threshold
        self._warned_unscored = False
        self._worker: _Worker | None = None
        self._unscored_calls = 0  # calls in a row after which no response had a value

    grace = 3  # calls in a row that a function may time out on every response (or none be scored) before an error

    @classmethod
    def of(cls, reward: Scorer | Callable[..., Any]) -> Scorer:
        """``reward`` itself if it is a Scorer, else a Scorer of that one function (correct: value >= 1)."""
        if isinstance(reward, Scorer):
            return reward
        return cls([WeightedReward(getattr(reward, "__name__", "reward"), reward)])

    @classmethod
    def from_config(cls, data_cfg: DataConfig, overrides: dict[str, Callable] | None = None,
                    rewards: Sequence[tuple[str, float]] | None = None) -> Scorer:
        """From a ``DataConfig`` (``accuracy_reward``, ``correct_threshold``, ``reward_timeout``, ``code``: the
        settings of the code rewards) and ``rewards``, the ``(name, weight)`` pairs to use (default:
        ``data_cfg.rewards``; ``spro.data.loader.reward_specs`` resolves a null one)."""
        from spro.options import ConfigError

        if rewards is None:
            if data_cfg.rewards is None:
                raise ConfigError("data.rewards is null: spro.data.loader.reward_specs gives the default reward")
            rewards = [(s.name, s.weight) for s in data_cfg.rewards]
        overrides = {**code_rewards(data_cfg, [name for name, _ in rewards]), **(overrides or {})}
        fns = [WeightedReward(name, resolve_reward(name, overrides), weight) for name, weight in rewards]
        try:
            return cls(fns, accuracy_reward=data_cfg.accuracy_reward, correct_threshold=data_cfg.correct_threshold,
                       timeout=data_cfg.reward_timeout)
        except ValueError as e:
            raise ConfigError(f"data.accuracy_reward: {e}") from None

    def __call__(self, prompts: list, completions: list[str], columns: dict[str, list]) -> Scores:
        B = len(completions)
        total = torch.zeros(B, dtype=torch.float64)
        correct = torch.zeros(B, dtype=torch.bool)
        scored = torch.zeros(B, dtype=torch.bool)
        from spro.rewards import combine_values, pop_reward_stats

        errors = timeouts = 0
        per_function: dict[str, float | None] = {}
        columns_of_values = []
        for rf in self.rewards:
            values, n_err, n_timeout, message = self._call(rf, prompts, completions, columns)
            self._report(rf, B, n_err, n_timeout, message)
            self._strike(rf, B, n_timeout, message)
            errors, timeouts = errors + n_err, timeouts + n_timeout
            per_function.update(_mean_std(rf.name, values))
            columns_of_values.append(values)
        for i, v in enumerate(columns_of_values[self.acc_index]):
            correct[i] = v is not None and v >= self.correct_threshold
        for i, v in enumerate(combine_values(columns_of_values, [rf.weight for rf in self.rewards])):
            if v is not None:
                total[i], scored[i] = v, True
        nones = sum(v is None for vals in columns_of_values for v in vals)
        self._unscored_calls = self._unscored_calls + 1 if B and not scored.any() else 0
        if self._unscored_calls >= self.grace:
            raise RewardFunctionError(
                f"data.rewards: no response got a value from any reward function ({', '.join(r.name for r in self.rewards)}) "
                f"in {self._unscored_calls} calls in a row ({B} responses in the last; every function returned None, "
                "raised or timed out): training would go on with reward 0. Check the functions (and the columns they "
                "read, e.g. answer) on a few rows of your data")
        unscored = B - int(scored.sum())
        if unscored and not self._warned_unscored:  # once per run (reward/none_frac counts every step)
            self._warned_unscored = True
            warnings.warn(f"{unscored} of {B} responses could not be scored (no reward function gave a value for them); "
                          "they train with reward 0 (Scores.scored is False for them; metric reward/none_frac)",
                          RewardWarning, stacklevel=2)
        stats = {"reward/errors": float(errors), "reward/timeouts": float(timeouts),
                 "reward/none_frac": nones / max(B * len(self.rewards), 1)}
        stats.update({f"reward/{k}": float(v) for k, v in pop_reward_stats().items()})
        stats.update(per_function)
        return Scores(total.float(), correct, scored, stats)

    def _call(self, rf: WeightedReward, prompts: list, completions: list[str], columns: dict
              ) -> tuple[list[float | None], int, int, str | None]:
        """Values of one reward (checked by ``spro.rewards.call_reward``), the numbers of responses it raised on and
        timed out on, and the first error message.

        A function that raises on the batch is called again response by response; responses on which it still
        raises get None and are counted. A call that times out gives None to its responses (a timed-out batch is
        not retried). Raising on every response, or returning a wrong type / count / NaN, raises
        :class:`RewardFunctionError` naming the function.
        """
        B = len(completions)
        runner = self._worker_for(rf) or _InProcess(rf.fn)
        index = self.rewards.index(rf)
        late = (f"reward function '{rf.name}' did not return within {self.timeout:g} s (data.reward_timeout); its "
                "worker process was stopped")
        got = runner.batch(index, prompts, completions, columns, self.timeout)
        if got is None:
            return [None] * B, 0, B, late
        kind, out = got
        if kind == "invalid":
            raise RewardFunctionError(f"data.rewards '{rf.name}': {out}")
        if kind == "ok":
            return out, 0, 0, None
        first_error = out
        values: list[float | None] = []
        errors = 0
        for kind, v in runner.rows(index, prompts, completions, columns, self.timeout):
            if kind == "invalid":
                runner.stop()  # (the rest of its answers would be read as the next call's)
                raise RewardFunctionError(f"data.rewards '{rf.name}': {v}")
            values.append(v[0] if kind == "ok" else None)
            errors += kind != "ok"
        timeouts = B - len(values)
        values += [None] * timeouts
        if errors == B:
            raise RewardFunctionError(f"data.rewards '{rf.name}' raised on every response: {first_error}")
        return values, errors, timeouts, first_error if errors or not timeouts else late

    def _worker_for(self, rf: WeightedReward) -> _Worker | None:
        """The worker process of the functions that do not bound their own cost (None: this one runs here: it is
        marked ``spro.rewards.limits_itself``, or there is no time limit)."""
        if not self.timeout or getattr(rf.fn, "spro_limits_itself", False) or not _Worker.available():
            return None
        if self._worker is None:
            self._worker = _Worker([r.fn for r in self.rewards])
        return self._worker

    def close(self) -> None:
        """End the worker process (also done when the Scorer is garbage-collected or the process exits)."""
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    def _strike(self, rf: WeightedReward, rows: int, timeouts: int, message: str | None) -> None:
        """Count the calls in a row in which ``rf`` timed out on every response; an error at ``grace`` of them."""
        h = self.health[rf.name]
        h.empty_calls = h.empty_calls + 1 if rows and timeouts == rows else 0
        if h.empty_calls >= self.grace:
            raise RewardFunctionError(f"data.rewards '{rf.name}' timed out on every response in {h.empty_calls} calls "
                                      f"in a row: {message}. Make it faster, or raise data.reward_timeout")

    def _report(self, rf: WeightedReward, rows: int, errors: int, timeouts: int, message: str | None) -> None:
        """Count a call's failures and warn at the first one and whenever the failing share doubles."""
        h = self.health[rf.name]
        h.rows, h.errors, h.timeouts = h.rows + rows, h.errors + errors, h.timeouts + timeouts
        h.first_error = h.first_error or message
        rate = (errors + timeouts) / max(rows, 1)
        if rate == 0 or (h.reported_rate and rate < 2 * h.reported_rate):
            return
        again = "the failing share has doubled since the last warning; " if h.reported_rate else ""
        h.reported_rate = rate
        warnings.warn(
            f"reward '{rf.name}': {errors + timeouts} of {rows} responses ({rate:.0%}) got no value in this call "
            f"({errors} raised, {timeouts} timed out); {again}{h.errors} raised and {h.timeouts} timed out of {h.rows} "
            f"responses so far. These responses count as None (metrics reward/errors, reward/timeouts). First error: "
            f"{h.first_error}", RewardWarning, stacklevel=3)


def _attempt(fn: Callable[..., Any], prompts: list, completions: list[str], columns: dict
             ) -> tuple[str, Any]:
    """``call_reward`` as ``("ok", values)``, ``("raised", message)`` (the function raised anything, SystemExit
    included) or ``("invalid", message)`` (it returned a wrong type, count or NaN). A KeyboardInterrupt is passed on
    in the main thread (Ctrl-C) and counted as raised elsewhere (in a worker)."""
    from spro.rewards import RewardError, call_reward

    try:
        return "ok", call_reward(fn, prompts, completions, **columns)
    except RewardError as e:
        raised = e.__cause__ is not None and not isinstance(e.__cause__, RewardError)
        return ("raised" if raised else "invalid"), str(e)
    except KeyboardInterrupt:
        if os.getpid() == _MAIN_PID:
            raise
        return "raised", f"reward function {_fn_name(fn)} raised KeyboardInterrupt"
    except BaseException as e:  # SystemExit, GeneratorExit, ...: user code may not end the run
        return "raised", f"reward function {_fn_name(fn)} raised {type(e).__name__}: {e}"


_MAIN_PID = os.getpid()


def _set_parent_death_signal() -> None:
    """Linux: the kernel kills this process when its parent ends (PR_SET_PDEATHSIG); elsewhere nothing."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _worker_main(fns: list[Callable[..., Any]], conn: Any) -> None:
    """The worker's loop: ``(index, mode, prompts, completions, columns)`` jobs in, results out (see _Worker)."""
    global _MAIN_PID
    _MAIN_PID = -1  # (a KeyboardInterrupt here comes from the function: counted, not passed on)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    _set_parent_death_signal()
    # torch's OpenMP thread pool does not survive a fork: a function that runs torch ops with more than one
    # thread here would crash or hang in its first parallel region
    torch.set_num_threads(1)
    while True:
        try:
            index, mode, prompts, completions, columns = conn.recv()
        except (EOFError, OSError):
            return
        fn = fns[index]
        if mode == "batch":
            conn.send(_attempt(fn, prompts, completions, columns))
            continue
        for i in range(len(completions)):
            conn.send(_attempt(fn, prompts[i : i + 1], completions[i : i + 1],
                               {c: col[i : i + 1] for c, col in columns.items()}))


class _Worker:
    """A forked process that calls the reward functions of one Scorer, stopped (killed) when a call overruns.

    Forked lazily at the first call, it inherits the functions (no pickling: closures and lambdas work) and
    serves call after call; after a kill the next call forks a new one. Each call: the batch, and when it
    raised, its responses one by one, each part within ``timeout`` seconds.
    """

    def __init__(self, fns: list[Callable[..., Any]]) -> None:
        self.fns = fns
        self.proc: Any = None
        self.conn: Any = None

    @staticmethod
    def available() -> bool:
        return "fork" in multiprocessing.get_all_start_methods()

    def _start(self) -> None:
        ctx = multiprocessing.get_context("fork")
        self.conn, child = ctx.Pipe()
        with warnings.catch_warnings():  # (forking a process with threads: the worker runs only the functions)
            warnings.simplefilter("ignore", DeprecationWarning)
            self.proc = ctx.Process(target=_worker_main, args=(self.fns, child), name="spro-reward-worker", daemon=True)
            self.proc.start()
        child.close()

    def stop(self) -> None:
        if self.proc is not None:
            if self.proc.is_alive():
                self.proc.kill()
            self.proc.join()
            self.conn.close()
        self.proc = self.conn = None

    def _recv(self, deadline: float, index: int) -> Any:
        """The next result; ``("raised", why)`` when the worker ended (the function called exit, crashed, ...); None
        when ``deadline`` passed (the worker is killed)."""
        if self.conn.poll(max(deadline - time.monotonic(), 0.0)):
            try:
                return self.conn.recv()
            except (EOFError, OSError):
                self.proc.join()
                code = self.proc.exitcode
                self.stop()
                return "died", (f"reward function {_fn_name(self.fns[index])} ended its worker process (exit code "
                                 f"{code})")
        self.stop()
        return None

    def _send(self, job: tuple) -> None:
        if self.proc is None or not self.proc.is_alive():
            self.stop()
            self._start()
        self.conn.send(job)

    def batch(self, index: int, prompts: list, completions: list[str], columns: dict, timeout: float) -> Any:
        """``_attempt`` of function ``index`` on the batch in the worker; None when it did not return in time."""
        self._send((index, "batch", list(prompts), list(completions), columns))
        return self._recv(time.monotonic() + timeout, index)

    def rows(self, index: int, prompts: list, completions: list[str], columns: dict, timeout: float) -> Iterator:
        """``_attempt`` of function ``index`` on each response in turn, all within ``timeout``; stops early at the
        time-out (the worker is killed). A worker that ends is replaced for the responses after."""
        deadline, done = time.monotonic() + timeout, 0
        while done < len(completions):
            self._send((index, "rows", list(prompts[done:]), list(completions[done:]),
                        {c: col[done:] for c, col in columns.items()}))
            for _ in range(done, len(completions)):
                got = self._recv(deadline, index)
                if got is None:
                    return
                done += 1
                yield got
                if got[0] == "died":
                    break


class _InProcess:
    """Calls one function in this process: one that bounds its own cost, told the call's budget
    (``spro.rewards.reward_budget``: ``timeout`` seconds, none when 0), or any function when ``timeout=0``."""

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn

    def batch(self, index: int, prompts: list, completions: list[str], columns: dict, timeout: float) -> Any:
        from spro.rewards import reward_budget

        with reward_budget(timeout or None):
            return _attempt(self.fn, prompts, completions, columns)

    def rows(self, index: int, prompts: list, completions: list[str], columns: dict, timeout: float) -> Iterator:
        """Each response in turn, all within one budget of ``timeout`` seconds."""
        from spro.rewards import reward_budget

        deadline = time.monotonic() + timeout
        for i in range(len(completions)):
            with reward_budget(deadline - time.monotonic() if timeout else None):
                got = _attempt(self.fn, prompts[i : i + 1], completions[i : i + 1],
                               {c: col[i : i + 1] for c, col in columns.items()})
            yield got

    def stop(self) -> None:
        pass


def _fn_name(fn: Callable[..., Any]) -> str:
    from spro.rewards import _fn_name as name

    return name(fn)


def _mean_std(name: str, values: list[float | None]) -> dict[str, float | None]:
    """``reward/<name>/mean`` and ``/std`` (sample std, as ``reward/std``) of one function's values that
    are not None (both None when it scored no response), TRL's per-function metrics."""
    vals = torch.tensor([v for v in values if v is not None], dtype=torch.float64)
    return {f"reward/{name}/mean": float(vals.mean()) if len(vals) else None,
            f"reward/{name}/std": (float(vals.std()) if len(vals) > 1 else 0.0) if len(vals) else None}
