"""Declaring options: dataclass fields with help text, allowed choices and checks.

The run config (``spro.config``) and every algorithm's options (``spro.algorithms``) are declared
with :func:`option` and checked by :func:`check_fields`, so a bad value gets one kind of error,
naming its key, wherever it comes from (YAML, an override, Python code).
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Union

__all__ = ["ConfigError", "option", "check_fields", "Options"]


class ConfigError(ValueError):
    """A configuration file, preset or override that cannot be used."""


def option(default: Any = dataclasses.MISSING, *, help: str, factory: Any = None, choices: tuple | None = None,
           check: tuple[Callable[[Any], bool], str] | None = None) -> Any:
    """A dataclass field with its help text and, optionally, its allowed ``choices`` or a ``check``
    ``(predicate, "what it must be")``, both enforced by :func:`check_fields` (config keys and the
    options of algorithms are declared with it)."""
    metadata = {"help": help, "choices": choices, "check": check}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)



_SCALARS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def check_fields(obj: Any, prefix: str = "") -> None:
    """Enforce the scalar types, ``choices`` and ``check`` of every field of the dataclass ``obj``
    (ConfigError naming the key)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        tp = hints.get(f.name)
        args = typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,)
        scalars = [t for t in args if t in _SCALARS]
        if scalars and len(scalars) == len([t for t in args if t is not type(None)]) and not (
                value is None and type(None) in args):
            ok = any(isinstance(value, t) and not (t is not bool and isinstance(value, bool)) for t in scalars)
            ok = ok or (float in scalars and isinstance(value, int) and not isinstance(value, bool))
            if not ok:
                raise ConfigError(f"{key}: expected {' or '.join(_SCALARS[t] for t in scalars)}, got {value!r}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.4)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}{hint}")
        check = f.metadata.get("check")
        if check and not check[0](value):
            raise ConfigError(f"{key} must be {check[1]}, got {value!r}")


@dataclass
class Options:
    """Base class of an algorithm's options: a dataclass of :func:`option` fields, checked on creation."""

    def __post_init__(self) -> None:
        check_fields(self)
