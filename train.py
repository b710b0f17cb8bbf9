"""Train a representation: ``python train.py method=simclr [key=value ...]``.

Examples:
    python train.py                                   # SimCLR on the embedded synthetic data
    python train.py method=simclr dataset=cifar10 backbone=resnet18 trainer.max_epochs=200
    python train.py experiment=simclr_cifar10         # a paper recipe
    python train.py resume=auto                       # continue the latest run of the same run_name
    python train.py --cfg                             # print the resolved config and exit
"""

from __future__ import annotations

import logging
import os
import sys
from typing import List, Optional

from contrastive.cli import setup_logging
from contrastive.config import load_config, to_yaml
from contrastive.errors import ContrastiveError

USAGE = __doc__


def main(argv: Optional[List[str]] = None) -> dict:
    """Run training; returns the summary dict. Bad input exits with one ``error:`` line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "-h" in argv or "--help" in argv:
        print(USAGE)
        return {}
    setup_logging()
    try:
        cfg = load_config([a for a in argv if a != "--cfg"])
        if "--cfg" in argv:
            print(to_yaml(cfg))
            return {}
        from contrastive.engine import fit, prepare_run

        run = prepare_run(cfg)
    except ContrastiveError as err:
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    logging.getLogger("contrastive").info("run folder: %s", run.run_dir)
    from contrastive.method import NonFiniteLossError

    try:
        summary = fit(run)
    except NonFiniteLossError as err:  # the message names the step and loss terms; no traceback
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(3) from None
    _print_summary(summary)
    return summary


def _print_summary(summary: dict) -> None:
    lines = [f"run folder:         {summary['run_dir']}"]
    if summary.get("knn_top1_random_init") is not None:
        lines.append(f"kNN top-1 (random init): {summary['knn_top1_random_init']:6.2f}%")
    if summary.get("knn_top1") is not None:
        lines.append(f"kNN top-1 (trained):     {summary['knn_top1']:6.2f}%   after {summary['epochs']} epochs, {summary['train_seconds']} s")
    lines.append(f"last checkpoint:    {summary['last_checkpoint']}")
    if summary.get("curves_png"):
        lines.append(f"training curves:    {summary['curves_png']}")
    print("\n" + "\n".join(lines))


if __name__ == "__main__":
    main()
