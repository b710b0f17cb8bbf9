"""``train.py`` as a real Hydra application, with one-line errors.

Hydra owns the command line: ``-m``/``--multirun`` sweeps (basic or any installed
launcher, e.g. ``hydra/launcher=submitit_slurm``), ``hydra.run.dir``/``hydra.sweep.dir``,
``--cfg job|hydra|all``, ``--info``, ``--help``, shell completion and ``${hydra:...}``
interpolations all behave as in any Hydra app. Before Hydra starts, ``contrastive-train``

* parses the command line (:func:`contrastive.config.overrides.parse_command_line`: the
  ``trainer.<Lightning argument>`` rewrite, plugin config folders),
* composes every job of the command once through :func:`contrastive.config.compose.load_config`
  (:func:`prevalidate`), so a misspelled key, an unknown option or a bad value is one
  ``error:`` line instead of Hydra's multi-line report, and
* points a single ``resume=...`` run's ``hydra.run.dir`` at the folder of the checkpoint
  it continues, so the resumed run keeps writing where it left off.

``linear_eval.py`` runs through :func:`run_hydra` too; its ``dataset``/``backbone`` overrides
(of the checkpoint's run config, not of ``configs/eval.yaml``) travel through Hydra encoded
(:func:`encode_group_overrides`), so they sweep like any other key.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, List, Optional, Sequence

from contrastive.config.overrides import override_key, sweep_jobs
from contrastive.core.errors import ConfigError


def run_hydra(task: Callable, argv: Sequence[str], config_dir: Path, config_name: str, prog: str) -> None:
    """Run ``task`` as ``@hydra.main`` would with ``sys.argv = [prog, *argv]``."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra

    from contrastive.config.schema import register_schemas

    register_schemas()  # the trainer/optimizer/scheduler schemas the YAML names
    saved = sys.argv
    sys.argv = [prog, *argv]
    try:
        hydra.main(config_path=str(config_dir), config_name=config_name, version_base="1.3")(task)()
    finally:
        sys.argv = saved
        GlobalHydra.instance().clear()  # the compose API (load_config) can initialise again


def prevalidate(overrides: Sequence[str], multirun: bool, config_name: str,
                check: Optional[Callable] = None):
    """Compose each job (see :func:`sweep_jobs`) once, with one-line errors; ``check(cfg)`` runs on each.

    Returns:
        The first job's composed config.
    """
    from contrastive.config.compose import load_config

    first = None
    for job in sweep_jobs(overrides, multirun):
        cfg = load_config(job, config_name)
        if check is not None:
            check(cfg)
        first = cfg if first is None else first
    return first


def check_flags(flags: Sequence[str], prog: str) -> None:
    """Only Hydra's own flags (``-m``, ``--cfg job``, ``--info`` ...), in one line otherwise.

    Raises:
        ConfigError: A flag Hydra does not take (its argparse error would be several lines).
    """
    from hydra._internal.utils import get_args_parser

    known = {option for action in get_args_parser()._actions for option in action.option_strings}
    unknown = [f for f in flags if f.startswith("-") and f.split("=", 1)[0] not in known]
    if unknown:
        raise ConfigError(f"{prog} takes key=value overrides and Hydra's flags (-m, --cfg job|hydra|all, --info, ...), "
                          f"not '{unknown[0]}' (see --help)")


def check_overrides(overrides: Sequence[str], multirun: bool) -> None:
    """Hydra's grammar on ``overrides``, and no sweep (``key=a,b``) without ``-m``, in one line.

    Raises:
        ConfigError: A malformed override, or a sweep in a single run.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser, sweeps = OverridesParser.create(), []
    for text in overrides:
        try:
            (override,) = parser.parse_overrides([text])
        except HydraException as err:
            raise ConfigError(f"'{text}' is not a valid override: {str(err).strip().splitlines()[0]}") from None
        if override.is_sweep_override():
            sweeps.append(text)
    if sweeps and not multirun:
        raise ConfigError(f"'{sweeps[0]}' is a sweep; add -m (--multirun) to run one job per value, "
                          "or quote a value that holds a comma")


_ADD = "add__"


def encode_group_overrides(overrides: Sequence[str], groups: Sequence[str], node: str) -> List[str]:
    """Overrides of config groups that the app's config does not hold, as keys Hydra composes
    under ``node``: ``dataset.root=/data`` -> ``++<node>.dataset__root=/data``, ``+backbone.kwargs.x=1``
    -> ``++<node>.add__backbone__kwargs__x=1``. The value is untouched, so ``dataset=a,b`` still
    sweeps; :func:`decode_group_overrides` restores each job's overrides.

    Raises:
        ConfigError: ``~<group>...`` or ``<group>@<package>=...`` (neither can be carried).
    """
    out = []
    for arg in overrides:
        key, sep, value = arg.partition("=")
        bare = key.lstrip("+~")
        if override_key(arg).split(".")[0] not in groups:
            out.append(arg)
        elif key.startswith("~") or "@" in bare or not sep:
            raise ConfigError(f"'{arg}' is not valid here: {', '.join(groups)} take <group>=<option>, "
                              "<group>.<key>=<value> and +<group>.<key>=<value>")
        else:
            out.append(f"++{node}.{_ADD if key.startswith('+') else ''}{bare.replace('.', '__')}={value}")
    return out


def decode_group_overrides(overrides: Sequence[str], node: str) -> List[str]:
    """The inverse of :func:`encode_group_overrides` on one job's overrides (Hydra's ``overrides.task``)."""
    out = []
    for arg in overrides:
        key, sep, value = arg.partition("=")
        if override_key(arg).split(".")[0] != node:
            out.append(arg)
            continue
        token = override_key(key)[len(node) + 1:]
        add = token.startswith(_ADD)
        out.append(("+" if add else "") + token[len(_ADD) if add else 0:].replace("__", ".") + sep + value)
    return out


def quoted(value: str) -> str:
    """``value`` as a quoted Hydra override value (a path with spaces, commas or brackets;
    Hydra reads a backslash as an escape only before a quote)."""
    return "'" + value.replace("'", "\\'") + "'"
