"""Losses of the momentum-teacher and queue baselines, as pure functions of tensors.

Each function is the formula of its paper; tests check them against the formulas written out.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from contrastive.losses.precision import float32

Tensor = torch.Tensor


@float32
def normalized_mse(prediction: Tensor, target: Tensor) -> Tensor:
    """BYOL (Grill et al. 2020, Eq. 2): ``|| q/||q|| - z'/||z'|| ||^2 = 2 - 2 cos(q, z')``, mean over the batch.

    Args:
        prediction: ``q`` ``[B, D]`` (online branch).
        target: ``z'`` ``[B, D]`` (target branch; detached by the caller).
    """
    return (2.0 - 2.0 * F.cosine_similarity(prediction.float(), target.float(), dim=1)).mean()


@float32
def negative_cosine(prediction: Tensor, target: Tensor) -> Tensor:
    """SimSiam (Chen & He 2021, Eq. 1): ``D(p, z) = - p/||p|| . z/||z||``, mean over the batch;
    the caller stops the gradient of ``z``."""
    return -F.cosine_similarity(prediction.float(), target.float(), dim=1).mean()


@float32
def info_nce_with_queue(query: Tensor, key: Tensor, queue: Tensor, temperature: float) -> Tensor:
    """MoCo (He et al. 2020, Eq. 1): ``-log exp(q.k+/t) / (exp(q.k+/t) + sum_K exp(q.k_i/t))``.

    Args:
        query: ``q`` ``[B, D]``, l2-normalised.
        key: ``k+`` ``[B, D]``, l2-normalised, no gradient (row ``i``: the positive of ``q_i``).
        queue: ``[K, D]`` negatives, l2-normalised.
        temperature: ``t`` > 0.
    """
    positive = (query * key).sum(dim=1, keepdim=True)  # [B, 1]
    negative = query @ queue.t()  # [B, K]
    logits = torch.cat([positive, negative], dim=1).float() / temperature  # [B, 1 + K]
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))


@float32
def drawn_similarities(query: Tensor, bank: Tensor, drawn: Tensor) -> Tensor:
    """``query[b] . bank[drawn[b, j]]`` ``[B, K]``: each row against its own drawn bank entries.

    Exact either way; computed as whichever materialises fewer numbers: a copy of the bank and all
    ``[B, N]`` scores, the drawn ones then picked (a small bank), or the ``[B, K, D]`` drawn rows (a
    large bank). Either way the graph holds a copy, so the caller may update the bank in place
    before the backward pass.

    Args:
        query: ``[B, D]``.
        bank: ``[N, D]`` entries (no gradient).
        drawn: ``[B, K]`` long indices into ``bank``.
    """
    (n, d), (b, k) = bank.shape, drawn.shape
    if n * (b + d) <= b * k * d:
        return torch.gather(query @ bank.to(query.dtype, copy=True).t(), 1, drawn)  # [B, N] -> [B, K]
    return torch.einsum("bd,bkd->bk", query, bank[drawn].to(query.dtype))  # [B, K, D] -> [B, K]


@float32
def info_nce_with_drawn_negatives(query: Tensor, key: Tensor, bank: Tensor, drawn: Tensor, temperature: float,
                                  exclude: Optional[Tensor] = None) -> Tensor:
    """InsDis (Wu et al. 2018, Eq. 2 over the drawn set): ``-log exp(q.k+/t) / (exp(q.k+/t) +
    sum_j exp(q.v_{drawn[b, j]}/t))``, every sample with its own drawn negatives (as the authors'
    lib/NCEAverage.py draws ``[batch, K + 1]`` indices), mean over the batch.

    Args:
        query: ``f`` ``[B, D]``, l2-normalised.
        key: ``k+`` ``[B, D]`` (the image's own bank entry), no gradient.
        bank: ``[N, D]`` l2-normalised bank, no gradient.
        drawn: ``[B, K]`` long indices of row ``b``'s negatives.
        temperature: ``t`` > 0.
        exclude: Optional bool ``[B, K]``: drawn negatives left out of row ``b``'s sum.
    """
    positive = (query * key).sum(dim=1, keepdim=True)  # [B, 1]
    negative = drawn_similarities(query, bank, drawn)  # [B, K]
    if exclude is not None:
        negative = negative.masked_fill(exclude, float("-inf"))
    logits = torch.cat([positive, negative], dim=1).float() / temperature  # [B, 1 + K]
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))


@float32
def batch_info_nce(query: Tensor, keys: Tensor, temperature: float, offset: int = 0) -> Tensor:
    """MoCo v3 (Chen, Xie, He 2021, Alg. 1 ``ctr``): cross-entropy of ``q . k^T / t`` with the
    positive of query ``i`` at key ``offset + i``, scaled by ``2 t``.

    Args:
        query: ``[B, D]`` l2-normalised queries of this process.
        keys: ``[M, D]`` l2-normalised keys (the global batch under DDP), no gradient.
        temperature: ``t`` > 0.
        offset: Position of this process's first key in ``keys`` (``rank x B``).
    """
    logits = query.float() @ keys.float().t() / temperature  # [B, M]
    labels = torch.arange(query.shape[0], device=query.device) + offset  # [B]
    return 2.0 * temperature * F.cross_entropy(logits, labels)
