"""Transfer evaluation (Kornblith, Shlens, Le 2019 protocol, as SimCLR Appendix B.8 and
SimCLIC Table 2 report it): frozen features, L2-regularised multinomial logistic
regression chosen on validation, refit on train + validation, scored on test; or
fine-tuning with SGD + Nesterov momentum over a grid chosen on validation.

Modules: :mod:`.datasets` (the 12 datasets, their splits and metrics), :mod:`.extract`
(features cached per checkpoint, dataset and split), :mod:`.linear` (L-BFGS logistic
regression), :mod:`.finetune`, :mod:`.run` (``run_transfer``: checkpoints x datasets),
:mod:`.report` (``transfer.{md,csv,json,png}``), :mod:`.references` (published rows),
:mod:`.embed` (``contrastive-eval embed``).
"""

from contrastive.evaluation.transfer.linear import (REG_GRID, LinearTransferResult, fit_logistic_regression,
                                                    linear_transfer, regularisation_path)

__all__ = ["REG_GRID", "LinearTransferResult", "fit_logistic_regression", "linear_transfer",
           "regularisation_path", "run_transfer"]


def __getattr__(name: str):
    if name == "run_transfer":  # lazily: run imports the evaluation loaders
        from contrastive.evaluation.transfer.run import run_transfer

        return run_transfer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
