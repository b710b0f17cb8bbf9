"""Independent references for ``parity.py``: one module per method, each registering a :class:`Reference`.

Every module in this folder is imported by :func:`load_all`; a module registers its class with
``@register("<method>")`` where ``<method>`` is our registry's name for the same method.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Dict, Type

from benchmarks.reproduce.parity.references.base import Reference

REFERENCES: Dict[str, Type[Reference]] = {}


def register(name: str):
    """Class decorator: ``@register("simclr")`` makes the class the reference of our ``method=simclr``."""

    def wrap(cls: Type[Reference]) -> Type[Reference]:
        if name in REFERENCES:
            raise ValueError(f"two references for method {name!r}: {REFERENCES[name].__name__} and {cls.__name__}")
        REFERENCES[name] = cls
        return cls

    return wrap


def load_all() -> Dict[str, Type[Reference]]:
    """Imports every reference module of this folder and returns ``{method: Reference class}``."""
    for info in pkgutil.iter_modules(__path__):
        if info.name != "base":
            importlib.import_module(f"{__name__}.{info.name}")
    return dict(sorted(REFERENCES.items()))
