"""The kNN monitor's evaluation over the processes of a run, each keeping only its shard of the train bank.

:class:`~contrastive.engine.method.Method` embeds the train split (the bank, validation loader 0)
and the val split (the queries, loader 1) with every process taking its shard of each. The
queries are all-gathered; the bank is not: every process finds each query's top ``k`` in its own
shard and only those ``k`` similarities and labels per query are gathered and merged
(:func:`contrastive.metrics.knn.sharded_knn_scores`), so every process ends with the votes, and
the top-1 of every image, that one process holding the whole bank computes.

Memory per process, ImageNet-sized (N = 1.28M bank, M = 50k queries, D = 2048 float32, k = 200,
W processes, 2,048 queries per chunk): gathering the bank held N x D = 10.5 GB on every process
whatever W (twice that during the padded all-gather); the shard holds N / W x D (1.3 GB at W = 8),
plus the gathered queries M x D (0.4 GB), the similarities of a chunk 2,048 x N / W (1.3 GB at
W = 8) and the merged candidates W x 2,048 x k x 12 bytes (39 MB at W = 8).
"""

from __future__ import annotations

from typing import List, Sequence, Tuple

import pytorch_lightning as pl
import torch

from contrastive.core.hardware import resolve_eval_amp
from contrastive.engine.gather import gather_padded
from contrastive.metrics.knn import sharded_knn_scores, topk_accuracy

Part = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (features [b, D], labels [b], dataset indices [b])


def _world(module: pl.LightningModule) -> int:
    return module.trainer.world_size if module.trainer is not None else 1


def gathered_split(module: pl.LightningModule, parts: Sequence[Part]) -> Tuple[torch.Tensor, torch.Tensor]:
    """Features ``[N, D]`` and labels ``[N]`` of one eval split from all processes, in dataset order."""
    features = torch.cat([p[0] for p in parts])
    labels = torch.cat([p[1] for p in parts]).to(features.device)
    indices = torch.cat([p[2] for p in parts]).to(features.device)
    if _world(module) > 1:
        features, labels, indices = gather_padded(module, features, labels, indices)
    order = indices.argsort()
    return features[order], labels[order]


def knn_monitor_accuracy(module: pl.LightningModule, bank_parts: List[Part], query_parts: List[Part],
                         num_classes: int, k: int, temperature: float) -> Tuple[float, float]:
    """Top-1 and top-5 (%) of the weighted kNN of the gathered queries against the sharded bank.

    Args:
        module: The method (its ``all_gather`` and trainer).
        bank_parts: This process's train-split batches (unlabeled samples, label -1, are left out).
        query_parts: This process's val-split batches.
        num_classes: Classes of the labels.
        k: ``knn.k``, capped at the number of labeled bank samples of all processes.
        temperature: ``knn.temperature``.

    Returns:
        ``(top1, top5)``, the same on every process.
    """
    world = _world(module)
    gather = (lambda t: module.all_gather(t)) if world > 1 else (lambda t: t.unsqueeze(0))  # [m, k] -> [W, m, k]
    queries, query_labels = gathered_split(module, query_parts)  # [M, D], [M]
    bank = torch.cat([p[0] for p in bank_parts])  # [n, D], this process's shard
    bank_labels = torch.cat([p[1] for p in bank_parts]).to(bank.device)
    labeled = bank_labels >= 0
    total = gather(labeled.sum().reshape(1)).sum()  # labeled bank samples over all processes
    scores = sharded_knn_scores(
        bank[labeled], bank_labels[labeled], queries, num_classes, k=min(int(k), int(total)), temperature=temperature,
        gather=gather, amp=resolve_eval_amp("auto", bank.device),
    )
    return topk_accuracy(scores, query_labels.to(scores.device))
