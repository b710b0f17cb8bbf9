"""PCL's per-prototype concentration ``phi`` (Li, Zhou, Xiong, Hoi, ICLR 2021, Eq. 12).

``phi = sum_z ||v'_z - c|| / (Z log(Z + alpha))`` over the ``Z`` momentum features ``v'_z`` of a
cluster with centroid ``c``: a loose cluster (large mean distance) or a small one gets a high
``phi`` (a flatter softmax), a tight, populated one a low ``phi``. Each set of prototypes is then
rescaled to mean ``temperature`` (the paper: phi is normalised "to have a mean of tau").
Two details follow the authors' released code (github.com/salesforce/PCL, ``main_pcl.py``) as the
paper does not state them: a cluster with at most one member takes the largest ``phi`` of the
others, and ``phi`` is clipped to its 10th-90th percentile range before the rescaling.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def concentration(features: Tensor, assignments: Tensor, centroids: Tensor, alpha: float = 10.0,
                  temperature: float = 0.2) -> Tensor:
    """``phi`` of every cluster.

    Args:
        features: ``[N, D]`` l2-normalised features that were clustered.
        assignments: int64 ``[N]`` in ``[0, K)``.
        centroids: ``[K, D]``.
        alpha: Smoothing ``alpha`` of Eq. 12 (the paper: 10).
        temperature: The mean of the returned ``phi`` (MoCo v2's 0.2 for PCL v2).

    Returns:
        float32 ``[K]``, positive.
    """
    k = centroids.shape[0]
    distance = (features.float() - centroids.float()[assignments]).norm(dim=1)  # [N]
    total = torch.zeros(k).index_add_(0, assignments, distance)  # [K]
    count = torch.bincount(assignments, minlength=k).float()  # [K]
    phi = total / (count * torch.log(count + alpha)).clamp_min(1e-12)  # [K]
    populated = count > 1
    fallback = phi[populated].max() if bool(populated.any()) else torch.tensor(1.0)
    phi = torch.where(populated, phi, fallback)
    low, high = torch.quantile(phi, 0.1), torch.quantile(phi, 0.9)
    phi = phi.clamp(low, high).clamp_min(1e-8)  # identical features: no zero division
    return temperature * phi / phi.mean()
