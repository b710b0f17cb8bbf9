"""Evaluate a trained encoder: ``python linear_eval.py [checkpoint=...] [key=value ...]``.

Examples:
    python linear_eval.py                                  # newest run's last.ckpt, linear probe
    python linear_eval.py checkpoint=outputs/<run>/<time>/checkpoints/best.ckpt eval.mode=all
    python linear_eval.py eval.mode=knn eval.knn.k=20 eval.knn.temperature=0.07
    python linear_eval.py eval.label_fraction=0.01         # semi-supervised: 1% of the labels
    python linear_eval.py eval.plot=true                   # + t-SNE of the test features (PNG)
    python linear_eval.py dataset=cifar10 dataset.root=/data       # another dataset (transfer)
    python linear_eval.py checkpoint=random backbone=resnet18      # random-init baseline
    python linear_eval.py results [output_dir=outputs]     # every run's results as one table
    python linear_eval.py export [checkpoint=...] [export.path=backbone.pt]   # plain state_dict
    python linear_eval.py --cfg                            # print the eval config and exit (--cfg job|hydra|all)
    python linear_eval.py -m checkpoint=a.ckpt,b.ckpt dataset=synthetic eval.mode=knn,linear   # 4 jobs
    python linear_eval.py eval=transfer checkpoint=<ckpt> eval.transfer.root=<folder> \
        eval.transfer.datasets=[pets,caltech101]           # transfer table (a Hydra app: -m works)
    python linear_eval.py embed [checkpoint=...] embed.images=<folder> [embed.format=npy|parquet|both]

Modes (eval.mode): linear (frozen encoder, probe on cached features), finetune,
knn (weighted, k=200, t=0.1), all (the three, one table). Defaults: configs/eval.yaml.
Results: <checkpoint>.eval/<mode>-<dataset>-labels<fraction>.json beside the checkpoint.

The evaluation is a Hydra app like ``train.py``: ``-m`` sweeps every combination (basic or an
installed launcher, ``hydra/launcher=...``), ``--cfg job|hydra|all`` prints. Bad input is one
``error:`` line (exit 2) before any work: a single evaluation is fully checked first (config,
checkpoint, model, data); a sweep checks each swept value's config, checkpoint and model first,
and a job whose data does not fit (e.g. ``eval.knn.k`` above the labeled images) stops the sweep
with its own ``error:`` line. ``dataset``/``backbone`` overrides change the checkpoint's run
config; Hydra composes them as ``run_overrides.<group>__<key>`` (what ``--cfg job`` shows).
Hydra's folders: a single evaluation writes none of its own; Hydra's run folder is the
checkpoint's ``<ckpt>.eval/`` with ``hydra.output_subdir=null`` (``hydra.run.dir=<folder>``
puts Hydra's ``.hydra/`` record there instead). A sweep keeps one ``.hydra/`` record per job
in ``hydra.sweep.dir`` (default ``<output_dir>/eval-multirun/<time>/<job number>/``); its results
still land beside each checkpoint. Hydra does not set up logging (``hydra/job_logging=none``).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, List, NoReturn, Optional, Sequence

from contrastive.config.compose import load_config, to_yaml
from contrastive.config.overrides import override_key, parse_command_line, split_run_overrides
from contrastive.core.errors import ConfigError, ContrastiveError
from contrastive.core.logs import setup_logging

USAGE = __doc__
#: The node of the Hydra-composed eval config that carries the ``dataset``/``backbone``
#: overrides of the checkpoint's run config (``--cfg job`` shows it).
RUN_NODE = "run_overrides"


def main(argv: Optional[List[str]] = None) -> Any:
    """Run an evaluation (or ``results`` / ``export`` / ``embed``); returns what it printed as a
    dict (a list of them for a ``-m`` sweep, ``{}`` when Hydra only printed something).

    Bad input exits with code 2 and one ``error: ...`` line on stderr, before any work.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        return {}
    setup_logging()
    command = argv.pop(0) if argv and argv[0] in ("results", "export", "embed") else "evaluate"
    if command == "evaluate" and any(a.split("=", 1) == ["eval", "transfer"] for a in argv):
        return _transfer(argv)
    if command == "evaluate":
        return _evaluate(argv)
    try:
        parsed = parse_command_line(argv)
        unknown = [f for f in parsed.flags if f not in ("--cfg", "-c", "job")]
        if unknown:
            raise ConfigError(f"linear_eval.py {command} takes key=value overrides and --cfg, not '{unknown[0]}' (see --help)")
        if parsed.prints_config:
            own, _, hydra = split_run_overrides(parsed.overrides)
            print(to_yaml(load_config(own + hydra, "eval")))
            return {}
        if command == "results":
            return _results(parsed.overrides)
        if command == "export":
            return _export(parsed.overrides)
        from contrastive.evaluation.transfer.embed import embed_command

        return embed_command(parsed.overrides)
    except ContrastiveError as err:
        fail(err)


def fail(err: BaseException) -> NoReturn:
    """One ``error:`` line on stderr, exit status 2, no traceback."""
    print(f"error: {err}", file=sys.stderr)
    raise SystemExit(2) from None


def _evaluate(argv: List[str]) -> Any:
    """``eval.mode=linear|finetune|knn|all``: a Hydra app (``-m`` sweeps, launchers,
    ``hydra.run.dir``/``hydra.sweep.dir``, ``--cfg``). A single evaluation is fully prepared
    (:func:`contrastive.evaluation.prepare`) before Hydra starts; a sweep loads each swept
    value's config, checkpoint and model first, and each job then prepares its own data."""
    from contrastive.cli.hydra_app import check_flags, check_overrides, encode_group_overrides, run_hydra
    from contrastive.config.compose import config_dir
    from contrastive.config.overrides import sweep_jobs
    from contrastive.evaluation.run_config import RUN_GROUPS

    setup = None
    try:
        command = parse_command_line(argv)
        check_flags(command.flags, "linear_eval.py")
        check_overrides(command.overrides, command.multirun)
        encoded = encode_group_overrides(command.overrides, RUN_GROUPS, RUN_NODE)
        if command.printing:
            if command.prints_config:
                for job in sweep_jobs(command.overrides, command.multirun):
                    own, _, hydra = split_run_overrides(job)
                    load_config(own + hydra, "eval")
        elif command.multirun:
            from contrastive.evaluation.loading import load_model

            for job in sweep_jobs(command.overrides, True):
                load_model(job)
        else:
            from contrastive.evaluation import prepare

            setup = prepare(command.overrides)
    except ContrastiveError as err:
        fail(err)
    summaries: List[dict] = []

    def job(cfg) -> dict:
        summary = _evaluate_job(setup)
        summaries.append(summary)
        return summary

    # the flags last: argparse would read an override after a bare ``--info`` as its value
    hydra_argv = encoded + hydra_settings(command.overrides, setup.eval_dir if setup else None) + command.flags
    run_hydra(job, hydra_argv, config_dir(), "eval", prog="linear_eval.py")
    if not summaries:
        return {}
    return summaries if command.multirun else summaries[0]


def _evaluate_job(setup) -> dict:
    """One Hydra job: the prepared ``setup`` (a single evaluation), or this sweep job's,
    prepared from its overrides; then the protocols, the table and the result files."""
    from contrastive.evaluation import evaluate, prepare

    if setup is None:
        from hydra.core.hydra_config import HydraConfig

        from contrastive.cli.hydra_app import decode_group_overrides

        overrides = HydraConfig.get().overrides
        searchpath = [str(o) for o in overrides.hydra if override_key(str(o)) == "hydra.searchpath"]
        try:
            setup = prepare(decode_group_overrides([str(o) for o in overrides.task], RUN_NODE) + searchpath)
        except ContrastiveError as err:
            fail(err)
    print(f"evaluating {setup.checkpoint} ({setup.run_cfg.dataset.name}, {len(setup.train_index)} labeled train / "
          f"{len(setup.splits.val)} test images, {setup.feature_dim}-d features, {setup.device.type})")
    summary = evaluate(setup)
    _print_table(summary)
    return summary


def hydra_settings(overrides: Sequence[str], eval_dir: Optional[Path]) -> List[str]:
    """Hydra settings of the plain evaluation that the command line did not set itself: no
    Hydra logging setup (contrastive logs itself), and for a single evaluation, Hydra's run
    folder is the checkpoint's ``.eval/`` folder without a ``.hydra/`` record."""
    from contrastive.cli.hydra_app import quoted

    given = {override_key(o) for o in overrides}
    out = [f"{group}=none" for group in ("hydra/job_logging", "hydra/hydra_logging") if group not in given]
    if eval_dir is not None and "hydra.run.dir" not in given:
        out.append(f"hydra.run.dir={quoted(str(eval_dir))}")
        if "hydra.output_subdir" not in given:
            out.append("hydra.output_subdir=null")
    return out


def _transfer(argv: List[str]):
    """``eval=transfer``: a Hydra app (``-m`` sweeps, launchers, ``hydra.run.dir``) running
    :func:`contrastive.evaluation.transfer.run.run_transfer` per job; every job's config is
    composed and checked first, so bad input is one ``error:`` line before any work."""
    from contrastive.cli.hydra_app import prevalidate, run_hydra
    from contrastive.config.compose import config_dir, finalize_app_config
    from contrastive.evaluation.transfer.run import run_transfer, validate_transfer_config

    try:
        command = parse_command_line(argv)
        if not command.printing:
            prevalidate(command.overrides, command.multirun, "eval",
                        check=lambda cfg: validate_transfer_config(cfg.eval.transfer))
    except ContrastiveError as err:
        fail(err)
    results: List[dict] = []

    def job(cfg) -> dict:
        from hydra.core.hydra_config import HydraConfig

        try:
            result = run_transfer(finalize_app_config(cfg), Path(HydraConfig.get().runtime.output_dir))
        except ContrastiveError as err:
            fail(err)
        results.append(result)
        return result

    run_hydra(job, command.argv, config_dir(), "eval", prog="linear_eval.py")
    if not results:
        return {}
    return results if command.multirun else results[0]


def _print_table(summary: dict) -> None:
    from contrastive.evaluation.report import format_table

    print("\n" + format_table(summary["results"]))
    print(f"\ncheckpoint: {summary['checkpoint']} (sha256 {summary['checkpoint_sha256'][:12]})")
    print(f"written:    {summary['eval_dir']}/ ({', '.join(Path(f).name for f in summary['files'])})")


def _results(argv: List[str]) -> dict:
    """``results [output_dir=...]``: every training run with its evaluations (terminal table,
    ``runs.csv``, ``runs.md``, ``runs.png`` in output_dir), then every evaluation result."""
    from contrastive.evaluation.report import SUMMARY_COLUMNS, collect_results, format_table
    from contrastive.evaluation.runs import collect_runs, format_runs, write_runs

    cfg = load_config(argv, "eval")
    output_dir = Path(str(cfg.output_dir))
    if not output_dir.is_dir():
        raise ConfigError(f"output_dir '{output_dir}' does not exist; pass output_dir=<folder holding the runs>")
    runs = collect_runs(output_dir)
    rows = collect_results(output_dir)
    written: List[Path] = []
    if runs:
        written = write_runs(runs, output_dir)
        print(f"training runs under {output_dir}:\n" + format_runs(runs))
    if rows:
        print(f"\nevaluations:\n" + format_table(rows, SUMMARY_COLUMNS))
    if not runs and not rows:
        print(f"no runs under '{output_dir}' yet (train with contrastive-train, evaluate with contrastive-eval)")
    if written:
        print(f"\nwritten: {', '.join(str(p) for p in written)}")
    return {"output_dir": str(output_dir), "runs": runs, "rows": rows, "files": [str(p) for p in written]}


def _export(argv: List[str]) -> dict:
    """``export [checkpoint=...] [export.path=...]``: the backbone as a plain state_dict."""
    from contrastive.evaluation.export import export_backbone
    from contrastive.evaluation.loading import eval_dir, load_model

    loaded = load_model(argv)
    target = Path(str(loaded.cfg.export.path)) if loaded.cfg.export.path else eval_dir(loaded) / "backbone.pt"
    image_size = int(loaded.model.data.image_size)
    record = export_backbone(loaded.model.backbone, loaded.run_cfg.backbone, image_size, target,
                             {"checkpoint": loaded.checkpoint, "checkpoint_sha256": loaded.checkpoint_sha256})
    print(f"backbone '{record['backbone']}' ({record['feature_dim']}-d features) written to {target}\nload it with:\n\n{record['load']}")
    return record


if __name__ == "__main__":
    main()


def eval_console() -> None:
    """The ``contrastive-eval`` console script (``python linear_eval.py``)."""
    main()
