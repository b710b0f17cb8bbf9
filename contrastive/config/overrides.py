"""The one override parser of ``train.py`` and ``linear_eval.py``: Hydra flags and overrides.

* ``--cfg`` alone means ``--cfg job``;
* ``trainer.<name>=...`` for any ``pytorch_lightning.Trainer`` argument that the YAML does
  not list becomes ``+trainer.<name>=...`` (names the Trainer does not take are rejected,
  with close matches);
* a sweep (``-m key=a,b``) expands into the jobs that cover every value once, so each can
  be composed and checked before Hydra runs.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from typing import List, Sequence

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


def normalise_argv(argv: Sequence[str], declared_trainer_keys: Sequence[str]) -> List[str]:
    """``--cfg`` alone means ``--cfg job``; ``trainer.<Trainer arg>=v`` becomes ``+trainer.<arg>=v``.

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
        out.append(_trainer_override(arg, declared_trainer_keys))
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
        close = difflib.get_close_matches(name, list(params) + list(declared), n=3, cutoff=0.6)
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
