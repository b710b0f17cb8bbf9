"""Transfer metrics against hand-computed examples."""

import pytest
import torch

from contrastive.metrics.transfer import (average_precision_11point, mean_average_precision_11point,
                                          mean_per_class_accuracy, top1_accuracy)


def _onehot_logits(pred, num_classes):
    return torch.nn.functional.one_hot(torch.tensor(pred), num_classes).float()


def test_mean_per_class_accuracy_weighs_classes_equally():
    # class 0: 4 samples, 3 right (0.75); class 1: 1 sample, wrong (0.0); class 2: absent.
    labels = torch.tensor([0, 0, 0, 0, 1])
    logits = _onehot_logits([0, 0, 0, 1, 0], 3)
    assert mean_per_class_accuracy(logits, labels) == pytest.approx((0.75 + 0.0) / 2)
    assert top1_accuracy(logits, labels) == pytest.approx(3 / 5)


def test_eleven_point_ap_worked_example():
    # Ranked by score: +, -, +, -, + (3 positives).
    # precision at each rank: 1, 1/2, 2/3, 2/4, 3/5; recall: 1/3, 1/3, 2/3, 2/3, 1.
    # t = 0, .1, .2, .3 -> max precision at recall >= t = 1      (4 points)
    # t = .4, .5, .6   -> recall >= t at ranks 3..5: max(2/3, 2/4, 3/5) = 2/3  (3 points)
    # t = .7 .. 1.0    -> only rank 5: 3/5                       (4 points)
    scores = torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5])
    targets = torch.tensor([1, 0, 1, 0, 1])
    expected = (4 * 1.0 + 3 * (2 / 3) + 4 * (3 / 5)) / 11
    assert average_precision_11point(scores, targets) == pytest.approx(expected)
    # Shuffling the inputs does not change the ranking.
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert average_precision_11point(scores[perm], targets[perm]) == pytest.approx(expected)


def test_eleven_point_map_averages_classes_with_positives():
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.8, 0.9, 0.2], [0.7, 0.2, 0.1],
                           [0.6, 0.3, 0.4], [0.5, 0.4, 0.5]])
    targets = torch.tensor([[1, 0, 0], [0, 1, 0], [1, 0, 0], [0, 0, 0], [1, 0, 0]])
    ap0 = (4 * 1.0 + 3 * (2 / 3) + 4 * (3 / 5)) / 11  # the worked example above
    ap1 = 1.0  # the single positive is ranked first
    # class 2 has no positive: skipped
    assert mean_average_precision_11point(scores, targets) == pytest.approx((ap0 + ap1) / 2)
