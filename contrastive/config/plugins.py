"""User plugins: modules and installed packages that register methods, backbones or datasets."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Iterable, List

from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS

ENTRY_POINT_GROUP = "contrastive.methods"


def import_plugins(plugins: Iterable[str] = (), entry_point_group: str = ENTRY_POINT_GROUP,
                   names: Iterable[str] = ()) -> List[str]:
    """Import user modules that register methods, backbones or datasets.

    Only modules the user names are imported: ``plugins`` entries (a dotted module
    name or a ``.py`` file path), and installed entry points of the
    ``contrastive.methods`` group whose name is one of ``names`` (the method,
    backbone and dataset the run asks for). Nothing is discovered by scanning.

    Returns:
        The names of the imported modules.

    Raises:
        ConfigError: A plugin that is missing or fails to import (one line: the error
            and where in the plugin it happened).
    """
    imported = []
    for spec in plugins:
        spec = str(spec)
        if spec.endswith(".py"):
            path = Path(spec).expanduser().resolve()
            if not path.is_file():
                raise ConfigError(f"plugin file '{spec}' does not exist")
            name = f"contrastive_plugin_{path.stem}"
            if name not in sys.modules:
                module_spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[name] = module
                try:
                    module_spec.loader.exec_module(module)
                except Exception as err:
                    del sys.modules[name]
                    raise _plugin_error(spec, err) from None
            imported.append(name)
        else:
            try:
                importlib.import_module(spec)
            except ModuleNotFoundError as err:
                raise ConfigError(f"plugin module '{spec}' cannot be imported: {err}") from None
            except ConfigError:
                raise
            except Exception as err:
                raise _plugin_error(spec, err) from None
            imported.append(spec)
    wanted = {str(n) for n in names}
    for ep in entry_points(group=entry_point_group):
        if ep.name in wanted:
            try:
                ep.load()
            except Exception as err:
                raise _plugin_error(f"{ep.name} = {ep.value}", err) from None
            imported.append(ep.value)
    return imported


def _plugin_error(spec: str, err: BaseException) -> ConfigError:
    import traceback

    frames = traceback.extract_tb(err.__traceback__)
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    if isinstance(err, SyntaxError) and err.filename:
        where = f" at {err.filename}:{err.lineno}"
    message = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return ConfigError(f"plugin '{spec}' failed to import: {err.__class__.__name__}: {message}{where}")


def load_builtin_methods() -> None:
    """Register the methods that ship with the project (``methods/*.py``, installed as
    ``contrastive.methods``). The method registry also does this on its first lookup."""
    METHODS.load_builtin()
