"""NNCLR's loss (Dwibedi et al., ICCV 2021, "With a Little Help from My Friends: Nearest-Neighbor
Contrastive Learning of Visual Representations", https://arxiv.org/abs/2104.14548) and its
nearest-neighbour lookup, as pure functions of tensors.

NNCLR's loss is InfoNCE in which the positive of view 1 of image ``i`` is not the image's own
embedding but its nearest neighbour in a support set ``Q`` of embeddings of earlier batches:

    L_i = -log( exp(NN(z_i, Q) . p_i^+ / t) / sum_{k=1..n} exp(NN(z_i, Q) . p_k^+ / t) )

with ``p^+`` the prediction of the second view (the batch's ``n`` second views are the
candidates; under DDP the global batch's, gathered with gradients) and ``NN(z, Q)`` the support
embedding closest to ``z``. The neighbour is a stored value: no gradient flows through it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastive.losses.precision import float32

Tensor = torch.Tensor


@float32
def nearest_neighbours(queries: Tensor, support: Tensor) -> Tensor:
    """``NN(z, Q) = argmin_{q in Q} ||z - q||``: for each l2-normalised query ``[B, D]`` the row of the
    l2-normalised ``support`` ``[K, D]`` with the largest dot product (the same argmin on the sphere),
    ``[B, D]``, detached. One matrix product, an ``argmax`` and an ``index_select``: no host sync."""
    with torch.no_grad():
        index = (queries.to(support.dtype) @ support.t()).argmax(dim=1)  # [B]
        return support.index_select(0, index)


@float32
def nnclr_info_nce(neighbours: Tensor, predictions: Tensor, temperature: float, gather: bool = False) -> Tensor:
    """One direction of NNCLR's loss: cross-entropy of ``NN(z_i) . p_k^+ / t`` over ``k`` with the target ``k = i``.

    Args:
        neighbours: ``[B, D]`` the support-set neighbours of the first view's projections (no gradient).
        predictions: ``[B, D]`` predictions of the second view (row ``i``: the same image).
        temperature: ``t`` > 0.
        gather: Candidates ``p_k^+`` from every process's batch (the global batch) under DDP.

    Both inputs are l2-normalised here, so the logits are cosine similarities. Mean over the
    anchors ``i``.
    """
    from lightly.utils import dist

    nn = F.normalize(neighbours.float(), dim=1)
    p = F.normalize(predictions.float(), dim=1)
    offset = 0
    if gather and dist.world_size() > 1:
        offset = dist.rank() * p.shape[0]
        p = torch.cat(dist.gather(p.contiguous()), 0)  # [M, D], gradients flow back to each process's rows
    logits = nn @ p.t() / temperature  # [B, M]
    target = torch.arange(nn.shape[0], device=nn.device) + offset
    return F.cross_entropy(logits, target)
