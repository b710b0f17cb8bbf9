"""All-gather of per-process tensors of unequal length (the eval splits' shards, a split's embeddings)."""

from __future__ import annotations

import pytorch_lightning as pl
import torch


def gather_padded(module: pl.LightningModule, features: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor):
    """all_gather of per-rank tensors of unequal length (pads with index -1, then drops).

    Args:
        features: ``[n, D]`` of this process; labels and indices ``[n]`` (indices >= 0).

    Returns:
        ``(features [N, D], labels [N], indices [N])`` of every process, rank by rank."""
    n = torch.tensor([features.shape[0]], device=features.device)
    sizes = module.all_gather(n).flatten()
    longest = int(sizes.max())
    pad = longest - features.shape[0]
    if pad:
        features = torch.cat([features, features.new_zeros(pad, features.shape[1])])
        labels = torch.cat([labels, labels.new_full((pad,), -1)])
        indices = torch.cat([indices, indices.new_full((pad,), -1)])
    gathered = [module.all_gather(t) for t in (features, labels, indices)]  # [W, L, ...]
    features, labels, indices = (g.flatten(0, 1) for g in gathered)
    keep = indices >= 0
    return features[keep], labels[keep], indices[keep]
