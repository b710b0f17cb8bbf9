"""Hydra's and OmegaConf's composition errors as one readable line, with close matches.

Hydra reports over several lines (``Could not find 'method/nope'`` + the options on the
lines below; ``Error merging override ...`` + the OmegaConf error it wraps); the command
lines print one ``error: ...`` line instead.
"""

from __future__ import annotations

import difflib
import re
from typing import Any, Dict, Optional

PLUGIN_YAML_HINT = (" (a plugin's {group}/<name>.yaml is found through a 'contrastive.configs' entry point of its "
                    "package or hydra.searchpath=[file:///abs/folder/holding/{group}/])")
#: OmegaConf's validation messages (a schema's type or choice) -> the words of :func:`type_problem`.
_EXPECTED = (("could not be converted to Integer", "expected an integer"),
             ("could not be converted to Float", "expected a number"),
             ("is not a valid bool", "expected true or false"))


def one_line(err: BaseException) -> str:
    """The first useful line of a Hydra/OmegaConf error (a schema violation in its cause chain wins)."""
    schema = _schema_problem(err)
    if schema:
        return schema
    lines = [line.strip() for line in str(err).splitlines() if line.strip()]
    if not lines:
        return err.__class__.__name__
    lines[0] = re.sub(r"^In '[^']*': ", "", lines[0])
    missing = re.match(r"Could not find '([^/']+)/([^']+)'", lines[0])
    if missing and any(line.startswith("Available options") for line in lines):
        i = next(i for i, line in enumerate(lines) if line.startswith("Available options"))
        options = [line for line in lines[i + 1:] if not line.startswith(("Config search path", "provider="))]
        group = missing.group(1)
        hint = PLUGIN_YAML_HINT.format(group=group) if group in ("method", "backbone", "dataset", "experiment") else ""
        return f"unknown {group} '{missing.group(2)}'; valid choices: {', '.join(options)}{hint}"
    if lines[0].startswith("Could not override") and any("To append" in line for line in lines):
        key = lines[0].split("'")[1] if "'" in lines[0] else "?"
        return f"unknown config key '{key}' (check its spelling; `+{key}=...` adds a new key)"
    return lines[0]


def _schema_problem(err: Optional[BaseException]) -> Optional[str]:
    """``trainer.max_epochs='abc' is not valid: expected an integer`` from OmegaConf's ValidationError
    (the type or choice a :mod:`contrastive.config.schema` dataclass declares)."""
    from omegaconf.errors import ValidationError

    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, ValidationError) and err.full_key:
            first = str(err).strip().splitlines()[0]
            value = err.value
            choice = re.match(r"Invalid value '.*', expected one of \[(.*)\]", first)
            if choice:
                options = [o.strip() for o in choice.group(1).split(",")]
                close = difflib.get_close_matches(str(value), options, n=1, cutoff=0.6)
                hint = f"; did you mean {close[0]}?" if close else ""
                return f"{err.full_key}={value!r} is not valid; choose one of {', '.join(options)}{hint}"
            for found, expected in _EXPECTED:
                if found in first:
                    return f"{err.full_key}={value!r} is not valid: {expected}"
            return f"{err.full_key}={value!r} is not valid: {first}"
        err = err.__cause__ or err.__context__
    return None


def with_close_keys(message: str, reference: Optional[Dict[str, Any]]) -> str:
    """``unknown config key 'method.temprature'`` + the keys it may have meant, from ``reference``
    (the composed config before the command-line values)."""
    found = re.match(r"unknown config key '([^']+)'", message)
    if not found or reference is None:
        return message
    parent, _, leaf = found.group(1).rpartition(".")
    node: Any = reference
    for part in parent.split(".") if parent else []:
        node = node.get(part) if isinstance(node, dict) else None
    keys = [str(k) for k in node] if isinstance(node, dict) else []
    close = difflib.get_close_matches(leaf, keys, n=3, cutoff=0.6)
    prefix = f"{parent}." if parent else ""
    if close:
        return f"unknown config key '{found.group(1)}'; did you mean {', '.join(prefix + c for c in close)}?"
    return f"unknown config key '{found.group(1)}'; valid keys here: {', '.join(prefix + k for k in keys)}"


def type_problem(default: Any, value: Any, path: str) -> Optional[str]:
    """Why ``value`` does not fit the type of its YAML ``default`` (recursively), or None."""
    if isinstance(default, dict):
        if not isinstance(value, dict):
            return f"{path}={value!r} is not valid: expected a group of keys"
        for key, sub in default.items():
            if key in value:
                problem = type_problem(sub, value[key], f"{path}.{key}" if path else str(key))
                if problem:
                    return problem
        return None
    if isinstance(default, list) and isinstance(value, str):
        return f"{path}={value!r} is not valid: expected a list, e.g. {path}=[{value}]"
    if isinstance(default, bool):
        return f"{path}={value!r} is not valid: expected true or false" if isinstance(value, str) else None
    if isinstance(default, int) and (isinstance(value, str) or (isinstance(value, float) and not value.is_integer())):
        return f"{path}={value!r} is not valid: expected an integer"
    if isinstance(default, float) and isinstance(value, str):
        return f"{path}={value!r} is not valid: expected a number"
    return None
