"""Declaring options and loading them: dataclass fields with help text, choices and checks, filled
from YAML files and ``key=value`` overrides through OmegaConf.

The run config (``spro.config``), every algorithm's options (``spro.algorithms``) and the settings
of ``spro sft`` are dataclasses declared with :func:`option`. :func:`build` turns layers of plain
settings (a preset, a YAML file, ``key=value`` overrides; later wins) into such a dataclass:
OmegaConf merges the layers and converts each value to its field's type against the structured
schema of the dataclass (``OmegaConf.structured`` / ``OmegaConf.to_object``), and
:func:`check_fields` enforces the declared ``choices`` and ``check`` of every field and that every
number is finite. A bad value gets one kind of error, naming its key, wherever it comes from
(YAML, an override, Python code); an unknown key gets the closest valid key.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Union

__all__ = ["ConfigError", "option", "check_fields", "check_tree", "Options", "build", "layer", "read_yaml",
           "overrides_layer", "all_keys", "unknown_key", "describe", "add_flags", "flags_layer"]


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


def _type_text(tp: Any) -> str:
    """What a value of type ``tp`` must be, in words ("an integer", "a list or null", ...)."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = typing.get_args(tp)
        words = [_type_text(a) for a in args if a is not type(None)]
        return " or ".join(words) + (" (or null)" if type(None) in args else "")
    origin = typing.get_origin(tp) or tp
    if origin in _SCALARS:
        return _SCALARS[origin]
    if origin in (list, tuple):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(origin):
        return "a mapping"
    return str(tp).replace("typing.", "")


def check_fields(obj: Any, prefix: str = "") -> None:
    """Enforce the scalar types, ``choices`` and ``check`` of every field of the dataclass ``obj``, and
    that every float is finite (ConfigError naming the key)."""
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
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"{key} must be a finite number, got {value!r}")
        choices = f.metadata.get("choices")
        if choices and value not in choices:
            close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1, cutoff=0.4)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(str, choices))}{hint}")
        check = f.metadata.get("check")
        if check and not check[0](value):
            raise ConfigError(f"{key} must be {check[1]}, got {value!r}")


def check_tree(obj: Any, prefix: str = "") -> None:
    """:func:`check_fields` on ``obj`` and on every dataclass inside it (nested fields, list items)."""
    check_fields(obj, prefix)
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        key = f"{prefix}.{f.name}" if prefix else f.name
        items = enumerate(value) if isinstance(value, list) else [(None, value)]
        for i, item in items:
            if dataclasses.is_dataclass(item) and not isinstance(item, type):
                check_tree(item, key if i is None else f"{key}[{i}]")


@dataclass
class Options:
    """Base class of an algorithm's options: a dataclass of :func:`option` fields, checked on creation."""

    def __post_init__(self) -> None:
        check_fields(self)


# ----------------------------------------------------------------------------------------------
# loading: plain layers of settings, merged and typed by OmegaConf


def read_yaml(path: str | Path) -> dict:
    """The mapping of a YAML config file (ConfigError naming the file when it cannot be used)."""
    import yaml

    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a UTF-8 text file (byte {e.start}: {e.reason}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: invalid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return data


def layer(data: Any) -> Any:
    """A plain mapping as an untyped OmegaConf tree; its top-level dotted keys (``optim.lr: 1e-5``) nested."""
    from omegaconf import OmegaConf

    tree = OmegaConf.create()
    for key, value in dict(data).items():
        OmegaConf.update(tree, str(key), value, merge=True)
    return tree


def overrides_layer(texts: list[str]) -> Any:
    """``key=value`` overrides (YAML values: ``true``, ``1e-5``, ``null``, ``[a, b]``, ``{k: v}``) as one layer."""
    from omegaconf import OmegaConf

    for text in texts:
        if "=" not in text:
            raise ConfigError(f"override '{text}' must look like key=value (e.g. optim.lr=2e-5)")
    try:
        return OmegaConf.from_dotlist([t.strip() for t in texts])
    except Exception as e:  # a malformed key or value
        raise ConfigError(f"cannot parse the overrides {' '.join(texts)}: {str(e).splitlines()[0]}") from None


def all_keys(cls: type, prefix: str = "", sections: Callable[[], dict[str, type]] | None = None) -> list[str]:
    """Every dotted key of the dataclass tree ``cls`` (a field marked ``sections`` expands to
    ``sections()``'s name -> Options classes)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if f.metadata.get("sections"):
            for name, options in (sections() if sections else {}).items():
                keys.extend(all_keys(options, f"{prefix}{name}."))
        elif isinstance(tp, type) and dataclasses.is_dataclass(tp):
            keys.extend(all_keys(tp, f"{prefix}{f.name}.", sections))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


def unknown_key(key: str, keys: list[str], renamed: dict[str, str] | None = None) -> ConfigError:
    """"unknown config key" with the closest of ``keys`` (or ``renamed[key]``, a known other name's key)."""
    if renamed and key in renamed:
        hint = renamed[key]
    else:
        close = difflib.get_close_matches(key, keys, n=1, cutoff=0.5)
        if not close:  # try matching the last component alone ("lr" -> "optim.lr")
            last = key.rsplit(".", 1)[-1]
            close = [k for k in keys if k.rsplit(".", 1)[-1] == last][:1]
        hint = f"'{close[0]}'?" if close else ""
    return ConfigError(f"unknown config key '{key}'" + (f"; did you mean {hint}" if hint else ""))


def _dataclass_fields(cls: type) -> dict[str, type]:
    """The fields of ``cls`` that are dataclasses, or lists of them: name -> that dataclass."""
    out = {}
    for name, tp in typing.get_type_hints(cls).items():
        for t in typing.get_args(tp) if typing.get_origin(tp) in (Union, types.UnionType) else (tp,):
            t = (typing.get_args(t) or (None,))[0] if typing.get_origin(t) is list else t
            if isinstance(t, type) and dataclasses.is_dataclass(t):
                out[name] = t
    return out


def _check_mappings(cls: type, data: Any, prefix: str) -> None:
    """A section (a dataclass field) given as something else than a mapping is named (OmegaConf would not)."""
    hints = typing.get_type_hints(cls)
    for key, value in (data.items() if isinstance(data, dict) else []):
        tp = hints.get(key)
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and value is not None:
            if not isinstance(value, dict) and not dataclasses.is_dataclass(value):
                raise ConfigError(f"{prefix}{key}: expected a mapping of {tp.__name__}'s keys, got {value!r}")
            _check_mappings(tp, value, f"{prefix}{key}.")


def _path_to(cls: type, target: type, prefix: str = "") -> str:
    """The dotted key of the field of ``cls`` (nested) whose type, or list item type, is ``target``."""
    for name, tp in _dataclass_fields(cls).items():
        if tp is target:
            return prefix + name
        found = _path_to(tp, target, f"{prefix}{name}.")
        if found:
            return found
    return ""


def build(cls: type, data: Any, prefix: str = "", keys: Callable[[], list[str]] | None = None,
          renamed: dict[str, str] | None = None) -> Any:
    """An instance of the dataclass ``cls`` from ``data`` (a mapping or OmegaConf tree of its keys; missing
    keys keep their defaults): OmegaConf converts every value to its field's type, then :func:`check_tree`.
    Errors are ConfigErrors naming the key (``prefix.key``); an unknown key suggests the closest of
    ``keys()`` (default: those of ``cls``)."""
    from omegaconf import OmegaConf
    from omegaconf.errors import (ConfigKeyError, InterpolationResolutionError, MissingMandatoryValue,
                                  OmegaConfBaseException)

    def name(key: Any) -> str:
        return ".".join(str(p) for p in (prefix, key) if p not in (None, ""))

    plain = OmegaConf.to_container(data, resolve=False) if OmegaConf.is_config(data) else data
    _check_mappings(cls, plain, f"{prefix}." if prefix else "")
    try:
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(cls), data))
    except ConfigError as e:  # an Options class checked itself in __post_init__
        raise ConfigError(f"{prefix}.{e}" if prefix else str(e)) from None
    except ConfigKeyError as e:
        where = getattr(e, "object_type", None)
        if where is not None and where is not cls and "." not in str(e.full_key) and "[" not in str(e.full_key):
            # a key of a list item's dataclass (data.rewards[i]): OmegaConf loses its path
            raise ConfigError(f"{name(_path_to(cls, where)) or where.__name__}: unknown key '{e.key}' (its keys: "
                              f"{', '.join(f.name for f in dataclasses.fields(where))})") from None
        raise unknown_key(name(e.full_key), keys() if keys else all_keys(cls, f"{prefix}." if prefix else ""),
                          renamed) from None
    except MissingMandatoryValue as e:
        raise ConfigError(f"{name(e.full_key)}: missing (no default; give a value)") from None
    except InterpolationResolutionError as e:  # ${key} naming no key
        raise ConfigError(f"{name(e.full_key)}: {str(e).splitlines()[0]}") from None
    except OmegaConfBaseException as e:
        where, key = getattr(e, "object_type", None), getattr(e, "key", None)
        hints = typing.get_type_hints(where) if dataclasses.is_dataclass(where) else {}
        if key in hints:
            raise ConfigError(f"{name(e.full_key)}: expected {_type_text(hints[key])}, got {e.value!r}") from None
        raise ConfigError(f"{name(e.full_key) or 'config'}: {str(e).splitlines()[0]}") from None
    check_tree(obj, prefix)
    return obj


def describe(cls: type, obj: Any = None, prefix: str = "") -> list[str]:
    """``  key = default`` and the help text of every key of the dataclass ``cls`` (``obj``'s values; without
    ``obj`` the declared defaults, a key without one shown as ``(required)``)."""
    lines = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.metadata.get("sections"):
            continue
        tp = hints[f.name]
        if obj is not None:
            value = getattr(obj, f.name)
        elif f.default is not dataclasses.MISSING or f.default_factory is not dataclasses.MISSING:
            value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        else:
            value = "(required)"
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            lines += describe(tp, value, f"{prefix}{f.name}.")
            continue
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            value = [dataclasses.asdict(v) for v in value]
        lines.append(f"  {prefix}{f.name} = {value if value == '(required)' else repr(value)}\n"
                     f"      {f.metadata.get('help', '')}")
    return lines


# ----------------------------------------------------------------------------------------------
# command-line flags as short aliases of key=value overrides

_FLAG = "alias:"


def add_flags(parser: Any, cls: type, names: list[str]) -> None:
    """``--a-name VALUE`` for each field ``a_name`` of the dataclass ``cls``: a short alias of the override
    ``a_name=VALUE``, with the field's help text."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    for name in names:
        parser.add_argument(f"--{name.replace('_', '-')}", dest=_FLAG + name, metavar=name.upper(), default=None,
                            help=fields[name].metadata.get("help", "").replace("%", "%%"))


def flags_layer(args: Any, cls: type) -> Any:
    """The alias flags given (see :func:`add_flags`) as one layer: a string key takes the text as it is, any
    other key reads it as YAML (``--lr 1e-5``, ``--train-size null``)."""
    import yaml

    hints = typing.get_type_hints(cls)
    data = {}
    for dest, value in vars(args).items():
        if dest.startswith(_FLAG) and value is not None:
            name = dest[len(_FLAG):]
            text_only = hints[name] is str or set(typing.get_args(hints[name])) == {str, type(None)}
            data[name] = value if text_only else yaml.safe_load(value)
    return layer(data)
