"""Transfer evaluation (Kornblith, Shlens, Le 2019 protocol, as SimCLR Appendix B.8 and
SimCLIC Table 2 report it): frozen features, L2-regularised multinomial logistic
regression chosen on validation, refit on train + validation, scored on test.

Implemented so far: the linear protocol on cached features (:mod:`.linear`) and the
metrics (:mod:`contrastive.metrics.transfer`). Datasets, ``run_transfer``, fine-tuning
and the report are not implemented yet.
"""

from contrastive.evaluation.transfer.linear import (REG_GRID, LinearTransferResult, fit_logistic_regression,
                                                    linear_transfer, regularisation_path)

__all__ = ["REG_GRID", "LinearTransferResult", "fit_logistic_regression", "linear_transfer",
           "regularisation_path"]
