"""Losses of the k-means prototype baselines (DeepCluster v2, PCL v2), as pure functions of tensors.

Each function is the formula of its paper; tests check them against the formulas written out.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from contrastive.losses.precision import float32

Tensor = torch.Tensor


@float32
def prototype_scores(z: Tensor, prototypes: Tensor) -> Tensor:
    """Scores ``z . c`` ``[B, K]`` of embeddings ``z [B, d]`` against prototypes ``c [K, d]``, in float32
    under autocast too (see :mod:`contrastive.losses.precision`). Gradients reach both."""
    return z @ prototypes.t()


@float32
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


@float32
def proto_nce(query: Tensor, centroids: Tensor, concentration: Tensor, targets: Tensor,
              negatives: Tensor, valid: Optional[Tensor] = None) -> Tensor:
    """PCL's ProtoNCE term for one clustering (Li et al. 2021, Eq. 6, the prototype part), as its
    released code builds it (github.com/salesforce/PCL, pcl/builder.py lines 173-193): the logits
    of query ``b`` are over the prototypes of every image of the batch (``c_{s_1} .. c_{s_B}``,
    repeats included) followed by ``r`` negative prototypes ``c_j``, each divided by its
    concentration, and the target is column ``b`` (its own prototype):
    ``-log exp(v_b . c_{s_b} / phi_{s_b}) / (sum_i exp(v_b . c_{s_i} / phi_{s_i}) + sum_j exp(v_b . c_j / phi_j))``.

    Args:
        query: ``v`` ``[B, D]``, l2-normalised.
        centroids: ``[K, D]`` prototypes, l2-normalised.
        concentration: ``phi`` ``[K]`` > 0 (see :func:`contrastive.clustering.concentration.concentration`).
        targets: int64 ``[B]``, the prototype ``s_b`` of each image.
        negatives: int64 ``[r]`` prototype ids (:func:`draw_negative_prototypes`).
        valid: Optional bool ``[r]``: ``False`` leaves that negative out of every denominator.

    Returns:
        The mean over the batch.
    """
    ids = torch.cat([targets, negatives])  # [B + r]: the batch's own prototypes, then the negatives
    logits = (query.float() @ centroids[ids].float().t()) / concentration[ids].float().unsqueeze(0)  # [B, B + r]
    if valid is not None:
        keep = torch.cat([torch.ones_like(targets, dtype=torch.bool), valid])  # [B + r]
        logits = logits.masked_fill(~keep.unsqueeze(0), float("-inf"))
    return F.cross_entropy(logits, torch.arange(query.shape[0], device=query.device))


def draw_negative_prototypes(num_prototypes: int, targets: Tensor, count: int,
                             generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor]:
    """``count`` distinct prototypes drawn uniformly from those no image of the batch is assigned to
    (PCL's pcl/builder.py lines 177-180: ``sample(set(all) - set(pos_proto_id), r)``), with tensor
    ops only (no host sync): every prototype gets a uniform key, a used one the key 2, and the
    ``count`` smallest keys win.

    Args:
        num_prototypes: ``K``.
        targets: int64 ``[B]``, the batch's prototypes (on the device the ids are returned on).
        count: ``r`` <= ``K``.
        generator: Seeded generator on ``targets``' device (a resumed run draws what the straight run drew).

    Returns:
        ``(ids int64 [r], valid bool [r])``; ``valid`` is ``False`` where fewer than ``r`` prototypes
        are unused and a used one filled the draw (PCL's code would stop with an error there).
    """
    used = torch.zeros(num_prototypes, dtype=torch.bool, device=targets.device).index_fill_(0, targets, True)  # [K]
    keys = torch.rand(num_prototypes, device=targets.device, generator=generator).masked_fill(used, 2.0)  # [K]
    ids = keys.topk(count, largest=False).indices  # [r]
    return ids, ~used[ids]
