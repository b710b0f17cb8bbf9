"""VICReg's loss (Bardes, Ponce, LeCun, ICLR 2022, Eq. 6) as a pure function of tensors.

The same values as lightly's ``VICRegLoss`` (the authors' code's terms), with the covariance term's
off-diagonal entries selected by an elementwise mask instead of boolean indexing: lightly's
``cov[..., ~eye]`` runs ``nonzero`` and an indexed scatter in backward over all ``d x d`` entries,
which took 60% of a default VICReg step on the CPU (and ``nonzero`` waits for the device on a GPU).
BENCHMARKS.md ("VICReg's covariance term") has the measurement.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightly.utils.dist import gather

from contrastive.losses.precision import float32

Tensor = torch.Tensor


def variance_term(z: Tensor, eps: float = 1e-4) -> Tensor:
    """``v(Z)``: mean over dimensions of ``max(0, 1 - sqrt(Var(z_j) + eps))``; ``z`` ``[B, D]``."""
    std = torch.sqrt(z.var(dim=0) + eps)  # [D]
    return F.relu(1.0 - std).mean()


def covariance_term(z: Tensor) -> Tensor:
    """``c(Z)``: the squared off-diagonal entries of the covariance of ``z`` ``[B, D]``, summed, over ``D``."""
    z = z - z.mean(dim=0)
    cov = z.t() @ z / (z.shape[0] - 1)  # [D, D]
    off_diagonal = cov.masked_fill(torch.eye(cov.shape[0], dtype=torch.bool, device=cov.device), 0.0)
    return off_diagonal.pow(2).sum() / cov.shape[0]


@float32
def vicreg_loss(z_a: Tensor, z_b: Tensor, invariance_weight: float = 25.0, variance_weight: float = 25.0,
                covariance_weight: float = 1.0, eps: float = 1e-4, gather_distributed: bool = True) -> Tensor:
    """``lambda s(Z, Z') + mu [v(Z) + v(Z')] / 2 + nu [c(Z) + c(Z')]`` (lightly's and the authors' code's scaling).

    Args:
        z_a, z_b: The two views' expander outputs ``[B, D]``.
        invariance_weight, variance_weight, covariance_weight: ``lambda``, ``mu``, ``nu``.
        eps: Added to the variance under the square root.
        gather_distributed: Under DDP, the variance and covariance terms see every process's batch (the
            invariance term stays per process, as in lightly's loss); gradients flow through the gather.
    """
    invariance = F.mse_loss(z_a, z_b)
    if gather_distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        z_a, z_b = torch.cat(gather(z_a), dim=0), torch.cat(gather(z_b), dim=0)  # [W x B, D] each
    variance = 0.5 * (variance_term(z_a, eps) + variance_term(z_b, eps))
    covariance = covariance_term(z_a) + covariance_term(z_b)
    return invariance_weight * invariance + variance_weight * variance + covariance_weight * covariance
