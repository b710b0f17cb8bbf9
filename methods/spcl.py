"""SPCL: Siamese Prototypical Contrastive Learning.

Mo, Sun, Li, 2022 (https://arxiv.org/abs/2208.08819). NT-Xent pushes apart every
other image of the batch, including those of the anchor's class (false negatives).
SPCL groups the data into prototypes and adds two prototype-level terms:

1. **Clustering** at the start of every epoch (from ``method.cluster.start_epoch``; before
   it, random batches and NT-Xent only): the whole training set is embedded (one
   SimCLR view by default, projection space by default, eval mode, no grad, batched),
   L2-normalised and clustered by faiss k-means into ``K`` prototypes
   (``method.num_prototypes``; a list trains one prototype head per K, as PCL). The paper: "We concatenate
   all the embedded features and conduct the clustering", so k-means is fitted on all N features (``method.cluster.max_points_per_centroid=null``; a number
   caps the fit at ``K x`` that many points, a seed-fixed subsample, for very large sets).
   Cluster ids are matched to the previous epoch's so the prototype heads keep their
   targets. Under DDP every rank embeds a shard, rank 0 clusters the gathered features and broadcasts the
   assignments (:meth:`SPCL.cluster_train_set`), checkpointed (:mod:`contrastive.clustering.assignments`).
2. **Prototype-aware batches** (Sec. 3.2): ``anchor_fraction`` of a batch comes from one anchor prototype
   ``c``, the rest from others (:class:`~contrastive.data.samplers.prototype.PrototypeBatchSampler`).
3. **Losses** ``w_c * NT-Xent + w_m * metric + w_p * prototype``:
   NT-Xent on the projection head (as SimCLR), sum-reduced over the batch's views as the
   paper says (``method.contrastive_reduction=sum``; ``mean`` is lightly's); a siamese
   metric loss: "for each feature representation of the anchor prototype, we draw two
   feature embeddings from P_c and P_\\c as positive and negative pairs" - anchors are only
   the batch's members of ``c``, each with one same-prototype and one other-prototype
   partner (:func:`contrastive.clustering.prototype_pairs.prototype_pairs`), and a small head on ``|f_a - f_b|``
   predicts "same prototype" (BCE); a linear head on the representation that predicts the
   sample's prototype (CE, or symmetric CE against noisy prototypes: the paper's "as long
   as the the number of prototypes does not match the number of classes in the down-stream
   task, noise in the semantic structure will be introduced"). A weight of 0 removes the
   term and its head.

Where the paper's text leaves a value blank, the presets (``configs/experiment/spcl_*``)
take it from the authors' public code (github.com/stoneMo/SPCL, ``config.conf`` and
``main.py``) and say so. The authors' code differs from the text in places: its NT-Xent is
mean-reduced and its metric pairs come from a dataset that alternates same-/other-cluster image pairs
(``utils.CustomDataset_metric``); here the text is followed.

Diagnostics (the paper's Fig. 1), logged at every epoch end on a fixed training batch: TP similarity (anchor
vs its positive view) and FN similarity (anchor vs in-batch negatives of its true class), projection space.
"""

from __future__ import annotations

import logging
import time
from typing import Dict, List

import torch
import torch.nn.functional as F
from lightly.models.modules import SimCLRProjectionHead
from omegaconf import ListConfig
from torch import nn

from contrastive.data.samplers.prototype import PrototypeBatchSampler
from contrastive.core.errors import ConfigError
from contrastive.clustering.assignments import Coverage, EpochStateMixin, unassigned
from contrastive.clustering.kmeans import align_labels, cluster_stats, faiss_gpu_device, kmeans
from contrastive.clustering.prototype_pairs import prototype_pairs
from contrastive.metrics.pair_similarity import tp_fn_similarity
from contrastive.losses.classification import symmetric_cross_entropy
from contrastive.losses.pairwise import nt_xent_views
from contrastive.losses.precision import float32
from contrastive.engine.embedding import embed_split, on_rank_zero
from contrastive.engine.method import DataInfo, Method, check_batch_size
from contrastive.core.registry import METHODS

log = logging.getLogger(__name__)
LOSSES = ("contrastive", "metric", "prototype")


def prototype_counts(cfg, data: DataInfo) -> List[int]:
    """The K of every prototype head: ``method.num_prototypes`` (int or list), or the class count."""
    if cfg.method.prototypes == "ground_truth":
        return [int(data.num_classes)]
    ks = cfg.method.num_prototypes
    return [int(k) for k in ks] if isinstance(ks, (list, tuple, ListConfig)) else [int(ks)]


@METHODS.register("spcl")
class SPCL(EpochStateMixin, Method):
    """SimCLR + k-means prototypes, prototype-aware batches, siamese metric and prototype losses."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        self.weights = {name: float(m.weights[name]) for name in LOSSES}
        self.ks = prototype_counts(cfg, data)
        feat = self.backbone.feature_dim
        self.projection_head = None
        if self.weights["contrastive"] > 0:
            p = m.projection
            self.projection_head = SimCLRProjectionHead(feat, int(p.hidden_dim), int(p.output_dim), int(p.num_layers))
        if self.weights["metric"] > 0:
            hidden = int(m.metric_hidden_dim)
            self.metric_head = nn.Sequential(nn.Linear(feat, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 1))
        if self.weights["prototype"] > 0:
            self.prototype_heads = nn.ModuleList(nn.Linear(feat, k) for k in self.ks)
        # Prototype of every training sample per K; -1 until the first clustering. Checkpointed, not a
        # buffer: DDP would broadcast it every step (contrastive.clustering.assignments).
        self.register_epoch_state("assignments", unassigned(len(self.ks), data.num_train))
        self.covered = Coverage()

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        if not m.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {m.temperature}")
        if int(m.projection.num_layers) < 2:
            raise ConfigError(f"method.projection.num_layers must be >= 2, got {m.projection.num_layers}")
        for name in LOSSES:
            if not float(m.weights[name]) >= 0:
                raise ConfigError(f"method.weights.{name} must be >= 0, got {m.weights[name]}")
        if all(float(m.weights[name]) == 0 for name in LOSSES):
            raise ConfigError("method.weights are all 0: at least one of contrastive, metric, prototype must be > 0")
        if m.prototypes not in ("kmeans", "ground_truth"):
            raise ConfigError(f"method.prototypes='{m.prototypes}' is not valid; choose one of kmeans, ground_truth")
        if m.prototypes == "ground_truth" and not data.train_fully_labeled:
            raise ConfigError(f"method.prototypes=ground_truth needs a labeled training set; dataset '{cfg.dataset.name}' "
                              "has unlabeled training images (use method.prototypes=kmeans)")
        if m.prototypes == "kmeans":
            ks = prototype_counts(cfg, data)
            if not ks or any(not 2 <= k <= data.num_train for k in ks):
                raise ConfigError(f"method.num_prototypes={list(ks)} is not valid: every K must be in "
                                  f"[2, {data.num_train}] (2 to the training set size)")
        if m.contrastive_reduction not in ("sum", "mean"):
            raise ConfigError(f"method.contrastive_reduction='{m.contrastive_reduction}' is not valid; choose one of sum, mean")
        if m.sampler not in ("prototype", "random"):
            raise ConfigError(f"method.sampler='{m.sampler}' is not valid; choose one of prototype, random")
        if not 0.0 <= float(m.anchor_fraction) <= 1.0:
            raise ConfigError(f"method.anchor_fraction must be in [0, 1], got {m.anchor_fraction}")
        if m.cluster.view not in ("eval", "augment"):
            raise ConfigError(f"method.cluster.view='{m.cluster.view}' is not valid; choose one of eval, augment")
        if m.cluster.space not in ("projection", "representation"):
            raise ConfigError(f"method.cluster.space='{m.cluster.space}' is not valid; choose one of projection, representation")
        if int(m.cluster.start_epoch) < 0:
            raise ConfigError(f"method.cluster.start_epoch must be >= 0, got {m.cluster.start_epoch}")
        if int(m.cluster.start_epoch) > 0 and float(m.weights.contrastive) == 0:
            raise ConfigError(f"method.cluster.start_epoch={m.cluster.start_epoch} needs method.weights.contrastive > 0: "
                              "before the first clustering NT-Xent is the only loss")
        if int(m.cluster.niter) < 1 or int(m.cluster.batch_size) < 1:
            raise ConfigError(f"method.cluster.niter and batch_size must be >= 1, got {m.cluster.niter}, {m.cluster.batch_size}")
        if m.cluster.max_points_per_centroid is not None and int(m.cluster.max_points_per_centroid) < 1:
            raise ConfigError(f"method.cluster.max_points_per_centroid must be null (all points) or >= 1, "
                              f"got {m.cluster.max_points_per_centroid}")
        if not float(m.sce.A) < 0 or float(m.sce.alpha) < 0 or float(m.sce.beta) < 0:
            raise ConfigError(f"method.sce needs alpha >= 0, beta >= 0 and A < 0, got {dict(m.sce)}")
        check_batch_size(cfg, 2, "SPCL (NT-Xent negatives and prototype pairs)")

    # ------------------------------------------------------------------ prototypes
    @property
    def uses_prototypes(self) -> bool:
        return self.cfg.method.sampler == "prototype" or self.weights["metric"] > 0 or self.weights["prototype"] > 0

    def has_unused_parameters(self) -> bool:
        """Before ``method.cluster.start_epoch`` no sample has a prototype, so the metric and prototype heads
        get no gradient (NT-Xent only); DDP must look for them."""
        late = int(self.cfg.method.cluster.start_epoch) > 0
        return late and (self.weights["metric"] > 0 or self.weights["prototype"] > 0)

    def batch_sampler_factory(self):
        if self.cfg.method.sampler != "prototype":
            return None
        fraction = float(self.cfg.method.anchor_fraction)

        def current():  # read lazily, when the sampler starts an epoch
            return None if bool((self.assignments[0] < 0).any()) else self.assignments[0].cpu()

        return lambda n, bs, seed, rank, world: PrototypeBatchSampler(n, bs, seed, rank, world, current, fraction,
                                                                      device=self.sampler_device())

    def on_train_epoch_start(self) -> None:
        """Re-cluster the training set (from epoch ``method.cluster.start_epoch`` on).

        Lightning does not call this hook when it resumes in the middle of an epoch, so
        a resumed epoch keeps the checkpoint's assignments (the ones it started with)."""
        super().on_train_epoch_start()  # re-seeds the augmentation RNG
        if not self.uses_prototypes or self.current_epoch < int(self.cfg.method.cluster.start_epoch):
            return  # before the first clustering: assignments stay -1, batches random, NT-Xent only
        train = self.trainer.datamodule.splits.train
        if self.cfg.method.prototypes == "ground_truth":
            self.assignments.copy_(train.labels.to(self.device).expand_as(self.assignments))
            return
        start = time.perf_counter()
        assignments, stats = self.cluster_train_set(train.images)
        self.assignments.copy_(assignments.to(self.device))
        stats["cluster_seconds"] = time.perf_counter() - start - stats["embed_seconds"]
        self.log_dict({f"spcl/{k}": float(v) for k, v in stats.items()}, on_step=False, on_epoch=True, sync_dist=False)
        log.info("epoch %d: clustered %d samples into K=%s: %s", self.current_epoch, len(train), self.ks, stats)

    def cluster_train_set(self, images: torch.Tensor):
        """Prototype of every training sample, the same on every process.

        Every rank embeds its shard; the features are all-gathered, rank 0 alone runs
        faiss k-means (one run per K; on its GPU where faiss can), relabels the clusters to
        overlap most with the previous epoch's (so the prototype heads keep their meaning), and
        broadcasts the assignments (:func:`~contrastive.engine.embedding.on_rank_zero`: the other
        ranks wait within ``cluster_wait_minutes``). Returns ``(int64 [num_K, N] on the CPU,
        statistics dict)``; the statistics (embedding time, cluster sizes of the first K,
        agreement with the previous epoch) are computed on rank 0 and broadcast with the assignments."""
        start = time.perf_counter()
        features = self.train_features(images)  # [N, D], dataset order, on every rank
        embed_seconds = time.perf_counter() - start
        return on_rank_zero(self, lambda: self._cluster(features, embed_seconds))

    def _cluster(self, features: torch.Tensor, embed_seconds: float):
        """Rank 0's part of :meth:`cluster_train_set`: ``(assignments [num_K, N], stats)`` on the CPU."""
        c = self.cfg.method.cluster
        seed = int(self.cfg.seed) * 1009 + self.current_epoch
        previous = self.assignments.cpu()  # [num_K, N]; -1 before the first clustering
        gpu, rows = faiss_gpu_device(self.device), []  # rank 0's GPU when faiss has GPU support
        for k, old in zip(self.ks, previous):
            cap = None if c.max_points_per_centroid is None else int(c.max_points_per_centroid)
            new = kmeans(features, k, int(c.niter), seed, cap, gpu=gpu)[0]  # [N], fitted on all N unless capped
            rows.append(align_labels(new, old, k) if bool((old >= 0).all()) else new)
        assignments = torch.stack(rows)  # [num_K, N]
        stats = {"embed_seconds": embed_seconds, **cluster_stats(assignments[0], self.ks[0])}
        if bool((previous >= 0).all()):
            stats["kept_prototype"] = float((assignments == previous).float().mean())
        return assignments, stats

    def train_features(self, images: torch.Tensor) -> torch.Tensor:
        """L2-normalised embeddings ``[N, D]`` of uint8 ``images [N,3,H,W]`` in ``method.cluster.space``
        (``method.cluster.view``: the eval transform or a SimCLR view), in dataset order on every rank."""
        c = self.cfg.method.cluster
        transform = self.eval_transform if c.view == "eval" else self.augment
        return embed_split(self, images, transform, self.project if c.space == "projection" else self.backbone,
                           int(c.batch_size))

    # ------------------------------------------------------------------ losses
    def project(self, images: torch.Tensor) -> torch.Tensor:
        """The contrastive space (the representation itself when the contrastive term is off)."""
        h = self.backbone(images)
        return self.projection_head(h) if self.projection_head is not None else h

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        h0, h1 = self.backbone(views[0]), self.backbone(views[1])  # [B, D] each
        losses: Dict[str, torch.Tensor] = {}
        if self.weights["contrastive"] > 0:
            losses["contrastive"] = self.contrastive_loss(self.projection_head(h0), self.projection_head(h1))
        targets = self.assignments[:, indices.to(self.assignments.device)]  # [num_K, B]
        if self.covered(self.assignments, targets):  # prototype terms once clustered (read on the host once per clustering)
            if self.weights["metric"] > 0:
                losses["metric"] = self.metric_loss(h0, h1, targets[0])
            if self.weights["prototype"] > 0:
                terms = [self.prototype_loss(float32(head)(h), t) for head, t in zip(self.prototype_heads, targets) for h in (h0, h1)]
                losses["prototype"] = torch.stack(terms).mean()
        losses["loss"] = sum((self.weights[name] * value for name, value in losses.items()), 0.0 * h0.sum())
        return losses

    def contrastive_loss(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """NT-Xent over the ``2B`` views of this process's batch (negatives from the global batch).

        ``method.contrastive_reduction``: ``sum`` is the paper's "The final contrastive loss is
        computed as the sum-reduce across all samples" (the ``2B`` per-view terms summed, i.e.
        lightly's mean times ``2B``); ``mean`` is lightly's (and the authors' code's
        ``F.cross_entropy`` in ``model/losses.py`` of github.com/stoneMo/SPCL)."""
        m = self.cfg.method
        loss = nt_xent_views(z0, z1, float(m.temperature), bool(m.gather_distributed))  # lightly's NT-Xent: mean over the 2B local views
        return loss * (2 * z0.shape[0]) if self.cfg.method.contrastive_reduction == "sum" else loss

    def metric_loss(self, h0: torch.Tensor, h1: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """Siamese loss over the pairs of :func:`contrastive.clustering.prototype_pairs.prototype_pairs`: anchors are
        the batch's members of the anchor prototype ``c`` (view 0), each with one partner from
        ``P_c`` and one from ``P_\\c`` (view 1). ``c`` is the prototype of the batch's first
        sample: :class:`PrototypeBatchSampler` puts the anchor prototype's members first (with
        ``method.sampler=random`` it is a random sample's prototype)."""
        anchors, partners, same, weights = prototype_pairs(prototypes, prototypes[0])  # [2B] each, weight 1 on the pairs
        f0, f1 = F.normalize(h0, dim=1), F.normalize(h1, dim=1)
        logits = self.metric_head((f0[anchors] - f1[partners]).abs()).squeeze(1)  # [2B]: a row-wise head
        terms = F.binary_cross_entropy_with_logits(logits.float(), same, reduction="none")  # [2B]
        return (terms * weights).sum() / weights.sum().clamp(min=1.0)  # the mean over the pairs

    def prototype_loss(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        m = self.cfg.method
        if m.symmetric_ce:
            return symmetric_cross_entropy(logits.float(), targets, float(m.sce.alpha), float(m.sce.beta), float(m.sce.A))
        return F.cross_entropy(logits.float(), targets)

    # ------------------------------------------------------------------ diagnostics
    def on_train_epoch_end(self) -> None:
        tp, fn, tn = similarity_diagnostics(self, self.trainer.datamodule.splits.train, int(self.cfg.batch_size))
        values = {"spcl/tp_similarity": tp, "spcl/fn_similarity": fn, "spcl/tn_similarity": tn}
        self.log_dict({k: v for k, v in values.items() if v == v}, on_step=False, on_epoch=True, sync_dist=False)


@torch.no_grad()
def similarity_diagnostics(model: Method, split, size: int, seed: int = 0):
    """(TP, FN, TN) mean cosine similarities in ``model.project``'s space on a fixed batch of
    ``split`` (seed-fixed samples and views, eval mode, global RNG untouched). Works for any
    method with a ``project`` (SimCLR too). See :func:`contrastive.metrics.pair_similarity.tp_fn_similarity`."""
    idx = torch.randperm(len(split), generator=torch.Generator().manual_seed(seed))[:size]
    images = split.images[idx].to(model.device)
    aug_rng = torch.Generator(device=model.device).manual_seed(seed)
    was_training = model.training
    model.eval()
    try:
        z0, z1 = (model.project(model._to_memory_format(model.augment(images, generator=aug_rng))) for _ in range(2))
    finally:
        model.train(was_training)
    return tp_fn_similarity(z0, z1, split.labels[idx].to(model.device))
