"""Pairs of batch samples for SPCL's siamese metric loss, drawn from their k-means prototypes."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

Tensor = torch.Tensor


def prototype_pairs(prototypes: Tensor, anchor: int, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """SPCL's metric-loss pairs (Mo et al. 2022, Sec. 3): "for each feature representation of the
    anchor prototype, we draw two feature embeddings from P_c and P_\\c as positive and negative pairs".

    Anchors are the batch samples of prototype ``anchor`` (``P_c``) only; each gets one random
    partner from ``P_c`` (another sample; the anchor itself, i.e. its other view, when it is
    the only member of ``P_c`` in the batch) and one random partner from ``P_\\c`` (none when
    the whole batch is ``P_c``).

    Args:
        prototypes: int64 ``[B]`` prototype of every batch sample.
        anchor: The anchor prototype ``c`` (the prototype sampler's anchor of this batch).
        generator: Optional RNG on ``prototypes``' device; default the global RNG.

    Returns:
        ``(anchors [P], partners [P], labels float [P])``, ``labels = 1`` for the same-prototype
        pairs (first), ``0`` for the other-prototype pairs (after); empty when no sample is in ``P_c``.
    """
    device = prototypes.device
    members = (prototypes == anchor).nonzero().flatten()  # [A] indices of P_c in the batch
    others = (prototypes != anchor).nonzero().flatten()  # [O] indices of P_\c
    a = len(members)
    if a == 0:
        empty = prototypes.new_zeros(0)
        return empty, empty, empty.float()
    if a > 1:  # a random other member: shift by 1..a-1 positions in a random permutation of P_c
        order = members[torch.randperm(a, generator=generator, device=device)]
        shift = torch.randint(1, a, (a,), generator=generator, device=device)
        pos = order[(torch.arange(a, device=device) + shift) % a]
        anchors_pos = order
    else:
        anchors_pos, pos = members, members
    anchors, partners = [anchors_pos], [pos]
    if len(others) > 0:
        neg = others[torch.randint(0, len(others), (a,), generator=generator, device=device)]  # [A]
        anchors.append(anchors_pos)
        partners.append(neg)
    anchors_t, partners_t = torch.cat(anchors), torch.cat(partners)
    labels = (prototypes[anchors_t] == prototypes[partners_t]).float()
    return anchors_t, partners_t, labels
