"""Pairs of batch samples for SPCL's siamese metric loss, drawn from their k-means prototypes."""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch

Tensor = torch.Tensor


def prototype_pairs(prototypes: Tensor, anchor: Union[int, Tensor],
                    generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """SPCL's metric-loss pairs (Mo et al. 2022, Sec. 3): "for each feature representation of the
    anchor prototype, we draw two feature embeddings from P_c and P_\\c as positive and negative pairs".

    Anchors are the batch samples of prototype ``anchor`` (``P_c``) only; each gets one partner drawn
    uniformly from ``P_c`` (another sample; the anchor itself, i.e. its other view, when it is the only
    member of ``P_c`` in the batch) and one drawn uniformly from ``P_\\c`` (none when the whole batch is
    ``P_c``).

    The pairs have fixed shapes, so nothing waits for the device: row ``i`` (and ``B + i``) is sample
    ``i``'s positive (negative) pair, with weight 1 when it is a pair as above and 0 otherwise. A
    partner is the valid candidate with the largest of independent uniform keys (a uniform draw
    among the candidates), where a boolean selection of ``P_c`` would have made the host read sizes.

    Args:
        prototypes: int64 ``[B]`` prototype of every batch sample.
        anchor: The anchor prototype ``c`` (an int, or a 0-d tensor such as ``prototypes[0]``, read on
            the device).
        generator: Optional RNG on ``prototypes``' device; default the global RNG.

    Returns:
        ``(anchors [2B], partners [2B], labels float [2B], weights float [2B])``: labels ``1`` on the
        same-prototype rows (first ``B``), ``0`` on the other-prototype rows; the metric loss is the
        weighted mean over the rows (the mean over the pairs).
    """
    b, device = prototypes.shape[0], prototypes.device
    rows = torch.arange(b, device=device)  # [B]
    member = prototypes == anchor  # [B] in P_c
    keys = torch.rand((2, b, b), generator=generator, device=device)  # [2, B, B] one key per (row, candidate)
    same = member[None, :] & (rows[:, None] != rows[None, :])  # [B, B] another member of P_c
    other = (~member)[None, :].expand(b, b)  # [B, B] a member of P_\c
    pos = torch.where(same, keys[0], -1.0).argmax(1)  # [B]
    pos = torch.where(same.any(1), pos, rows)  # alone in P_c: its other view
    neg = torch.where(other, keys[1], -1.0).argmax(1)  # [B]
    anchors, partners = torch.cat([rows, rows]), torch.cat([pos, neg])  # [2B]
    labels = torch.cat([torch.ones(b, device=device), torch.zeros(b, device=device)])  # [2B]
    weights = torch.cat([member, member & other.any(1)]).float()  # [2B]
    return anchors, partners, labels, weights
