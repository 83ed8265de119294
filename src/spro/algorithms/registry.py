"""The algorithm plugin API: one object per credit-assignment method, registered by name.

An algorithm owns everything about itself: its options (a dataclass whose fields carry help
text; the config section ``algorithm.<name>.*``), whether it needs the reference model, its
default loss aggregation, its per-step metrics and, for methods with state of their own, hooks
the trainer calls at fixed points of a step. The trainer never asks for an algorithm by name.

The smallest algorithm is one function over :class:`AdvantageInputs`::

    from spro.algorithms import AdvantageInputs, register_algorithm

    @register_algorithm("sign", needs_reference=False)
    def sign(x: AdvantageInputs) -> torch.Tensor:      # [B, T]
        centred = x.rewards - x.group_mean(x.rewards)
        return torch.sign(centred)[:, None] * x.mask

and is selected with ``algorithm.name=sign`` after import, or ``algorithm.name=my_module:sign``
(imported from the working directory). Options: ``@register_algorithm("x", options=MyOptions)``
with a dataclass ``MyOptions``; the function is then called as ``fn(x, options)`` and the config
section ``algorithm.x.*`` fills ``MyOptions``. Algorithms with state subclass :class:`Algorithm`.

A step of the trainer, as seen from an algorithm (``spro.trainer.loop``)::

    setup(ctx)                    once, after the models are built (PRIME builds its PRM here)
    select(x) -> keep [B] | None  which responses train this step (None: all); with max_rounds > 1
                                  the trainer samples more prompts until prompts_per_step are kept
    prepare(batch, x) -> x        state updates on the kept responses, may add tensors to x.extra
    advantages(x) -> [B, T]       the estimator
    process_signal(x) -> ProcessSignal | None
                                  its own self-guided process reward on x, measured by the
                                  process probes (None: the probes use ``logging.probe.*``)
    diagnostic_signals(x) -> {name: [B, T]}
                                  more per-token signals for the first-error diagnostics (PRIME: prm)
    metrics(x, adv) -> dict       logged with the step's metrics (keys declared in ``metric_keys``)
    save(folder) / load(folder)   its state in checkpoints (folder = checkpoint/algorithm/)

Before a run, ``check_config(cfg)`` (a classmethod) rejects settings the algorithm cannot run with.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import os
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import torch

__all__ = [
    "AdvantageInputs",
    "Algorithm",
    "ProcessSignal",
    "MissingReferenceError",
    "group_mean",
    "group_size",
    "group_std",
    "compute_advantages",
    "TrainerContext",
    "NoOptions",
    "register_algorithm",
    "get_algorithm",
    "list_algorithms",
    "resolve_algorithm",
]

Tensor = torch.Tensor


@dataclass
class AdvantageInputs:
    """What an estimator reads about one batch. ``B`` responses, ``T`` response tokens (padded).

    Attributes:
        rewards: ``[B]`` float, outcome reward of each response (the weighted sum of the reward
            functions).
        mask: ``[B, T]`` bool, True on response tokens (up to and including eos).
        group_ids: ``[B]`` long, the prompt each response answers; a group's responses are
            consecutive rows.
        logp: ``[B, T]`` float, log pi_old of the sampled tokens (the policy that sampled the
            batch, dropout off, at the sampling temperature).
        ref_logp: ``[B, T]`` float, log pi_ref under the frozen reference, or None when the
            algorithm does not need the reference (``needs_reference``).
        correct: ``[B]`` bool, the accuracy verdict of each response.
        step: the training step (1-based).
        extra: more ``[B, T]`` tensors supplied by the algorithm's own ``prepare`` hook (PRIME:
            ``"prm_logp"``).
    """

    rewards: Tensor
    mask: Tensor
    group_ids: Tensor
    logp: Tensor
    ref_logp: Tensor | None = None
    correct: Tensor | None = None
    step: int = 0
    extra: dict[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mask.dtype != torch.bool:
            self.mask = self.mask != 0
        B = self.rewards.shape[0] if self.rewards.dim() == 1 else -1
        if B < 1:
            raise ValueError(f"AdvantageInputs.rewards must be [B] with B >= 1, got shape {tuple(self.rewards.shape)}")
        if self.mask.dim() != 2 or self.mask.shape[0] != B:
            raise ValueError(f"AdvantageInputs.mask must be [B={B}, T], got shape {tuple(self.mask.shape)}")
        if self.group_ids.shape != (B,):
            raise ValueError(f"AdvantageInputs.group_ids must be [B={B}], got shape {tuple(self.group_ids.shape)}")
        for name in ("logp", "ref_logp"):
            t = getattr(self, name)
            if t is not None and t.shape != self.mask.shape:
                raise ValueError(f"AdvantageInputs.{name} must be [B, T] = {tuple(self.mask.shape)}, got {tuple(t.shape)}")

    def group_size(self) -> Tensor:
        """``[B]`` long: the number of responses in each response's group (:func:`group_size`)."""
        return group_size(self.group_ids)

    def group_mean(self, values: Tensor) -> Tensor:
        """``[B]`` -> ``[B]``: the mean of ``values`` over each response's group (:func:`group_mean`)."""
        return group_mean(values, self.group_ids)

    def group_std(self, values: Tensor) -> Tensor:
        """``[B]`` -> ``[B]``: the unbiased std of ``values`` over each response's group (:func:`group_std`)."""
        return group_std(values, self.group_ids)

    def group_max(self, values: Tensor) -> Tensor:
        """``[B]`` -> ``[B]``: the largest of ``values`` in each response's group."""
        return _group_reduce(values, self.group_ids, "amax")

    def group_min(self, values: Tensor) -> Tensor:
        """``[B]`` -> ``[B]``: the smallest of ``values`` in each response's group."""
        return _group_reduce(values, self.group_ids, "amin")

    def select(self, idx: Tensor) -> AdvantageInputs:
        """The responses at rows ``idx`` (1-D long)."""
        return AdvantageInputs(
            self.rewards[idx], self.mask[idx], self.group_ids[idx], self.logp[idx],
            None if self.ref_logp is None else self.ref_logp[idx],
            None if self.correct is None else self.correct[idx], self.step,
            {k: v[idx] for k, v in self.extra.items()},
        )


# ------------------------------------------------------------------ group helpers for plugins
# ``values`` and ``group_ids`` are ``[B]``; a group's responses may be anywhere in the batch.


def _group_sums(values: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(sums [n], counts [n], inverse [B]) of ``values`` over the groups."""
    _, inv = torch.unique(group_ids, return_inverse=True)
    n = int(inv.max()) + 1
    sums = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, inv, values)
    counts = torch.zeros(n, dtype=values.dtype, device=values.device).index_add_(0, inv, torch.ones_like(values))
    return sums, counts, inv


def _group_reduce(values: Tensor, group_ids: Tensor, how: str) -> Tensor:
    _, inv = torch.unique(group_ids, return_inverse=True)
    out = torch.zeros(int(inv.max()) + 1, dtype=values.dtype, device=values.device)
    return out.scatter_reduce(0, inv, values, how, include_self=False)[inv]


def group_size(group_ids: Tensor) -> Tensor:
    """``[B]`` long: the number of responses in each response's group."""
    _, counts, inv = _group_sums(torch.ones(group_ids.shape[0], device=group_ids.device), group_ids)
    return counts.long()[inv]


def group_mean(values: Tensor, group_ids: Tensor) -> Tensor:
    """``[B]``: the mean of ``values`` over each response's group."""
    sums, counts, inv = _group_sums(values, group_ids)
    return (sums / counts)[inv]


def group_std(values: Tensor, group_ids: Tensor) -> Tensor:
    """``[B]``: the unbiased standard deviation of ``values`` over each response's group, as GRPO's outcome
    advantage uses it: 0 for a group of one, and exactly 0 for a group whose values are all equal (found
    by max == min, not by a rounded mean)."""
    values = values.to(torch.promote_types(values.dtype, torch.float32))
    centred = values - group_mean(values, group_ids)
    sq, counts, inv = _group_sums(centred * centred, group_ids)
    std = (sq / (counts - 1).clamp(min=1)).sqrt()[inv]
    equal = _group_reduce(values, group_ids, "amax") == _group_reduce(values, group_ids, "amin")
    return torch.where(equal, 0.0, std)


@dataclass
class ProcessSignal:
    """A self-guided process reward on a step's responses, as the process probes read it
    (``process/*``, ``diag/self_reward``, ``diag/msa``, ``drift/*``). ``[B, T]`` each, 0 at padding.

    Attributes:
        reward: the per-token process reward ``p = beta * (log pi_old - log pi_ref)``.
        term: the process term of the advantage built from it (SPRO: the Masked Step Advantage).
        logratio: ``log pi_old - log pi_ref`` with the reference ``p`` uses (the one that trains).
    """

    reward: Tensor
    term: Tensor
    logratio: Tensor


class MissingReferenceError(ValueError):
    """An algorithm read ``x.ref_logp`` on a run without the reference model."""


@dataclass
class TrainerContext:
    """What an algorithm's ``setup`` hook gets from the trainer.

    Attributes:
        config: the run's ``TrainConfig``.
        policy: the policy model (being trained).
        reference: the frozen reference model, or None.
        logprobs: ``fn(model, batch, *, grad=False) -> [B, T]`` log-probs of a ``RolloutBatch``'s
            response tokens with the trainer's convention (temperature, position ids, prompt
            sharing), so that log-probs of different models are comparable; without ``grad`` a
            no-grad pass in eval mode (no dropout).
        accelerator: the ``accelerate.Accelerator`` (``num_processes``, ``reduce``, ...).
        user_state: objects passed to ``spro.trainer.train(..., **)`` for the algorithm (PRIME: ``prm``).
    """

    config: Any
    policy: Any
    reference: Any
    logprobs: Callable[..., Tensor]
    accelerator: Any
    user_state: dict[str, Any] = field(default_factory=dict)


@dataclass
class NoOptions:
    """An algorithm without options."""


class Algorithm:
    """Base class of a registered algorithm (see the module docstring for the step order).

    Class attributes: ``name`` (set by :func:`register_algorithm`), ``Options`` (its options
    dataclass), ``needs_reference``, ``loss_agg`` (its default policy-loss aggregation, one of
    ``spro.algorithms.losses.AGG_MODES``), ``reference`` (the paper), ``needs_accuracy`` (it reads
    ``AdvantageInputs.correct``: the run must have an accuracy verifier). Instances hold ``self.options``.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    needs_reference: ClassVar[bool] = False
    loss_agg: ClassVar[str] = "seq-mean-token-mean"
    needs_accuracy: ClassVar[bool] = False
    reference: ClassVar[str] = ""
    metric_keys: ClassVar[tuple[str, ...]] = ()  # the keys its ``metrics`` adds on every step
    diagnostic_names: ClassVar[tuple[str, ...]] = ()  # the names ``diagnostic_signals`` may return

    @classmethod
    def check_config(cls, config: Any) -> None:
        """Raise ``spro.options.ConfigError`` (naming the keys) when ``config`` (a ``TrainConfig``) sets
        something this algorithm cannot run with. Called by ``spro.config.validate``."""

    def __init__(self, options: Any = None) -> None:
        self.options = options if options is not None else self.Options()
        if not isinstance(self.options, self.Options):
            raise TypeError(f"algorithm {self.name!r}: options must be a {self.Options.__name__}, "
                            f"got {type(self.options).__name__}")

    def advantages(self, x: AdvantageInputs) -> Tensor:
        """Per-token advantages ``[B, T]``, 0 where ``x.mask`` is False."""
        raise NotImplementedError

    def setup(self, ctx: TrainerContext) -> None:
        """Called once by the trainer after the models are built."""

    def select(self, x: AdvantageInputs) -> Tensor | None:
        """``[B]`` bool: the responses that train this step (None: all of them). Keep or drop whole groups."""
        return None

    @property
    def max_rounds(self) -> int:
        """Rounds of ``rollout.prompts_per_step`` prompts a step may sample until ``select`` keeps that many
        prompts (1: one round; PRIME refills after its accuracy filter)."""
        return 1

    def prepare(self, batch: Any, x: AdvantageInputs) -> AdvantageInputs:
        """Update the algorithm's own state on the kept responses (``batch``: their ``RolloutBatch``);
        may return ``x`` with tensors added to ``x.extra``."""
        return x

    def process_signal(self, x: AdvantageInputs) -> ProcessSignal | None:
        """Its own self-guided process reward on ``x`` (the inputs of its last ``advantages`` call), which
        the process probes then measure instead of computing one with ``logging.probe.*``; None: it has none."""
        return None

    def diagnostic_signals(self, x: AdvantageInputs) -> dict[str, Tensor]:
        """``{name: [B, T]}``: per-token signals of its own on the kept responses, scored by the first-error
        diagnostics as ``diag/<name>/*`` (PRIME: ``prm``, its implicit reward log pi_phi - log pi_ref); the
        names are declared in ``diagnostic_names``."""
        return {}

    def metrics(self, x: AdvantageInputs, advantages: Tensor | None) -> dict[str, float]:
        """Extra metrics of this step (``advantages`` is None when no response was kept); their keys are
        listed in ``metric_keys`` (more, e.g. a sub-model's ``prm/*``, may be added)."""
        return {}

    def save(self, folder: os.PathLike) -> None:
        """Write the algorithm's state into ``folder`` (only called when ``has_state``)."""

    def load(self, folder: os.PathLike) -> None:
        """Restore what :meth:`save` wrote."""

    @property
    def has_state(self) -> bool:
        """Whether checkpoints must hold this algorithm's state (:meth:`save` is overridden)."""
        return type(self).save is not Algorithm.save


class _FunctionAlgorithm(Algorithm):
    """An algorithm made from an estimator function by :func:`register_algorithm`."""

    fn: ClassVar[Callable[..., Tensor]]
    takes_options: ClassVar[bool] = False

    def advantages(self, x: AdvantageInputs) -> Tensor:
        out = type(self).fn(x, self.options) if self.takes_options else type(self).fn(x)
        if not isinstance(out, Tensor) or out.shape != x.mask.shape:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(f"algorithm {self.name!r} returned {shape}; expected advantages of shape "
                             f"[B, T] = {tuple(x.mask.shape)}")
        return torch.where(x.mask, out, 0.0)


def compute_advantages(algorithm: Algorithm, x: AdvantageInputs) -> Tensor:
    """``algorithm.advantages(x)``; an algorithm that reads ``x.ref_logp`` on a run without the reference
    model (``model.use_reference=false``) gets a :class:`MissingReferenceError` that names the flag instead
    of the ``TypeError`` of arithmetic on None."""
    try:
        return algorithm.advantages(x)
    except TypeError as exc:
        if x.ref_logp is None and "NoneType" in str(exc):
            raise MissingReferenceError(
                f"algorithm {algorithm.name!r} failed on x.ref_logp = None ({exc}): it reads the reference model's "
                f"log-probs but is registered without needs_reference=True, and the run has no reference model "
                f"(model.use_reference=false). Register it with @register_algorithm({algorithm.name!r}, "
                f"needs_reference=True) (or set needs_reference = True on the class), or set "
                f"model.use_reference=true") from exc
        raise


_REGISTRY: dict[str, type[Algorithm]] = {}


def register_algorithm(
    name: str,
    *,
    options: type | None = None,
    needs_reference: bool | None = None,
    loss_agg: str | None = None,
    overwrite: bool = False,
) -> Callable[[Any], Any]:
    """Decorator registering an algorithm under ``name``.

    On an :class:`Algorithm` subclass it sets ``cls.name`` (and the given attributes) and returns
    the class. On a function ``fn(x: AdvantageInputs) -> [B, T]`` (or ``fn(x, options)`` when
    ``options`` is given) it builds the algorithm class, registers it and returns the function
    unchanged, with the class as ``fn.algorithm``. ``needs_reference`` (default False for a
    function) makes the trainer run the reference model and fill ``x.ref_logp``; ``loss_agg``
    (default ``"seq-mean-token-mean"``) is the policy-loss aggregation unless the config sets one.
    Registering a taken name raises ``ValueError`` unless ``overwrite``.
    """
    if not isinstance(name, str) or not name or not name.replace("_", "").replace("-", "").isalnum():
        raise ValueError(f"algorithm name must be a non-empty word (letters, digits, _ or -), got {name!r}")
    from spro.algorithms.losses import AGG_MODES

    if loss_agg is not None and loss_agg not in AGG_MODES:
        raise ValueError(f"loss_agg must be one of {', '.join(AGG_MODES)}; got {loss_agg!r}")
    if options is not None and not dataclasses.is_dataclass(options):
        raise ValueError(f"options must be a dataclass, got {options!r}")

    def deco(obj: Any) -> Any:
        if name in _REGISTRY and not overwrite and _REGISTRY[name] is not getattr(obj, "algorithm", obj):
            raise ValueError(f"algorithm {name!r} is already registered (pass overwrite=True to replace it)")
        attrs: dict[str, Any] = {"name": name}
        if options is not None:
            attrs["Options"] = options
        if needs_reference is not None:
            attrs["needs_reference"] = needs_reference
        if loss_agg is not None:
            attrs["loss_agg"] = loss_agg
        if isinstance(obj, type) and issubclass(obj, Algorithm):
            for k, v in attrs.items():
                setattr(obj, k, v)
            _REGISTRY[name] = obj
            return obj
        if not callable(obj):
            raise ValueError(f"register_algorithm({name!r}) decorates an Algorithm subclass or a function")
        attrs.update(fn=staticmethod(obj), takes_options=options is not None, __doc__=obj.__doc__,
                     __module__=getattr(obj, "__module__", __name__))
        cls = type(f"{name}_algorithm", (_FunctionAlgorithm,), attrs)
        _REGISTRY[name] = cls
        obj.algorithm = cls
        return obj

    return deco


def list_algorithms() -> list[str]:
    """Names of the registered algorithms, sorted (the built-in ones and any imported since)."""
    _load_builtins()
    return sorted(_REGISTRY)


def get_algorithm(spec: str) -> type[Algorithm]:
    """The algorithm class for a registered name or a ``module:attr`` import path."""
    _load_builtins()
    if isinstance(spec, str) and ":" in spec:
        from spro.imports import import_object

        obj = import_object(spec, f"algorithm.name={spec!r}")
        obj = getattr(obj, "algorithm", obj)
        if not (isinstance(obj, type) and issubclass(obj, Algorithm) and obj.name):
            raise ValueError(f"algorithm.name={spec!r} is not a registered algorithm: decorate it with "
                             f"@spro.algorithms.register_algorithm(\"name\")")
        return obj
    if spec in _REGISTRY:
        return _REGISTRY[spec]
    close = difflib.get_close_matches(str(spec), list(_REGISTRY), n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown algorithm {spec!r} (registered: {', '.join(sorted(_REGISTRY))}; or give "
                     f"module:function of your own){hint}")


def resolve_algorithm(spec: str, options: Any = None) -> Algorithm:
    """An instance of the algorithm ``spec`` with ``options`` (default options when None)."""
    return get_algorithm(spec)(options)


_BUILTINS_LOADED = False


def _load_builtins() -> None:
    global _BUILTINS_LOADED
    if not _BUILTINS_LOADED:
        _BUILTINS_LOADED = True
        for module in ("spro.algorithms.grpo", "spro.algorithms.spro", "spro.algorithms.prime"):
            importlib.import_module(module)
