"""Losses against a per-sample memory bank, as pure functions of tensors (PIRL).

Each function is the formula of its paper; tests check them against the formulas written out.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from contrastive.losses.precision import float32

Tensor = torch.Tensor


def draw_negatives(indices: Tensor, size: int, count: int, generator: torch.Generator) -> Tensor:
    """``count`` bank rows per sample, uniformly from the ``size`` rows *excluding the sample's own*.

    PIRL (Sec. 2.1): negatives "drawn uniformly at random from dataset D excluding image I". A
    draw ``r`` from ``0..size-2`` becomes ``r + (r >= i)``: every other row equally likely, row ``i``
    never, so every sample has exactly ``count`` negatives (no masking).

    Args:
        indices: int64 ``[B]``, the samples' own rows.
        size: Rows in the bank (``>= 2``).
        count: Negatives per sample.
        generator: Seeded generator on ``indices``' device.

    Returns:
        int64 ``[B, count]``.
    """
    draws = torch.randint(0, size - 1, (indices.shape[0], count), device=indices.device, generator=generator)
    return draws + (draws >= indices.unsqueeze(1)).long()


@float32
def bank_info_nce(query: Tensor, positive: Tensor, bank: Tensor, negatives: Tensor, temperature: float) -> Tensor:
    """``-log exp(q.m_i/t) / (exp(q.m_i/t) + sum_{j in N_i} exp(q.m_j/t))``, mean over the batch.

    Args:
        query: ``[B, D]`` l2-normalised representations (PIRL: ``f(v_I)`` or ``g(v_{I^t})``).
        positive: ``[B, D]`` the samples' own bank entries ``m_I`` (no gradient).
        bank: ``[N, D]`` the whole bank (no gradient).
        negatives: int64 ``[B, M]``, the rows of sample ``i``'s negatives (:func:`draw_negatives`).
        temperature: ``t`` > 0.
    """
    pos = (query * positive).sum(dim=1, keepdim=True)  # [B, 1]
    neg = (query @ bank.t()).gather(1, negatives)  # [B, M]: scores against the whole bank, the drawn columns
    logits = torch.cat([pos, neg], dim=1).float() / temperature  # [B, 1 + M]
    return F.cross_entropy(logits, torch.zeros(query.shape[0], dtype=torch.long, device=query.device))
