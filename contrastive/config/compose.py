"""Loading, extending and validating run configs.

Configs are composed with Hydra's compose API from ``configs/`` (struct mode on, so
a misspelled key is an error) and checked before any data is loaded or any file is
written. Hydra's multi-line exceptions become one readable line.
"""

from __future__ import annotations

import importlib.util
from importlib.metadata import entry_points
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, List, Sequence

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from contrastive.core.errors import ConfigError

def _config_dir() -> Path:
    """The installed ``contrastive.configs`` folder: inside the package in a wheel, the
    repository's ``configs/`` in an editable install (pyproject maps one to the other)."""
    spec = importlib.util.find_spec("contrastive.configs")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("contrastive.configs is not installed; run `pip install -e .` in the repository")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


CONFIG_DIR = _config_dir()
PLUGIN_YAML_HINT = (" (a plugin's {group}/<name>.yaml is found through a 'contrastive.configs' entry point of its "
                    "package or hydra.searchpath=[file:///abs/folder/holding/{group}/])")


def _compose(config_name: str, overrides: Sequence[str], return_hydra_config: bool = False) -> DictConfig:
    """Hydra's compose API on ``contrastive.configs`` (plus plugin config folders).

    Inside the Hydra app (``train.py``), Hydra is already initialised on the same folder.
    """
    if GlobalHydra.instance().is_initialized():
        return compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=return_hydra_config)


CONFIG_ENTRY_POINT_GROUP = "contrastive.configs"


def declared_trainer_keys() -> List[str]:
    """The keys of ``configs/train.yaml``'s ``trainer:`` block (the rest of ``trainer.*`` are Trainer arguments)."""
    return [str(k) for k in OmegaConf.load(CONFIG_DIR / "train.yaml").trainer.keys()]


def plugin_config_sources() -> List[str]:
    """Config folders of installed plugin packages: the ``contrastive.configs`` entry points.

    A package that ships methods with their YAML declares, in its ``pyproject.toml``::

        [project.entry-points."contrastive.configs"]
        my_methods = "my_methods.configs"     # a package holding method/<name>.yaml ...

    (or ``"file:///abs/folder"``), and runs find ``method=<name>`` without ``hydra.searchpath``.
    """
    sources = []
    for ep in sorted(entry_points(group=CONFIG_ENTRY_POINT_GROUP), key=lambda e: e.name):
        value = ep.value.strip()
        sources.append(value if "://" in value else f"pkg://{value}")
    return sources


def with_plugin_search_path(overrides: Sequence[str]) -> List[str]:
    """``overrides`` with the plugin config folders added to ``hydra.searchpath`` (merged
    with a ``hydra.searchpath=[...]`` the user gave)."""
    sources = plugin_config_sources()
    if not sources:
        return list(overrides)
    out, merged = [], False
    for override in overrides:
        key, sep, value = override.partition("=")
        if key.lstrip("+") == "hydra.searchpath" and sep and value.startswith("[") and value.endswith("]"):
            given = [v.strip() for v in value[1:-1].split(",") if v.strip()]
            override = f"{key}=[{','.join(given + [s for s in sources if s not in given])}]"
            merged = True
        out.append(override)
    return out if merged else out + [f"hydra.searchpath=[{','.join(sources)}]"]


def load_config(overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with command-line style overrides.

    The library way to get the config ``train.py`` would use (no run folder is made).

    Args:
        overrides: e.g. ``["method=simclr", "method.temperature=0.2"]``. A
            ``hydra.searchpath=[file:///my/configs]`` override adds config folders
            (plugin packages can instead declare a ``contrastive.configs`` entry point).

    Raises:
        ConfigError: Unknown group option, unknown key, or a malformed override.
    """
    overrides = with_plugin_search_path(overrides)
    if config_name == "train":  # trainer.<any Trainer argument>=v, as on the command line
        from contrastive.config.overrides import normalise_argv

        overrides = normalise_argv(overrides, declared_trainer_keys())
    try:
        cfg = _compose(config_name, overrides, return_hydra_config=True)
        with _hydra_config_for_resolving(cfg):
            with open_dict(cfg):
                del cfg["hydra"]
            # Resolve interpolations now: a bad ${...} is reported here, not mid-run.
            OmegaConf.resolve(cfg)
    except (HydraException, OmegaConfBaseException) as err:
        raise ConfigError(_with_close_keys(_one_line(str(err)), overrides, config_name)) from None
    check_value_types(cfg, overrides, config_name)
    OmegaConf.set_struct(cfg, True)
    return cfg


def _with_close_keys(message: str, overrides: Sequence[str], config_name: str) -> str:
    """``unknown config key 'method.temprature'`` + the keys it may have meant."""
    import difflib
    import re

    found = re.match(r"unknown config key '([^']+)'", message)
    if not found:
        return message
    parent, _, leaf = found.group(1).rpartition(".")
    try:
        reference = _compose(config_name, [o for o in overrides if _is_group_override(o)])
        node = OmegaConf.select(reference, parent) if parent else reference
    except (HydraException, OmegaConfBaseException):
        return message
    keys = list(node.keys()) if isinstance(node, DictConfig) else []
    close = difflib.get_close_matches(leaf, [str(k) for k in keys], n=3, cutoff=0.6)
    prefix = f"{parent}." if parent else ""
    if close:
        return f"unknown config key '{found.group(1)}'; did you mean {', '.join(prefix + c for c in close)}?"
    return f"unknown config key '{found.group(1)}'; valid keys here: {', '.join(prefix + str(k) for k in keys)}"


def finalize_app_config(cfg: DictConfig, overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """The config Hydra hands a job (``train.py``): type-checked, resolved, in struct mode."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(_one_line(str(err))) from None
    check_value_types(cfg, overrides, config_name)
    OmegaConf.set_struct(cfg, True)
    return cfg


@contextmanager
def _hydra_config_for_resolving(cfg: DictConfig) -> Iterator[None]:
    """``${hydra:...}`` resolves against HydraConfig; outside the app, set it for the
    resolution only (Lightning's DDP launcher reads HydraConfig to detect a Hydra app)."""
    holder = HydraConfig.instance()
    if holder.cfg is not None:
        yield
        return
    holder.set_config(cfg)
    try:
        yield
    finally:
        holder.cfg = None


def _is_group_override(override: str) -> bool:
    key = override.split("=", 1)[0].lstrip("+~").split("@", 1)[0]
    return key.startswith("hydra.") or ("." not in key and (CONFIG_DIR / key).is_dir())


def check_value_types(cfg: DictConfig, overrides: Sequence[str], config_name: str = "train") -> None:
    """Reject a command-line value whose type does not fit its default (``batch_size=abc``,
    ``plugins=x.py`` instead of ``plugins=[x.py]``) before it reaches code that would crash on it.

    The defaults come from composing the same config groups without the value overrides.
    """
    if all(_is_group_override(o) for o in overrides):
        return
    try:
        reference = _compose(config_name, [o for o in overrides if _is_group_override(o)])
        reference = OmegaConf.to_container(reference, resolve=True)
    except (HydraException, OmegaConfBaseException):
        return  # e.g. a plugin group that only exists with its overrides; the values are checked later
    problem = _type_problem(reference, OmegaConf.to_container(cfg, resolve=True), "")
    if problem:
        raise ConfigError(problem)


def _type_problem(default, value, path: str):
    if isinstance(default, dict):
        if not isinstance(value, dict):
            return f"{path}={value!r} is not valid: expected a group of keys"
        for key, sub in default.items():
            if key in value:
                problem = _type_problem(sub, value[key], f"{path}.{key}" if path else str(key))
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
        group = missing.group(1)
        hint = PLUGIN_YAML_HINT.format(group=group) if group in ("method", "backbone", "dataset", "experiment") else ""
        return f"unknown {group} '{missing.group(2)}'; valid choices: {', '.join(options)}{hint}"
    first = lines[0] if lines else message
    if first.startswith("Could not override") and any("To append" in line for line in lines):
        key = first.split("'")[1] if "'" in first else "?"
        return f"unknown config key '{key}' (check its spelling; `+{key}=...` adds a new key)"
    return first


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
