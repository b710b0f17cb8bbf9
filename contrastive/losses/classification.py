"""Classification losses as pure functions of tensors: soft (mixed) targets and noisy targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def one_hot(labels: Tensor, num_classes: int) -> Tensor:
    """long ``[N]`` class indices -> float32 ``[N, C]`` one-hot rows (no host sync, unlike ``F.one_hot``)."""
    out = torch.zeros(labels.shape[0], num_classes, device=labels.device)
    return out.scatter_(1, labels.long().view(-1, 1), 1.0)  # [N, C]


def soft_target_cross_entropy(logits: Tensor, targets: Tensor) -> Tensor:
    """``-(targets * log_softmax(logits)).sum(1).mean()`` for probability targets ``[N, C]``.

    With one-hot targets this is exactly ``F.cross_entropy(logits, labels)``. Computed in float32.
    """
    return -(targets.float() * F.log_softmax(logits.float(), dim=1)).sum(dim=1).mean()


def symmetric_cross_entropy(logits: Tensor, targets: Tensor, alpha: float = 0.1, beta: float = 1.0, A: float = -4.0) -> Tensor:
    """Symmetric cross-entropy (Wang et al., ICCV 2019, https://arxiv.org/abs/1908.06112).

    ``alpha * CE(q, p) + beta * RCE(p, q)`` with ``p = softmax(logits)``, ``q`` the one-hot
    target and the reverse term ``RCE = -sum_k p_k log q_k`` where ``log 0`` is clamped
    to ``A`` (< 0): ``RCE = -A (1 - p_y)``. Robust to noisy targets such as k-means
    prototypes. The paper's CIFAR-10 setting is alpha=0.1, beta=1.0, A=-4.

    Args:
        logits: ``[B, C]``.
        targets: int64 ``[B]`` in ``[0, C)``.

    Returns:
        Scalar, averaged over the batch.
    """
    ce = F.cross_entropy(logits, targets)
    p_target = logits.float().softmax(dim=1).gather(1, targets[:, None]).squeeze(1)  # [B]
    rce = -A * (1.0 - p_target)  # [B]
    return alpha * ce + beta * rce.mean()
