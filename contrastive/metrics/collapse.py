"""Training monitors: cheap statistics that tell a healthy run from a degenerate one.

Pure functions of tensors, so any method can log them (the kNN monitor lives in
:mod:`contrastive.metrics.knn` and runs in validation).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def normalized_output_std(z: torch.Tensor) -> torch.Tensor:
    """Collapse statistic of SimSiam (Chen & He 2021, Sec. 4.1 / Fig. 2).

    The outputs are L2-normalised per sample, the std over the batch is taken per
    dimension and averaged over dimensions. When the outputs are spread over the unit
    sphere (e.g. Gaussian) it is about ``1 / sqrt(d)``; when they collapse to one
    vector it goes to 0.

    Args:
        z: Outputs ``[B, d]`` with ``B >= 2``; no gradient flows through the result.

    Returns:
        A float32 scalar tensor.
    """
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"normalized_output_std needs outputs [B >= 2, d], got shape {tuple(z.shape)}")
    return F.normalize(z.detach().float(), dim=1).std(dim=0).mean()
