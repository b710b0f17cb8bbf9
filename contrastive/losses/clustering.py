"""Losses of the k-means prototype baselines (DeepCluster v2, PCL v2), as pure functions of tensors.

Each function is the formula of its paper; tests check them against the formulas written out.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def prototype_cross_entropy(scores: Sequence[Tensor], targets: Tensor, temperature: float) -> Tensor:
    """DeepCluster v2 (Caron et al. 2020, SwAV Appendix): every crop predicts its image's k-means
    cluster, ``-log softmax(z . c / t)[cluster]`` with ``z`` and the centroids ``c`` l2-normalised.

    Args:
        scores: One ``[B, K]`` tensor of ``z . c`` per crop (global and local crops alike).
        targets: int64 ``[B]`` cluster of each image.
        temperature: ``t`` > 0.

    Returns:
        The mean over crops and images.
    """
    terms = [F.cross_entropy(s.float() / temperature, targets) for s in scores]
    return torch.stack(terms).mean()


def proto_nce(query: Tensor, centroids: Tensor, concentration: Tensor, targets: Tensor,
              negatives: Tensor) -> Tensor:
    """PCL's ProtoNCE term for one clustering (Li et al. 2021, Eq. 6, the prototype part):
    ``-log exp(v . c_s / phi_s) / (exp(v . c_s / phi_s) + sum_j exp(v . c_j / phi_j))`` over the
    image's own prototype ``c_s`` and ``r`` sampled prototypes ``c_j``.

    Args:
        query: ``v`` ``[B, D]``, l2-normalised.
        centroids: ``[K, D]`` prototypes, l2-normalised.
        concentration: ``phi`` ``[K]`` > 0 (see :func:`contrastive.clustering.concentration.concentration`).
        targets: int64 ``[B]``, the prototype ``s`` of each image.
        negatives: int64 ``[r]`` prototype ids drawn for the batch; where one equals an image's own
            prototype it is masked out of that image's denominator (the sum runs over others only).

    Returns:
        The mean over the batch.
    """
    own = (query * centroids[targets]).sum(dim=1, keepdim=True) / concentration[targets].unsqueeze(1)  # [B, 1]
    other = (query @ centroids[negatives].t()) / concentration[negatives].unsqueeze(0)  # [B, r]
    other = other.float().masked_fill(negatives.unsqueeze(0) == targets.unsqueeze(1), float("-inf"))  # [B, r]
    logits = torch.cat([own.float(), other], dim=1)  # [B, 1 + r]
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))


def draw_prototypes(num_prototypes: int, count: int, device: torch.device,
                    generator: Optional[torch.Generator] = None) -> Tensor:
    """``count`` distinct prototype ids of ``[0, num_prototypes)`` (int64 ``[count]``, on ``device``)."""
    return torch.randperm(num_prototypes, device=device, generator=generator)[:count]
