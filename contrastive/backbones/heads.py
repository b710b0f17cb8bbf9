"""Projection heads the lightly modules do not cover (the MLP heads come from ``lightly.models.modules``)."""

from __future__ import annotations

from torch import nn


def linear_projection(input_dim: int, output_dim: int, batch_norm: bool = False) -> nn.Module:
    """InsDis' and MoCo v1's head: one fully connected layer ``[B, input_dim] -> [B, output_dim]``.

    Args:
        input_dim: Representation size.
        output_dim: Embedding size (128 in both papers).
        batch_norm: Add a BatchNorm1d on the output (not in either paper; it centres the
            embeddings over the batch, see the methods' YAML for when it is on).
    """
    fc = nn.Linear(input_dim, output_dim)
    return nn.Sequential(fc, nn.BatchNorm1d(output_dim)) if batch_norm else fc
