"""Contrastive losses over pairs of views, as pure functions of tensors (no modules, no state):
the view similarities and SimCLR's Table 2 losses (NT-Xent, NT-Logistic, margin triplet), and
NT-Xent of two views in one function without a host sync (:func:`nt_xent_views`).

Methods build their heads themselves and call these; tests check them against
their formulas on hand-built inputs.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

from contrastive.losses.precision import float32

Tensor = torch.Tensor


# ---------------------------------------------------------------------------- SimCLR Table 2 losses
def _own_and_other_columns(b: int, m: int, offset: int, device: torch.device) -> Tuple[Tensor, Tensor]:
    """Column of each row's own image ``[B, 1]`` (``offset + i``) and its ``M - 1`` other columns in
    order ``[B, M-1]``: fixed indices for a gather, where a boolean mask would make the host wait."""
    own = torch.arange(b, device=device)[:, None] + offset  # [B, 1]
    cols = torch.arange(m - 1, device=device)[None, :]  # [1, M-1]
    return own, cols + (cols >= own).long()  # skip the own column


@float32
def view_similarities(z0: Tensor, z1: Tensor, normalize: bool = True, gather: bool = False) -> Tuple[Tensor, Tensor]:
    """Similarities of every view of a two-view batch to its positive and to its negatives.

    ``u^T v`` of SimCLR (Chen et al. 2020, Table 2), cosine when ``normalize`` (the paper's
    l2 normalisation; ``normalize=False`` is Table 5's "No l2 norm"). The negatives of a view
    are the ``2(M - 1)`` other views of the batch (``M``: the global batch under
    ``gather`` with several processes, as lightly's NT-Xent; the rows stay this process's).

    Args:
        z0, z1: ``[B, D]`` outputs for the two views (row ``i`` of both: one image).

    Returns:
        ``(pos [2B], neg [2B, 2M - 2])``; rows ``0..B-1`` are anchors of ``z0``, ``B..2B-1`` of ``z1``.
    """
    from lightly.utils import dist

    if normalize:
        z0, z1 = F.normalize(z0, dim=1), F.normalize(z1, dim=1)
    b, offset = z0.shape[0], 0
    z0_all, z1_all = z0, z1
    if gather and dist.world_size() > 1:
        z0_all, z1_all = torch.cat(dist.gather(z0), 0), torch.cat(dist.gather(z1), 0)  # [M, D]
        offset = dist.rank() * b
    own, others = _own_and_other_columns(b, z0_all.shape[0], offset, z0.device)  # [B, 1], [B, M-1]
    s00, s01 = z0 @ z0_all.T, z0 @ z1_all.T  # [B, M]
    s10, s11 = z1 @ z0_all.T, z1 @ z1_all.T  # [B, M]
    pos = torch.cat([s01.gather(1, own), s10.gather(1, own)]).squeeze(1)  # [2B]
    neg0 = torch.cat([s01.gather(1, others), s00.gather(1, others)], 1)  # [B, 2M-2]
    neg1 = torch.cat([s10.gather(1, others), s11.gather(1, others)], 1)  # [B, 2M-2]
    return pos, torch.cat([neg0, neg1])


@float32
def nt_xent_views(z0: Tensor, z1: Tensor, temperature: float, gather: bool = False, reduction: str = "mean") -> Tensor:
    """NT-Xent of a two-view batch (SimCLR, Chen et al. 2020, Eq. 1): each of the ``2B`` views against its
    positive and the ``2(M - 1)`` other views, cosine similarity over ``temperature``; mean over the views.

    The values and gradients of lightly's ``NTXentLoss(temperature, gather_distributed=gather)``
    (tests/test_simclr.py), without its boolean indexing (``logits[~diag_mask]``: a host sync on a
    GPU): a view's similarity to itself is masked to ``-inf`` (``exp`` of it is 0 in the softmax and its
    gradient 0) instead of removed.

    Args:
        z0, z1: ``[B, D]`` outputs for the two views (row ``i`` of both: one image); l2-normalised here.
        temperature: ``tau``.
        gather: Negatives from every process's batch (``M`` = the global batch), rows this process's.
        reduction: ``mean`` (lightly's) or ``sum`` over the ``2B`` views.

    Returns:
        The scalar loss.
    """
    from lightly.utils import dist

    z0, z1 = F.normalize(z0, dim=1), F.normalize(z1, dim=1)
    b, offset = z0.shape[0], 0
    z0_all, z1_all = z0, z1
    if gather and dist.world_size() > 1:
        z0_all, z1_all = torch.cat(dist.gather(z0), 0), torch.cat(dist.gather(z1), 0)  # [M, D]
        offset = dist.rank() * b
    own = torch.arange(b, device=z0.device) + offset  # [B] column of each row's own image
    itself = own[:, None] == torch.arange(z0_all.shape[0], device=z0.device)  # [B, M]
    s00 = torch.einsum("nc,mc->nm", z0, z0_all).masked_fill(itself, float("-inf"))  # [B, M]
    s11 = torch.einsum("nc,mc->nm", z1, z1_all).masked_fill(itself, float("-inf"))
    s01, s10 = torch.einsum("nc,mc->nm", z0, z1_all), torch.einsum("nc,mc->nm", z1, z0_all)
    logits = torch.cat([torch.cat([s01, s00], 1), torch.cat([s10, s11], 1)]) / temperature  # [2B, 2M]
    return F.cross_entropy(logits, own.repeat(2), reduction=reduction)


def _reduce(per_anchor: Tensor, reduction: str) -> Tensor:
    if reduction == "sum":
        return per_anchor.sum()
    if reduction == "mean":
        return per_anchor.mean()
    raise ValueError(f"reduction must be sum or mean, got {reduction!r}")


def nt_xent(pos: Tensor, neg: Tensor, temperature: float, reduction: str = "mean") -> Tensor:
    """NT-Xent (SimCLR Table 2): ``-u^T v+/T + log sum_{v in {v+, v-}} exp(u^T v/T)`` per anchor,
    averaged (``mean``, lightly's) or summed (``sum``, SPCL: "the sum-reduce across all samples")."""
    logits = torch.cat([pos[:, None], neg], 1) / temperature  # [2B, 2M-1]
    return _reduce(torch.logsumexp(logits, 1) - pos / temperature, reduction)


def _semi_hard(pos: Tensor, neg: Tensor, margin: Optional[float]) -> Tensor:
    """FaceNet's semi-hard negatives in similarity form: ``u^T v- < u^T v+`` (and, with a
    margin, ``> u^T v+ - m``). A row without one keeps all its negatives (not stated in
    the SimCLR paper: our choice, so that every anchor still has negatives)."""
    mask = neg < pos[:, None]  # [2B, N]
    if margin is not None:
        mask &= neg > pos[:, None] - margin
    return torch.where(mask.any(1, keepdim=True), mask, torch.ones_like(mask))


def nt_logistic(pos: Tensor, neg: Tensor, temperature: float, semi_hard: bool = False) -> Tensor:
    """NT-Logistic (SimCLR Table 2): maximise ``log s(u^T v+/T) + log s(-u^T v-/T)``.

    Loss per anchor: ``-log s(pos/T) - mean_{v-} log s(-neg/T)`` (the mean over the
    negatives is not stated in the paper: our choice, so the positive term is not outweighed
    2(M-1) to 1); batch mean. ``semi_hard``: only semi-hard negatives (Table 4's "sh")."""
    mask = _semi_hard(pos, neg, None) if semi_hard else torch.ones_like(neg, dtype=torch.bool)
    neg_term = (F.logsigmoid(-neg / temperature) * mask).sum(1) / mask.sum(1)  # [2B]
    return (-F.logsigmoid(pos / temperature) - neg_term).mean()


def margin_triplet(pos: Tensor, neg: Tensor, margin: float, semi_hard: bool = False) -> Tensor:
    """Margin triplet (SimCLR Table 2): maximise ``-max(u^T v- - u^T v+ + m, 0)``.

    Loss per anchor: ``mean_{v-} max(neg - pos + m, 0)`` (mean over the negatives: our
    choice, as for NT-Logistic); batch mean. ``semi_hard``: FaceNet's semi-hard negatives
    ``pos - m < neg < pos`` (Table 4's "sh")."""
    mask = _semi_hard(pos, neg, margin) if semi_hard else torch.ones_like(neg, dtype=torch.bool)
    hinge = F.relu(neg - pos[:, None] + margin) * mask  # [2B, N]
    return (hinge.sum(1) / mask.sum(1)).mean()
