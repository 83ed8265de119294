"""Importing user code named ``module:attr`` (reward functions, algorithms), from the working directory too.

``spro train 'data.rewards=[{name: my_rewards:exact}]'`` run in the folder that holds
``my_rewards.py`` finds it without ``PYTHONPATH=.``: the working directory is appended to
``sys.path`` (after everything else, so it never shadows an installed package).
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Any

__all__ = ["import_object"]


def import_object(spec: str, what: str) -> Any:
    """The object ``attr`` (dotted names allowed) of module ``module`` for ``spec = "module:attr"``.

    ``what`` names the setting in error messages (e.g. ``"reward 'x:y'"``). Raises ValueError when
    ``spec`` is malformed, the module cannot be imported or has no such attribute.
    """
    module, _, attr = str(spec).partition(":")
    if not module or not attr:
        raise ValueError(f"{what}: an import path must look like 'module:attr' (e.g. my_rewards:exact), got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"{what}: cannot import module {module!r} ({e}); the module must be importable from the "
                         f"working directory ({cwd}) or the Python path") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ValueError(f"{what}: module {module!r} has no attribute {attr!r}") from None
    return obj
