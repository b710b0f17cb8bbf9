"""Loss terms and diagnostics as pure functions of tensors (no modules, no state).

Methods build their heads themselves and call these; tests check them against
their formulas on hand-built inputs.
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def symmetric_cross_entropy(logits: Tensor, targets: Tensor, alpha: float = 0.1, beta: float = 1.0, A: float = -4.0) -> Tensor:
    """Symmetric cross-entropy (Wang et al., ICCV 2019, https://arxiv.org/abs/1908.06112).

    ``alpha * CE(q, p) + beta * RCE(p, q)`` with ``p = softmax(logits)``, ``q`` the one-hot
    target and the reverse term ``RCE = -sum_k p_k log q_k`` where ``log 0`` is clamped
    to ``A`` (< 0): ``RCE = -A (1 - p_y)``. Robust to noisy targets such as k-means
    prototypes. The paper's CIFAR-10 setting is alpha=0.1, beta=1.0, A=-4.

    Args:
        logits: ``[B, C]``.
        targets: int64 ``[B]`` in ``[0, C)``.

    Returns:
        Scalar, averaged over the batch.
    """
    ce = F.cross_entropy(logits, targets)
    p_target = logits.float().softmax(dim=1).gather(1, targets[:, None]).squeeze(1)  # [B]
    rce = -A * (1.0 - p_target)  # [B]
    return alpha * ce + beta * rce.mean()


def siamese_pairs(prototypes: Tensor, generator: Optional[torch.Generator] = None) -> Tuple[Tensor, Tensor, Tensor]:
    """Pairs for a siamese metric loss: for every anchor ``i`` one positive and one negative partner.

    The positive is a random other sample of the batch with the same prototype (the
    anchor itself, i.e. its other view, when it is alone in its prototype); the
    negative is a random sample of another prototype (none when the whole batch
    shares one prototype).

    Args:
        prototypes: int64 ``[B]`` prototype of every sample.
        generator: Optional RNG (on ``prototypes``' device); default the global RNG.

    Returns:
        ``(anchors [P], partners [P], labels float [P])`` with ``labels = 1`` where anchor and
        partner share a prototype; positives first, then negatives.
    """
    b = prototypes.shape[0]
    device = prototypes.device
    same = prototypes[:, None] == prototypes[None, :]  # [B, B]
    eye = torch.eye(b, dtype=torch.bool, device=device)
    scores = torch.rand((2, b, b), generator=generator, device=device)  # [2, B, B] random tie-breaks
    pos_mask, neg_mask = same & ~eye, ~same
    arange = torch.arange(b, device=device)
    pos = torch.where(pos_mask.any(1), torch.where(pos_mask, scores[0], -1.0).argmax(1), arange)  # [B]
    has_neg = neg_mask.any(1)  # [B]
    neg = torch.where(neg_mask, scores[1], -1.0).argmax(1)[has_neg]  # [M]
    anchors = torch.cat([arange, arange[has_neg]])
    partners = torch.cat([pos, neg])
    labels = (prototypes[anchors] == prototypes[partners]).float()
    return anchors, partners, labels


def tp_fn_similarity(z0: Tensor, z1: Tensor, labels: Tensor) -> Tuple[float, float, float]:
    """SPCL's diagnostics of the contrastive space (Mo et al., Fig. 1): mean cosine similarity of

    - TP: an anchor ``z0[i]`` and its positive view ``z1[i]``;
    - FN: an anchor and its in-batch negatives (``z0[j]``, ``z1[j]``, ``j != i``) that share
      its ground-truth label (false negatives of NT-Xent);
    - TN: an anchor and its in-batch negatives of another label.

    Labels ``< 0`` (unlabeled) are left out of FN/TN; a value with no pair is NaN.
    """
    z0, z1 = F.normalize(z0.float(), dim=1), F.normalize(z1.float(), dim=1)
    b = z0.shape[0]
    tp = (z0 * z1).sum(1).mean()
    sim = z0 @ torch.cat([z0, z1]).T  # [B, 2B]
    lab = torch.cat([labels, labels])  # [2B]
    known = (labels[:, None] >= 0) & (lab[None, :] >= 0)  # [B, 2B]
    not_self = ~torch.eye(b, dtype=torch.bool, device=z0.device).repeat(1, 2)  # [B, 2B]
    same = labels[:, None] == lab[None, :]
    fn_mask, tn_mask = known & not_self & same, known & not_self & ~same
    nan = float("nan")
    fn = float(sim[fn_mask].mean()) if fn_mask.any() else nan
    tn = float(sim[tn_mask].mean()) if tn_mask.any() else nan
    return float(tp), fn, tn
