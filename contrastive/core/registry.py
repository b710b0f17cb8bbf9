"""Name -> factory registries, in the style of timm's ``@register_model``.

Every pluggable piece of the framework (methods, backbones, datasets) lives in a
:class:`Registry`. Registering the same name twice is an error, and asking for an
unknown name raises a :class:`ValueError` that lists the registered choices, so a
typo on the command line is caught before any work starts.

Example:
    >>> BACKBONES = Registry("backbone")
    >>> @BACKBONES.register("tiny")
    ... def tiny(): ...
    >>> BACKBONES.get("tiny") is tiny
    True
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, Iterator, List, Optional, TypeVar

from contrastive.core.errors import ConfigError

T = TypeVar("T")


class UnknownNameError(ConfigError):
    """A name no entry is registered under (a ``ValueError``, printed as one line by the CLIs)."""


class Registry:
    """A named collection of factories (classes or functions).

    Args:
        kind: What the registry holds, used in error messages ("method", "backbone").
        hint: Appended to the unknown-name error (e.g. how plugins register names).
        builtin: A package that registers the built-in entries when imported. It is
            imported by name on the first lookup, so the registry (a bottom layer) never
            imports the layers that fill it; registering needs no lookup and loads nothing.
    """

    def __init__(self, kind: str, hint: str = "", builtin: Optional[str] = None) -> None:
        self.kind = kind
        self.hint = hint
        self.builtin = builtin
        self._builtin_loaded = builtin is None
        self._entries: Dict[str, Any] = {}

    def load_builtin(self) -> None:
        """Import the package of built-in entries (once); lookups call this themselves."""
        if not self._builtin_loaded:
            self._builtin_loaded = True  # before the import: the package registers into us
            try:
                importlib.import_module(self.builtin)
            except BaseException:
                self._builtin_loaded = False
                raise

    def register(self, name: Optional[str] = None) -> Callable[[T], T]:
        """Decorator that registers a class or function under ``name``.

        Args:
            name: Registry key; defaults to the object's ``__name__`` in lower case.

        Raises:
            ValueError: If ``name`` is already registered by a different object.
        """

        def decorator(obj: T) -> T:
            key = name if name is not None else obj.__name__.lower()  # type: ignore[attr-defined]
            existing = self._entries.get(key)
            if existing is not None and _qualname(existing) != _qualname(obj):
                raise ValueError(
                    f"{self.kind} '{key}' is already registered by {_qualname(existing)}; "
                    f"pick another name for {_qualname(obj)}"
                )
            # Re-registering the same object (a module imported twice under the
            # same name, e.g. by a test runner) is harmless and allowed.
            self._entries[key] = obj
            return obj

        return decorator

    def get(self, name: str) -> Any:
        """Return the factory registered as ``name``.

        Raises:
            UnknownNameError: If ``name`` is unknown; the message lists the valid choices.
        """
        self.load_builtin()
        if name not in self._entries:
            raise UnknownNameError(
                f"unknown {self.kind} '{name}'; valid choices: {', '.join(self.names()) or '(none)'}{self.hint}"
            )
        return self._entries[name]

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Build the object registered as ``name`` with the given arguments."""
        return self.get(name)(*args, **kwargs)

    def names(self) -> List[str]:
        """Registered names, sorted."""
        self.load_builtin()
        return sorted(self._entries)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (used by tests that register throw-away entries)."""
        self._entries.pop(name, None)

    def __contains__(self, name: object) -> bool:
        self.load_builtin()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {self.names()})"


def _qualname(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', repr(obj))}"


def _plugin_hint(kind: str) -> str:
    return (f" (a {kind} from a plugin registers when its module is imported: plugins=[my_module or file.py], "
            f"or an installed package's 'contrastive.methods' entry point named '<{kind} name>')")


# The built-in methods live in methods/ (installed as contrastive.methods), above every
# library layer: the registry imports them by name on first lookup.
METHODS = Registry("method", _plugin_hint("method"), builtin="contrastive.methods")
BACKBONES = Registry("backbone", _plugin_hint("backbone"), builtin="contrastive.backbones")
DATASETS = Registry("dataset", _plugin_hint("dataset"), builtin="contrastive.data")
