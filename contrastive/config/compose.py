"""Loading and validating run configs.

Configs are composed with Hydra's compose API from ``configs/`` (struct mode on, so
a misspelled key is an error) and checked before any data is loaded or any file is
written. Each job is composed once: the defaults that a command-line value is checked
against are read from that same composition (:func:`recording_defaults`), and Hydra's
multi-line exceptions become one readable line (:mod:`contrastive.config.messages`).
"""

from __future__ import annotations

import functools
import importlib.util
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from contrastive.config.messages import one_line, type_problem, with_close_keys
from contrastive.config.overrides import normalise_argv, override_key, with_plugin_search_path
from contrastive.config.schema import declared_trainer_keys, register_schemas
from contrastive.core.errors import ConfigError


@functools.lru_cache(maxsize=1)
def config_dir() -> Path:
    """The installed ``contrastive.configs`` folder: inside the package in a wheel, the
    repository's ``configs/`` in an editable install (pyproject maps one to the other)."""
    spec = importlib.util.find_spec("contrastive.configs")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("contrastive.configs is not installed; run `pip install -e .` in the repository")
    return Path(list(spec.submodule_search_locations)[0]).resolve()


def __getattr__(name: str) -> Any:
    if name == "CONFIG_DIR":  # the name of earlier versions, resolved on first use instead of on import
        return config_dir()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextmanager
def recording_defaults() -> Iterator[List[Dict[str, Any]]]:
    """While active, every Hydra composition appends its config as it stands just before the
    command-line values are applied (the defaults those values replace) to the yielded list.

    Hydra merges the defaults list, then applies the value overrides in one step
    (``ConfigLoaderImpl._apply_overrides_to_config``); reading the config there gives the
    reference for type checks and key suggestions without composing a second time.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    seen: List[Dict[str, Any]] = []
    original = ConfigLoaderImpl.__dict__.get("_apply_overrides_to_config")
    if not isinstance(original, staticmethod):  # another Hydra: load_config composes the reference itself
        yield seen
        return

    def apply(overrides: Any, cfg: DictConfig) -> None:
        seen.append(_plain(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"])))
        original.__func__(overrides, cfg)

    ConfigLoaderImpl._apply_overrides_to_config = staticmethod(apply)
    try:
        yield seen
    finally:
        ConfigLoaderImpl._apply_overrides_to_config = original


def _plain(cfg: DictConfig) -> Dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=False, enum_to_str=True)


def _compose(config_name: str, overrides: Sequence[str]) -> DictConfig:
    """Hydra's compose API on ``contrastive.configs`` (plus plugin config folders).

    Inside the Hydra app (``train.py``), Hydra is already initialised on the same folder.
    """
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    register_schemas()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name, overrides=list(overrides), return_hydra_config=True)
    with initialize_config_dir(str(config_dir()), version_base="1.3"):
        return compose(config_name, overrides=list(overrides), return_hydra_config=True)


def load_config(overrides: Sequence[str], config_name: str = "train") -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with command-line style overrides (once).

    The library way to get the config ``train.py`` would use (no run folder is made).

    Args:
        overrides: e.g. ``["method=simclr", "method.temperature=0.2"]``. A
            ``hydra.searchpath=[file:///my/configs]`` override adds config folders
            (plugin packages can instead declare a ``contrastive.configs`` entry point).

    Raises:
        ConfigError: Unknown group option, unknown key, or a malformed or mistyped value.
    """
    from hydra.errors import HydraException

    overrides = with_plugin_search_path(overrides)
    if config_name == "train":  # trainer.<any Trainer argument>=v, as on the command line
        overrides = normalise_argv(overrides, declared_trainer_keys())
    with recording_defaults() as seen:
        try:
            cfg = _compose(config_name, overrides)
            with _hydra_config_for_resolving(cfg):
                with open_dict(cfg):
                    del cfg["hydra"]
                OmegaConf.resolve(cfg)  # a bad ${...} is reported here, not mid-run
        except (HydraException, OmegaConfBaseException) as err:
            raise ConfigError(with_close_keys(one_line(err), seen[-1] if seen else None)) from None
    check_value_types(cfg, seen[-1] if seen else _defaults_of(config_name, overrides))
    return _closed(cfg)


def _defaults_of(config_name: str, overrides: Sequence[str]) -> Dict[str, Any]:
    """The composition with the group choices only: the reference the values are checked against,
    composed a second time only where :func:`recording_defaults` cannot hook this Hydra."""
    groups = {folder.name for folder in config_dir().iterdir() if folder.is_dir()}
    choices = [o for o in overrides if override_key(o).lstrip("+~") in groups or override_key(o).startswith("hydra.")]
    cfg = _compose(config_name, choices)
    return _plain(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))


def finalize_app_config(cfg: DictConfig) -> DictConfig:
    """The config Hydra hands a job (``train.py``): resolved, plain, in struct mode.

    Its values were checked when the command line was composed before Hydra started
    (:func:`contrastive.cli.hydra_app.prevalidate`); the schemas checked them again as Hydra composed."""
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as err:
        raise ConfigError(one_line(err)) from None
    return _closed(cfg)


def _closed(cfg: DictConfig) -> DictConfig:
    """A plain (schema-free: choices are strings, not enums) copy of ``cfg``, in struct mode."""
    try:
        plain = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True, enum_to_str=True, throw_on_missing=True))
    except OmegaConfBaseException as err:  # a schema key that no YAML gave a value
        raise ConfigError(one_line(err)) from None
    OmegaConf.set_struct(plain, True)
    return plain


@contextmanager
def _hydra_config_for_resolving(cfg: DictConfig) -> Iterator[None]:
    """``${hydra:...}`` resolves against HydraConfig; outside the app, set it for the
    resolution only (Lightning's DDP launcher reads HydraConfig to detect a Hydra app)."""
    from hydra.core.hydra_config import HydraConfig

    holder = HydraConfig.instance()
    if holder.cfg is not None:
        yield
        return
    holder.set_config(cfg)
    try:
        yield
    finally:
        holder.cfg = None


def check_value_types(cfg: DictConfig, reference: Optional[Dict[str, Any]]) -> None:
    """Reject a value whose type does not fit its YAML default (``batch_size=abc``,
    ``plugins=x.py`` instead of ``plugins=[x.py]``) before it reaches code that would crash on it.

    Args:
        cfg: The composed config.
        reference: The same composition before the command-line values (:func:`recording_defaults`).
    """
    if reference is None:
        return
    problem = type_problem(reference, OmegaConf.to_container(cfg, resolve=True, enum_to_str=True), "")
    if problem:
        raise ConfigError(problem)


def to_yaml(cfg: DictConfig) -> str:
    return OmegaConf.to_yaml(cfg, resolve=True)
