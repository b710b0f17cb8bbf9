"""The supervised contrastive loss of SupCon (Khosla et al., NeurIPS 2020, https://arxiv.org/abs/2004.11362),
as a pure function of tensors.

Eq. 2 of the paper (``L^sup_out``, "the summation over positives is located outside of the log"):

    L_i = -1/|P(i)| sum_{p in P(i)} log( exp(z_i . z_p / t) / sum_{a in A(i)} exp(z_i . z_a / t) )

over the "multiviewed batch" ``I`` (every view of every image), ``A(i) = I \\ {i}`` and ``P(i)`` the
views in ``A(i)`` with the label of ``i`` (the anchor's other views included). Under DDP the
multiviewed batch is the *global* one: the anchors are this process's views, ``A(i)`` and ``P(i)``
run over every process's (gathered with gradients, as SimCLR's negatives in
:func:`contrastive.losses.pairwise.view_similarities`).
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from contrastive.losses.precision import float32

Tensor = torch.Tensor


def _gather(features: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor, int]:
    """Every process's ``features`` (with gradients) and ``labels`` in rank order, and the row of this
    process's first sample in them; the inputs themselves when not distributed."""
    from lightly.utils import dist

    if dist.world_size() == 1:
        return features, labels, 0
    with torch.no_grad():
        all_labels = torch.cat(dist.gather(labels.contiguous()), 0)  # [M]
    return torch.cat(dist.gather(features.contiguous()), 0), all_labels, dist.rank() * features.shape[0]


@float32
def supcon_from_parts(features: Tensor, labels: Tensor, all_features: Tensor, all_labels: Tensor, offset: int,
                      temperature: float, base_temperature: Optional[float] = None) -> Tensor:
    """Eq. 2 for this process's anchors against the global multiviewed batch.

    Args:
        features: ``[B, V, D]`` l2-normalised projections of this process's ``B`` images, ``V`` views each.
        labels: ``[B]`` integer labels.
        all_features: ``[M, V, D]`` the global batch's (``features`` at rows ``offset .. offset + B - 1``).
        all_labels: ``[M]``.
        offset: Row of this process's first image in ``all_features``.
        temperature: ``t`` > 0.
        base_temperature: The authors' code's scale (HobbitLong/SupContrast losses.py: the loss times
            ``t / base_temperature``; the paper: "we rescale the loss by t during training for
            stability"); ``None``: Eq. 2 as written.

    Returns:
        The mean of ``L_i`` over the anchors that have a positive (every anchor when ``V >= 2``;
        losses.py's mean over anchors), a scalar.
    """
    b, v, _ = features.shape
    m = all_features.shape[0]
    device = features.device
    anchors = features.transpose(0, 1).reshape(v * b, -1).float()  # [V*B, D], view-major
    contrast = all_features.transpose(0, 1).reshape(v * m, -1).float()  # [V*M, D]
    anchor_labels, contrast_labels = labels.repeat(v), all_labels.repeat(v)  # [V*B], [V*M]
    own = (torch.arange(v, device=device)[:, None] * m + offset + torch.arange(b, device=device)[None]).reshape(-1)
    is_self = torch.zeros(v * b, v * m, dtype=torch.bool, device=device)
    is_self.scatter_(1, own[:, None], True)  # [V*B, V*M]: column of the anchor itself
    logits = (anchors @ contrast.t() / temperature).masked_fill(is_self, float("-inf"))
    log_prob = logits - torch.logsumexp(logits, dim=1, keepdim=True)  # log of the fraction over A(i)
    positive = (anchor_labels[:, None] == contrast_labels[None, :]) & ~is_self  # P(i)
    count = positive.sum(dim=1)  # |P(i)|
    per_anchor = -log_prob.masked_fill(~positive, 0.0).sum(dim=1) / count.clamp(min=1)  # [V*B]
    if base_temperature is not None:
        per_anchor = per_anchor * (temperature / base_temperature)
    has_positive = (count > 0).to(per_anchor.dtype)
    return (per_anchor * has_positive).sum() / has_positive.sum().clamp(min=1.0)


@float32
def supcon_loss(features: Tensor, labels: Tensor, temperature: float, base_temperature: Optional[float] = None,
                gather: bool = False) -> Tensor:
    """SupCon's ``L^sup_out`` (Eq. 2) of a multiviewed batch, over the global batch with ``gather``.

    Args:
        features: ``[B, V, D]`` l2-normalised projections (``V`` views of each of ``B`` images).
        labels: ``[B]`` integer labels.
        temperature: ``t`` > 0 (the paper: "All our results used a temperature of t = 0.1").
        base_temperature: See :func:`supcon_from_parts`.
        gather: Contrast with every process's views (the global batch) under DDP.
    """
    if gather:
        all_features, all_labels, offset = _gather(features, labels)
    else:
        all_features, all_labels, offset = features, labels, 0
    return supcon_from_parts(features, labels, all_features, all_labels, offset, temperature, base_temperature)
