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
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from contrastive.config.overrides import sweep_jobs


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
