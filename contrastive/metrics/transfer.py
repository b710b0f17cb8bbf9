"""Transfer-evaluation metrics: top-1, mean per-class accuracy and VOC 11-point mAP.

Kornblith, Shlens and Le 2019 ("Do Better ImageNet Models Transfer Better?"), which
SimCLR Appendix B.8 follows, score Aircraft, Pets, Caltech-101 and Flowers by mean
per-class accuracy, VOC2007 by 11-point mAP and the other datasets by top-1 accuracy.
All functions are pure functions of tensors.
"""

from __future__ import annotations

import torch

#: Recall thresholds of the VOC2007 11-point interpolated AP: 0, 0.1, ..., 1.
ELEVEN_POINTS = torch.linspace(0.0, 1.0, 11)


def top1_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples whose arg-max class is the label.

    Args:
        logits: ``[N, C]`` scores.
        labels: ``[N]`` int64 class indices.
    """
    return float((logits.argmax(dim=1) == labels).float().mean())  # scalar


def mean_per_class_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Unweighted mean over the classes present in ``labels`` of each class's accuracy.

    Classes absent from ``labels`` are skipped (their accuracy is undefined), so a
    rare class weighs as much as a frequent one.

    Args:
        logits: ``[N, C]`` scores.
        labels: ``[N]`` int64 class indices.
    """
    pred = logits.argmax(dim=1)  # [N]
    correct = (pred == labels).float()  # [N]
    num_classes = logits.shape[1]
    hits = torch.zeros(num_classes).index_add_(0, labels, correct)  # [C]
    counts = torch.bincount(labels, minlength=num_classes).float()  # [C]
    present = counts > 0  # [C]
    return float((hits[present] / counts[present]).mean())


def average_precision_11point(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """VOC2007 11-point interpolated average precision of one class.

    AP = mean over t in {0, 0.1, ..., 1} of the highest precision reached at any
    recall >= t (0 where no recall reaches t), as in the VOC2007 devkit.

    Args:
        scores: ``[N]`` confidence of the class for each image.
        targets: ``[N]`` 1 for a positive image, 0 for a negative.
    """
    order = torch.argsort(scores, descending=True, stable=True)  # [N]
    tp = targets[order].float()  # [N]
    positives = float(tp.sum())
    if positives == 0:
        return 0.0
    cum_tp = torch.cumsum(tp, dim=0)  # [N]
    ranks = torch.arange(1, tp.numel() + 1, dtype=torch.float32)  # [N]
    precision = cum_tp / ranks  # [N]
    recall = cum_tp / positives  # [N]
    ap = 0.0
    for t in ELEVEN_POINTS.tolist():
        reached = recall >= t - 1e-12  # [N]; tolerance for 0.1 * k in float
        ap += float(precision[reached].max()) if bool(reached.any()) else 0.0
    return ap / 11.0


def mean_average_precision_11point(scores: torch.Tensor, targets: torch.Tensor) -> float:
    """Mean over classes of :func:`average_precision_11point` (multi-label VOC2007).

    Classes with no positive image are skipped.

    Args:
        scores: ``[N, C]`` per-class confidences.
        targets: ``[N, C]`` multi-hot labels.
    """
    aps = [average_precision_11point(scores[:, c], targets[:, c])
           for c in range(scores.shape[1]) if bool(targets[:, c].any())]
    return float(sum(aps) / len(aps))
