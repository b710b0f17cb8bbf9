"""Diagnostics of a contrastive embedding space (no gradients, returned as floats)."""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


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
