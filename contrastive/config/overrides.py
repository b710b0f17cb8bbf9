"""The one override parser of ``train.py`` and ``linear_eval.py``: Hydra flags and overrides.

:func:`parse_command_line` is what both command lines call first:

* ``--cfg`` alone means ``--cfg job``;
* ``trainer.<name>=...`` for any ``pytorch_lightning.Trainer`` argument that the YAML does
  not list becomes ``+trainer.<name>=...`` (names the Trainer does not take are rejected,
  with close matches);
* installed plugin packages' config folders join ``hydra.searchpath``;
* a sweep (``-m key=a,b``) expands into the jobs that cover every value once
  (:func:`sweep_jobs`), so each can be composed and checked before Hydra runs;
* ``linear_eval.py`` sends ``dataset``/``backbone`` overrides to the checkpoint's run
  config and the rest to ``configs/eval.yaml`` (:func:`split_run_overrides`).
"""

from __future__ import annotations

import difflib
import functools
import inspect
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import List, Optional, Sequence, Tuple

from contrastive.core.errors import ConfigError

#: Hydra's own flags that take a value (``--cfg job``), and those that stand alone.
VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name", "-cn",
               "--config-dir", "-cd", "--experimental-rerun", "--shell-completion", "-sc"}
INFO_FLAGS = {"--info", "-i"}
#: ``trainer.`` keys that the framework sets itself (they cannot come from the config).
RESERVED_TRAINER_KEYS = {
    "logger": "loggers are chosen with logger=[csv,tensorboard,wandb,mlflow]",
    "callbacks": "the framework adds its checkpoint, SIGTERM and progress callbacks itself",
    "plugins": "the framework's atomic checkpoint writer is the checkpoint plugin",
    "default_root_dir": "the run folder is hydra.run.dir (see output_dir and run_name)",
    "enable_checkpointing": "last.ckpt and best.ckpt are always written",
    "enable_progress_bar": "use trainer.progress_bar=true|false",
    "use_distributed_sampler": "the framework's seed-fixed batch sampler shards the data",
}


@functools.lru_cache(maxsize=1)
def trainer_parameters() -> tuple:
    """The keyword arguments of ``pytorch_lightning.Trainer`` (its signature, not a copy)."""
    import pytorch_lightning as pl

    return tuple(p for p in inspect.signature(pl.Trainer.__init__).parameters if p != "self")


def split_argv(argv: Sequence[str]) -> tuple:
    """``(hydra flags with their values, overrides)`` in command-line order."""
    flags, overrides, i = [], [], 0
    argv = list(argv)
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("-"):  # an override never starts with '-' (deletion is '~key')
            flags.append(arg)
            takes_value = arg in VALUE_FLAGS or (arg in INFO_FLAGS and i + 1 < len(argv) and "=" not in argv[i + 1]
                                                 and not argv[i + 1].startswith("-"))
            if takes_value and i + 1 < len(argv):
                flags.append(argv[i + 1])
                i += 1
        else:
            overrides.append(arg)
        i += 1
    return flags, overrides


def normalise_argv(argv: Sequence[str], declared_trainer_keys: Optional[Sequence[str]]) -> List[str]:
    """``--cfg`` alone means ``--cfg job``; ``trainer.<Trainer arg>=v`` becomes ``+trainer.<arg>=v``
    (not when ``declared_trainer_keys`` is None: a config without a ``trainer:`` block).

    Raises:
        ConfigError: ``trainer.<name>`` that is neither in the YAML nor a Trainer argument,
            or one that the framework sets itself.
    """
    out: List[str] = []
    argv = list(argv)
    for i, arg in enumerate(argv):
        if arg in ("--cfg", "-c") and (i + 1 == len(argv) or argv[i + 1] not in ("job", "hydra", "all")):
            out += [arg, "job"]
            continue
        out.append(arg if declared_trainer_keys is None else _trainer_override(arg, declared_trainer_keys))
    return out


def _trainer_override(arg: str, declared: Sequence[str]) -> str:
    key, sep, value = arg.partition("=")
    prefix = key[: len(key) - len(key.lstrip("+~"))]
    parts = key.lstrip("+~").split(".")
    if not sep or parts[0] != "trainer" or len(parts) != 2 or prefix == "~":
        return arg
    name = parts[1]
    if name in RESERVED_TRAINER_KEYS:
        raise ConfigError(f"trainer.{name} cannot be set: {RESERVED_TRAINER_KEYS[name]}")
    if name in declared:
        return arg.lstrip("+") if prefix == "+" else arg
    params = trainer_parameters()
    if name not in params:
        close = difflib.get_close_matches(name, list(dict.fromkeys([*params, *declared])), n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join('trainer.' + c for c in close)}?" if close else \
            "; any pytorch_lightning.Trainer argument or a key of configs/train.yaml's trainer: block is valid"
        raise ConfigError(f"unknown trainer option 'trainer.{name}'{hint}")
    return f"+trainer.{name}={value}"


def sweep_jobs(overrides: Sequence[str], multirun: bool) -> List[List[str]]:
    """Override lists that cover every value of a sweep at least once (all values of one
    swept key with the other keys at their first value), for checking before Hydra runs."""
    if not multirun:
        return [list(overrides)]
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except HydraException as err:
        raise ConfigError(str(err).strip().splitlines()[0]) from None
    choices: List[List[str]] = []
    for override, text in zip(parsed, overrides):
        if override.is_sweep_override():
            key = text.split("=", 1)[0]
            values = [f"{key}={v}" for v in override.sweep_string_iterator()]
            choices.append(values or [text])
        else:
            choices.append([text])
    first = [c[0] for c in choices]
    jobs = [first]
    for i, values in enumerate(choices):
        for value in values[1:]:
            jobs.append(first[:i] + [value] + first[i + 1:])
    return jobs


def override_key(arg: str) -> str:
    """The key of an override, without ``+``/``++``/``~`` and ``@package``: ``+trainer.x=1`` -> ``trainer.x``."""
    return arg.split("=", 1)[0].lstrip("+~").split("@", 1)[0]


def is_multirun(flags: Sequence[str]) -> bool:
    return any(f in ("-m", "--multirun") for f in flags)


def only_hydra_output(flags: Sequence[str]) -> bool:
    """``--help``, ``--info``, ``--cfg``, shell completion: Hydra prints and nothing trains."""
    return any(f in ("-h", "--help", "--hydra-help", "--version", "--cfg", "-c", "-sc", "--shell-completion")
               or f in INFO_FLAGS for f in flags)


@dataclass
class CommandLine:
    """A parsed command line: Hydra flags (with their values) and overrides, both normalised."""

    flags: List[str]
    overrides: List[str]

    @property
    def argv(self) -> List[str]:
        return self.flags + self.overrides

    @property
    def multirun(self) -> bool:
        return is_multirun(self.flags)

    @property
    def printing(self) -> bool:
        """Hydra only prints (``--help``, ``--cfg``, ``--info``, shell completion)."""
        return only_hydra_output(self.flags)

    @property
    def prints_config(self) -> bool:
        return any(f in ("--cfg", "-c") for f in self.flags)


def parse_command_line(argv: Sequence[str], declared_trainer_keys: Optional[Sequence[str]] = None) -> CommandLine:
    """``argv`` of ``train.py`` (``declared_trainer_keys`` given: ``trainer.*`` is rewritten) or
    ``linear_eval.py`` as flags and overrides, with the plugin config folders on the search path.

    Raises:
        ConfigError: A ``trainer.<name>`` that no YAML declares and the Trainer does not take.
    """
    flags, overrides = split_argv(normalise_argv(argv, declared_trainer_keys))
    if not any(f in ("-sc", "--shell-completion") for f in flags):
        overrides = with_plugin_search_path(overrides)
    return CommandLine(flags, overrides)


def split_run_overrides(overrides: Sequence[str], groups: Sequence[str] = ("dataset", "backbone")
                        ) -> Tuple[List[str], List[str], List[str]]:
    """``linear_eval.py``: ``(eval.yaml overrides, run-config overrides of groups, hydra.* overrides)``."""
    own, run, hydra = [], [], []
    for arg in overrides:
        key = override_key(arg)
        if key.startswith("hydra."):
            hydra.append(arg)
        elif key.split(".")[0] in groups:
            run.append(arg)
        else:
            own.append(arg)
    return own, run, hydra


def group_choice(overrides: Sequence[str], group: str) -> Optional[str]:
    """The last ``group=option`` of ``overrides`` (``backbone=resnet18`` -> ``resnet18``), or None."""
    chosen = [a.split("=", 1)[1] for a in overrides if "=" in a and a.split("=", 1)[0].lstrip("+") == group]
    return chosen[-1] if chosen else None


def group_values(overrides: Sequence[str], group: str) -> List[str]:
    """The ``group.key=value`` overrides of ``group``."""
    return [a for a in overrides if override_key(a).startswith(group + ".")]


CONFIG_ENTRY_POINT_GROUP = "contrastive.configs"


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
