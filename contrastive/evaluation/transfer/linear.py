"""Linear transfer: L2-regularised multinomial logistic regression fit with L-BFGS.

Protocol (Kornblith, Shlens, Le 2019, followed by SimCLR Appendix B.8): on frozen
features, fit an L2-regularised multinomial logistic regression with L-BFGS, choose
the regularisation strength on a validation split, refit on train + validation with
that strength, and score once on test.

Grid: SimCLR Appendix B.8: 45 logarithmically spaced values between 1e-6 and 1e5
(attributed, its text is not in our copy of the papers; values as the protocol is summarised from it).

Warm start: not stated in the paper: our choice because neighbouring strengths on a
log grid have close optima, so the path is walked from the strongest regularisation
(the near-zero solution) to the weakest, each fit starting from the previous one;
this cuts the L-BFGS iterations of the 45 fits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F

#: SimCLR Appendix B.8: 45 log-spaced L2 strengths from 1e-6 to 1e5.
REG_GRID: Tuple[float, ...] = tuple(torch.logspace(-6, 5, 45, dtype=torch.float64).tolist())

Metric = Callable[[torch.Tensor, torch.Tensor], float]
Head = Tuple[torch.Tensor, torch.Tensor]  # (weight [C, D], bias [C])


def _objective(x: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor,
               l2: float) -> torch.Tensor:
    """Mean cross-entropy plus ``l2 / 2 * ||W||^2`` (the bias is not regularised).

    A float multi-hot ``y`` ``[N, C]`` (VOC2007) gets one binary logistic regression per
    class (sigmoid cross-entropy summed over classes); not stated in the paper: our choice
    because a softmax cannot score several labels of one image independently.
    """
    logits = x @ weight.T + bias  # [N, C]
    if y.is_floating_point():
        data = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="sum") / len(y)
    else:
        data = F.cross_entropy(logits, y)
    return data + 0.5 * l2 * weight.pow(2).sum()


def fit_logistic_regression(x: torch.Tensor, y: torch.Tensor, num_classes: int, l2: float,
                            max_iter: int, init: Optional[Head] = None) -> Tuple[Head, int]:
    """Full-batch multinomial logistic regression with ``torch.optim.LBFGS``.

    Args:
        x: ``[N, D]`` float features.
        y: ``[N]`` int64 labels, or float multi-hot ``[N, C]``.
        num_classes: C.
        l2: L2 strength on the weights.
        max_iter: L-BFGS iteration cap.
        init: a previous ``(weight [C, D], bias [C])`` to warm-start from; zeros otherwise.

    Returns:
        ``((weight [C, D], bias [C]), function evaluations used)``.
    """
    if init is None:
        weight = torch.zeros(num_classes, x.shape[1], dtype=x.dtype)  # [C, D]
        bias = torch.zeros(num_classes, dtype=x.dtype)  # [C]
    else:
        weight, bias = init[0].clone(), init[1].clone()
    weight.requires_grad_(True)
    bias.requires_grad_(True)
    opt = torch.optim.LBFGS([weight, bias], lr=1.0, max_iter=max_iter, tolerance_grad=1e-6,
                            tolerance_change=1e-9, history_size=20, line_search_fn="strong_wolfe")
    evals = 0

    def closure() -> torch.Tensor:
        nonlocal evals
        evals += 1
        opt.zero_grad()
        loss = _objective(x, y, weight, bias, l2)
        loss.backward()
        return loss

    opt.step(closure)
    return (weight.detach(), bias.detach()), evals


def predict(head: Head, x: torch.Tensor) -> torch.Tensor:
    """Logits ``[N, C]`` of ``x`` ``[N, D]``."""
    return x @ head[0].T + head[1]  # [N, C]


def regularisation_path(train_x: torch.Tensor, train_y: torch.Tensor, val_x: torch.Tensor,
                        val_y: torch.Tensor, num_classes: int, metric: Metric, grid: Tuple[float, ...],
                        max_iter: int, warm_start: bool) -> Tuple[List[float], int]:
    """Validation score of each strength in ``grid`` (fit on train only).

    Walks the grid from the strongest strength to the weakest; with ``warm_start``
    each fit starts from the previous solution. Reads only train and validation.

    Returns:
        (scores aligned with ``grid``, total L-BFGS function evaluations).
    """
    order = sorted(range(len(grid)), key=lambda i: -grid[i])
    scores = [0.0] * len(grid)
    head: Optional[Head] = None
    total = 0
    for i in order:
        head, evals = fit_logistic_regression(train_x, train_y, num_classes, grid[i], max_iter,
                                              init=head if warm_start else None)
        total += evals
        scores[i] = metric(predict(head, val_x), val_y)
    return scores, total


@dataclass
class LinearTransferResult:
    """Outcome of :func:`linear_transfer`.

    Attributes:
        l2: the strength chosen on validation.
        val_score: its validation score (fit on train).
        test_score: score on test after refitting on train + validation.
        val_scores: validation score per strength of the grid.
        evals: L-BFGS function evaluations along the path.
    """

    l2: float
    val_score: float
    test_score: float
    val_scores: List[float] = field(default_factory=list)
    evals: int = 0


def linear_transfer(splits: Dict[str, Tuple[torch.Tensor, torch.Tensor]], num_classes: int, metric: Metric,
                    grid: Tuple[float, ...], max_iter: int,
                    warm_start: bool) -> LinearTransferResult:
    """Select on validation, refit on train + validation, score on test.

    Args:
        splits: ``{"train", "val", "test"}`` -> (features ``[N, D]``, labels ``[N]``).
            Test is read once, after the strength is fixed.
        num_classes: C.
        metric: ``metric(logits [N, C], labels [N]) -> float``, higher is better.
        grid: L2 strengths (:data:`REG_GRID` for the paper's).
        max_iter: L-BFGS iteration cap per fit.
        warm_start: warm-start along the regularisation path.
    """
    (tx, ty), (vx, vy) = splits["train"], splits["val"]
    scores, evals = regularisation_path(tx, ty, vx, vy, num_classes, metric, grid, max_iter, warm_start)
    best = max(range(len(grid)), key=lambda i: (scores[i], grid[i]))  # ties: stronger regularisation
    head, _ = fit_logistic_regression(torch.cat([tx, vx]), torch.cat([ty, vy]), num_classes,
                                      grid[best], max_iter)
    test_x, test_y = splits["test"]
    return LinearTransferResult(l2=grid[best], val_score=scores[best],
                                test_score=metric(predict(head, test_x), test_y),
                                val_scores=scores, evals=evals)
