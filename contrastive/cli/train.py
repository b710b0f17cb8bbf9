"""The ``contrastive-train`` command line (= ``python train.py``).

Usage (any Hydra override or flag; ``contrastive-train --help`` lists the config groups)::

    contrastive-train                                  # SimCLR on the embedded synthetic data
    contrastive-train method=simclr dataset=cifar10 backbone=resnet18 trainer.max_epochs=200
    contrastive-train experiment=simclr_cifar10        # a paper recipe
    contrastive-train -m method.temperature=0.2,0.5    # a sweep: one run folder per job
    contrastive-train resume=auto                      # continue the latest run of the same run_name
    contrastive-train --cfg job                        # print the composed config and exit
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from contrastive.core.errors import ConfigError, ContrastiveError
from contrastive.core.logs import setup_logging

log = logging.getLogger("contrastive")
def fail(err: BaseException, code: int) -> None:
    """One ``error:`` line on stderr, no traceback."""
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(code) from None


def _check_job(cfg) -> None:
    """What a job checks before any data: plugins import, registered names, values."""
    from contrastive.config.plugins import import_plugins, load_builtin_methods
    from contrastive.engine.run import validate_config

    import_plugins(cfg.plugins, names=(cfg.method.name, cfg.backbone.name, cfg.dataset.name))
    load_builtin_methods()
    validate_config(cfg)
    output_dir = Path(str(cfg.output_dir))
    try:  # Hydra creates the run folder below it before the job starts: fail here, in one line
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"output folder '{output_dir}' cannot be written ({err.strerror}); "
                          "set output_dir=<a writable folder>") from None


def _resume_into_its_folder(argv: List[str], overrides: Sequence[str], cfg) -> List[str]:
    """``resume=...`` of a single run: Hydra's run folder is the checkpoint's run folder."""
    if any(o.split("=", 1)[0].lstrip("+") == "hydra.run.dir" for o in overrides):
        return argv
    from contrastive.engine.run import resolve_resume

    checkpoint = resolve_resume(cfg)
    if checkpoint is None or checkpoint.parent.name != "checkpoints":
        return argv
    return argv + [f"hydra.run.dir={checkpoint.parent.parent.resolve()}"]


def train_main(argv: Optional[List[str]] = None) -> Any:
    """Run ``contrastive-train``. Returns the run's summary dict (a list of them for ``-m``,
    ``{}`` when Hydra only printed something). Bad input exits with one ``error:`` line."""
    from contrastive.cli.hydra_app import prevalidate, run_hydra
    from contrastive.config.compose import config_dir
    from contrastive.config.overrides import parse_command_line
    from contrastive.config.schema import declared_trainer_keys

    setup_logging()
    try:
        command = parse_command_line(sys.argv[1:] if argv is None else argv, declared_trainer_keys())
        argv, multirun = command.argv, command.multirun
        if not command.printing or command.prints_config:
            first = prevalidate(command.overrides, multirun, "train", check=None if command.printing else _check_job)
            if not multirun and not command.printing:
                argv = _resume_into_its_folder(argv, command.overrides, first)
    except ContrastiveError as err:
        fail(err, 2)
    summaries: List[Dict[str, Any]] = []

    def train_job(cfg) -> Dict[str, Any]:
        summary = _run_job(cfg)
        summaries.append(summary)
        return summary

    run_hydra(train_job, argv, config_dir(), "train", prog=sys.argv[0] if sys.argv else "contrastive-train")
    if not summaries:
        return {}
    return summaries if multirun else summaries[0]


def _run_job(cfg) -> Dict[str, Any]:
    """One Hydra job: check, build, train, print the summary."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from contrastive.config.compose import finalize_app_config

    hydra_cfg = HydraConfig.get()
    overrides = [str(o) for o in hydra_cfg.overrides.task]
    try:
        cfg = finalize_app_config(cfg)
        from contrastive.engine.run import fit, prepare_run

        run = prepare_run(cfg, run_dir=Path(hydra_cfg.runtime.output_dir), overrides=overrides,
                          own_folder_only=hydra_cfg.mode == RunMode.MULTIRUN)
    except ContrastiveError as err:
        _remove_hydra_only_folder(Path(hydra_cfg.runtime.output_dir), Path(str(cfg.output_dir)))
        fail(err, 2)
    log.info("run folder: %s", run.run_dir)
    from contrastive.engine.method import NonFiniteLossError

    try:
        summary = fit(run)
    except NonFiniteLossError as err:  # the message names the step and loss terms; no traceback
        fail(err, 3)
    from contrastive.engine.run import is_rank_zero

    if is_rank_zero():  # under DDP every process returns the summary; one prints it
        print_summary(summary)
    return summary


def _remove_hydra_only_folder(run_dir: Path, output_dir: Path) -> None:
    """A job stopped by bad input leaves nothing behind: remove the run folder Hydra made
    (when it holds only Hydra's ``.hydra/`` record) and the parents it left empty."""
    import shutil

    if not run_dir.is_dir() or any(p.name != ".hydra" for p in run_dir.iterdir()):
        return
    shutil.rmtree(run_dir, ignore_errors=True)
    parent, stop = run_dir.parent, output_dir.resolve()
    while parent.resolve() != stop and stop in parent.resolve().parents and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def print_summary(summary: Dict[str, Any]) -> None:
    """The run's last lines: folder, kNN monitor, checkpoint, curves, then the headline metric
    (final, best and the epoch of the best; supervised runs: the test error and top-1)."""
    from contrastive.engine.headline import format_headline

    lines = [f"run folder:         {summary['run_dir']}"]
    if summary.get("knn_top1_random_init") is not None:
        lines.append(f"kNN top-1 (random init): {summary['knn_top1_random_init']:6.2f}%")
    if summary.get("knn_top1") is not None:
        lines.append(f"kNN top-1 (trained):     {summary['knn_top1']:6.2f}%   after {summary['epochs']} epochs, "
                     f"{summary['train_seconds']} s")
    lines.append(f"last checkpoint:    {summary['last_checkpoint']}")
    if summary.get("curves_png"):
        lines.append(f"training curves:    {summary['curves_png']}")
    head = summary.get("headline")
    if head is not None:
        line = f"headline {format_headline(head)}"
        if summary.get("test_top1") is not None:
            line += f";  test top-1 {summary['test_top1']:6.2f}%"
        lines.append(line)
    print("\n" + "\n".join(lines))


def train_console() -> None:
    """The ``contrastive-train`` console script (exit status 0; errors exit 2 or 3)."""
    train_main()
