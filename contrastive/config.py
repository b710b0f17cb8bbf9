"""Loading, extending and validating run configs.

Configs are composed with Hydra's compose API from ``configs/`` (struct mode on, so
a misspelled key is an error) and checked before any data is loaded or any file is
written. Hydra's multi-line exceptions become one readable line.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.metadata import entry_points
from pathlib import Path
from typing import Iterable, List, Sequence

from hydra import compose, initialize_config_dir
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from contrastive.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
ENTRY_POINT_GROUP = "contrastive.methods"


def load_config(overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with command-line style overrides.

    Args:
        overrides: e.g. ``["method=simclr", "method.temperature=0.2"]``. A
            ``hydra.searchpath=[file:///my/configs]`` override adds config folders
            (how plugin methods ship their YAML).

    Raises:
        ConfigError: Unknown group option, unknown key, or a malformed override.
    """
    try:
        with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
            cfg = compose(config_name, overrides=list(overrides))
        # Resolve interpolations now: a bad ${...} is reported here, not mid-run.
        OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_one_line(str(err))) from None
    OmegaConf.set_struct(cfg, True)
    return cfg


def _one_line(message: str) -> str:
    """Hydra's errors span lines ('Could not find...\\nAvailable options in ...')."""
    import re

    lines = [line.strip() for line in message.splitlines() if line.strip()]
    if lines:
        lines[0] = re.sub(r"^In '[^']*': ", "", lines[0])
    missing = re.match(r"Could not find '([^/']+)/([^']+)'", lines[0]) if lines else None
    if missing and any(line.startswith("Available options") for line in lines):
        i = next(i for i, line in enumerate(lines) if line.startswith("Available options"))
        options = [line for line in lines[i + 1 :] if not line.startswith(("Config search path", "provider="))]
        return f"unknown {missing.group(1)} '{missing.group(2)}'; valid choices: {', '.join(options)}"
    first = lines[0] if lines else message
    if first.startswith("Could not override") and any("To append" in line for line in lines):
        key = first.split("'")[1] if "'" in first else "?"
        return f"unknown config key '{key}' (check its spelling; `+{key}=...` adds a new key)"
    return first


def import_plugins(plugins: Iterable[str] = (), entry_point_group: str = ENTRY_POINT_GROUP) -> List[str]:
    """Import user modules that register methods, backbones or datasets.

    Only modules the user names are imported: ``plugins`` entries (a dotted module
    name or a ``.py`` file path) and packages that declare an entry point in the
    ``contrastive.methods`` group of their ``pyproject.toml``.

    Returns:
        The names of the imported modules.
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
                module_spec.loader.exec_module(module)
            imported.append(name)
        else:
            try:
                importlib.import_module(spec)
            except ModuleNotFoundError as err:
                raise ConfigError(f"plugin module '{spec}' cannot be imported: {err}") from None
            imported.append(spec)
    for ep in entry_points(group=entry_point_group):
        ep.load()
        imported.append(ep.value)
    return imported


def load_builtin_methods() -> None:
    """Import the methods that ship with the project (``methods/*.py``)."""
    import methods  # noqa: F401  (its __init__ imports every method file)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
