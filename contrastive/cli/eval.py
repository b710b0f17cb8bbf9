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
    python linear_eval.py --cfg                            # print the eval config and exit
    python linear_eval.py eval=transfer checkpoint=<ckpt> eval.transfer.root=<folder> \
        eval.transfer.datasets=[pets,caltech101]           # transfer table (a Hydra app: -m works)
    python linear_eval.py embed [checkpoint=...] embed.images=<folder> [embed.format=npy|parquet|both]

Modes (eval.mode): linear (frozen encoder, probe on cached features), finetune,
knn (weighted, k=200, t=0.1), all (the three, one table). Defaults: configs/eval.yaml.
Results: <checkpoint>.eval/<mode>-<dataset>-labels<fraction>.json beside the checkpoint.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import List, Optional

from contrastive.config.compose import load_config, to_yaml
from contrastive.config.overrides import parse_command_line, split_run_overrides
from contrastive.core.errors import ConfigError, ContrastiveError
from contrastive.core.logs import setup_logging

USAGE = __doc__


def main(argv: Optional[List[str]] = None) -> dict:
    """Run an evaluation (or ``results`` / ``export``); returns what it printed as a dict.

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
    try:
        parsed = parse_command_line(argv)
        unknown = [f for f in parsed.flags if f not in ("--cfg", "-c", "job")]
        if unknown:
            raise ConfigError(f"linear_eval.py takes key=value overrides and --cfg, not '{unknown[0]}' (see --help)")
        if parsed.prints_config:
            own, _, hydra = split_run_overrides(parsed.overrides)
            print(to_yaml(load_config(own + hydra, "eval")))
            return {}
        if command == "results":
            return _results(parsed.overrides)
        if command == "export":
            return _export(parsed.overrides)
        if command == "embed":
            from contrastive.evaluation.transfer.embed import embed_command

            return embed_command(parsed.overrides)
        from contrastive.evaluation import evaluate, prepare

        setup = prepare(parsed.overrides)
    except ContrastiveError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    print(f"evaluating {setup.checkpoint} ({setup.run_cfg.dataset.name}, {len(setup.train_index)} labeled train / "
          f"{len(setup.splits.val)} test images, {setup.feature_dim}-d features, {setup.device.type})")
    summary = evaluate(setup)
    _print_table(summary)
    return summary


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
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    results: List[dict] = []

    def job(cfg) -> dict:
        from hydra.core.hydra_config import HydraConfig

        try:
            result = run_transfer(finalize_app_config(cfg), Path(HydraConfig.get().runtime.output_dir))
        except ContrastiveError as err:
            print(f"error: {err}", file=sys.stderr)
            raise SystemExit(2) from None
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
