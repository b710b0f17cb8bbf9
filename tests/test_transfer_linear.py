"""Linear transfer protocol: the grid, L-BFGS logistic regression, warm start, selection on validation."""

import math

import pytest
import torch
import torch.nn.functional as F

from contrastive.evaluation.transfer.linear import (REG_GRID, fit_logistic_regression, linear_transfer,
                                                    predict, regularisation_path)
from contrastive.metrics.transfer import top1_accuracy


def _blobs(n, seed, dim=6, classes=3):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(classes, dim, generator=torch.Generator().manual_seed(123)) * 2.0
    y = torch.arange(n) % classes  # [N]
    x = centres[y] + torch.randn(n, dim, generator=g)  # [N, D]
    return x.double(), y


def test_grid_is_45_log_spaced_values_from_1e_minus6_to_1e5():
    assert len(REG_GRID) == 45
    assert REG_GRID[0] == pytest.approx(1e-6) and REG_GRID[-1] == pytest.approx(1e5)
    ratios = [REG_GRID[i + 1] / REG_GRID[i] for i in range(44)]
    assert all(r == pytest.approx(10 ** (11 / 44)) for r in ratios)


def test_lbfgs_reaches_the_stationary_point_of_the_regularised_objective():
    x, y = _blobs(60, 0)
    l2 = 0.1
    (w, b), _ = fit_logistic_regression(x, y, 3, l2, max_iter=200)
    w.requires_grad_(True)
    b.requires_grad_(True)
    # objective written out: mean softmax cross-entropy + l2/2 ||W||^2
    logits = x @ w.T + b
    log_softmax = logits - logits.logsumexp(dim=1, keepdim=True)
    loss = -log_softmax[torch.arange(60), y].mean() + 0.5 * l2 * (w ** 2).sum()
    gw, gb = torch.autograd.grad(loss, [w, b])
    assert gw.abs().max() < 1e-4 and gb.abs().max() < 1e-4
    # strong regularisation shrinks the weights towards zero
    (w_big, _), _ = fit_logistic_regression(x, y, 3, 1e4, max_iter=200)
    assert w_big.norm() < 1e-3 * w.detach().norm()


def test_warm_start_gives_the_same_scores_with_fewer_evaluations():
    x, y = _blobs(60, 1)
    vx, vy = _blobs(30, 2)
    grid = tuple(torch.logspace(-3, 2, 8, dtype=torch.float64).tolist())
    cold, cold_evals = regularisation_path(x, y, vx, vy, 3, top1_accuracy, grid, 50, warm_start=False)
    warm, warm_evals = regularisation_path(x, y, vx, vy, 3, top1_accuracy, grid, 50, warm_start=True)
    assert warm == pytest.approx(cold, abs=1 / 30 + 1e-9)  # at most one validation sample differs
    assert warm_evals < cold_evals


def test_selection_never_reads_test_data():
    train, val = _blobs(45, 3), _blobs(30, 4)
    grid = tuple(torch.logspace(-4, 3, 6, dtype=torch.float64).tolist())
    clean = linear_transfer({"train": train, "val": val, "test": _blobs(30, 5)}, 3, top1_accuracy,
                            grid, 100, True)
    # NaN test features and shuffled test labels: selection must not change; only test_score does.
    poisoned_x = torch.full((30, 6), float("nan"), dtype=torch.float64)
    poisoned = linear_transfer({"train": train, "val": val, "test": (poisoned_x, torch.ones(30, dtype=torch.long))},
                               3, top1_accuracy, grid, 100, True)
    assert poisoned.l2 == clean.l2
    assert poisoned.val_scores == clean.val_scores
    assert clean.test_score > 0.8
    assert poisoned.test_score < 0.5  # NaN logits: argmax 0, never the label 1
    # the chosen strength is the validation arg-max
    assert clean.val_score == max(clean.val_scores)


def test_refit_uses_train_and_validation():
    # Train holds classes 0 and 1 only, validation class 2 only, test all three: a head refit on
    # train + validation scores ~1 on test, one fit on train only never predicts class 2 (<= 2/3)
    # and one fit on validation only predicts nothing but class 2 (1/3).
    x, y = _blobs(60, 6)
    train = (x[y != 2], y[y != 2])
    val = (x[y == 2], y[y == 2])
    test = _blobs(30, 8)
    grid, l2 = (1e-2,), 1e-2
    seen = []

    def recording_metric(logits, labels):
        seen.append(logits.clone())
        return top1_accuracy(logits, labels)

    res = linear_transfer({"train": train, "val": val, "test": test}, 3, recording_metric, grid, 200, True)
    both, _ = fit_logistic_regression(torch.cat([train[0], val[0]]), torch.cat([train[1], val[1]]), 3, l2, 200)
    train_only, _ = fit_logistic_regression(*train, 3, l2, 200)
    val_only, _ = fit_logistic_regression(*val, 3, l2, 200)
    # the last metric call scores the refit head on test: its logits are the train + validation fit's
    assert torch.allclose(seen[-1], predict(both, test[0]), atol=1e-6)
    assert res.test_score == top1_accuracy(predict(both, test[0]), test[1])
    assert res.test_score > 0.9
    for other in (train_only, val_only):
        assert top1_accuracy(predict(other, test[0]), test[1]) < 0.7
        assert not torch.allclose(seen[-1], predict(other, test[0]), atol=1e-3)
