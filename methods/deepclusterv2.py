"""DeepCluster v2, from "Unsupervised Learning of Visual Features by Contrasting Cluster
Assignments" (Caron, Misra, Mairal, Goyal, Bojanowski, Joulin, NeurIPS 2020, Appendix;
https://arxiv.org/abs/2006.09882), DeepCluster (Caron et al., ECCV 2018) with SwAV's training.

Every crop's l2-normalised projection is classified into its image's k-means cluster by the
cross-entropy of ``z . c / t`` over the l2-normalised centroids ``c`` (``t = 0.1``), against
several k-means clusterings at once (3 x 3,000 prototypes on ImageNet), averaged. The centroids
are not learned: at the start of every epoch each clustering re-runs (the framework's faiss
spherical k-means, :func:`contrastive.clustering.kmeans.kmeans`) on a memory of last epoch's
projections of the two global crops (clustering ``j`` on crop ``j mod 2``), and its centroids
become the classifier: bias-free and unit-norm from before the epoch's first forward (the authors'
main_deepclusterv2.py copies l2-normalised centroids into bias-free prototype layers). The memory
is written every step with the global batch's projections (under DDP gathered, so every process
holds all of it); before the first epoch it is filled by one pass over the training set with two
training views. Multi-crop as SwAV (``augment.multicrop``). Values not in our copy of the papers follow the authors' released
code (github.com/facebookresearch/swav, ``main_deepclusterv2.py``) and say so in the YAML.
"""

from __future__ import annotations

import logging
from typing import Dict, List

import torch
import torch.nn.functional as F
from lightly.models.modules import SwaVProjectionHead
from torch import nn

from contrastive.clustering.assignments import EpochStateMixin, unassigned
from contrastive.clustering.kmeans import cluster_stats, faiss_gpu_device, kmeans
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.embedding import embed_split, on_rank_zero
from contrastive.engine.method import DataInfo, Method, check_batch_size
from contrastive.losses.clustering import prototype_cross_entropy, prototype_scores
from contrastive.memory.feature_bank import FeatureBank
from contrastive.memory.queue import gather_keys

log = logging.getLogger(__name__)


@METHODS.register("deepclusterv2")
class DeepClusterV2(EpochStateMixin, Method):
    """DeepCluster v2: cross-entropy against per-epoch k-means clusters of a projection memory."""

    MULTICROP = True

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        self.dim = int(m.projection.output_dim)
        self.ks = [int(k) for k in m.num_prototypes]
        self.projection_head = SwaVProjectionHead(self.backbone.feature_dim, int(m.projection.hidden_dim), self.dim)
        # The projections of both global crops of every image, side by side: [N, 2 x d].
        self.memory = FeatureBank(data.num_train, 2 * self.dim)
        # Centroids of every clustering: fixed classifiers (requires_grad False: not optimised,
        # not broadcast by DDP every step, but saved in checkpoints).
        self.centroids = nn.ParameterList(nn.Parameter(torch.zeros(k, self.dim), requires_grad=False) for k in self.ks)
        # Every image's cluster per clustering: checkpointed, not a buffer (DDP would broadcast it every step).
        self.register_epoch_state("assignments", unassigned(len(self.ks), data.num_train))

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        ks = list(m.num_prototypes)
        if not ks or any(not 2 <= int(k) <= data.num_train for k in ks):
            raise ConfigError(f"method.num_prototypes={ks} is not valid: a non-empty list of cluster counts, "
                              f"each in [2, {data.num_train}] (2 to the training set size)")
        if not float(m.temperature) > 0:
            raise ConfigError(f"method.temperature must be > 0, got {m.temperature}")
        if int(m.kmeans_iterations) < 1 or int(m.embed_batch_size) < 1:
            raise ConfigError(f"method.kmeans_iterations and method.embed_batch_size must be >= 1, "
                              f"got {m.kmeans_iterations}, {m.embed_batch_size}")
        check_batch_size(cfg, 1, "DeepCluster v2")

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """l2-normalised projections ``[B, d]``."""
        return F.normalize(self.projection_head(self.backbone(images)), dim=1)

    # ------------------------------------------------------------------ clustering
    def on_train_epoch_start(self) -> None:
        """Fill the memory if empty (first epoch), then re-cluster it: new centroids and targets."""
        super().on_train_epoch_start()
        if not bool(self.memory.filled.all()):
            self.fill_memory()
        assignments, centroids, stats = on_rank_zero(self, self.cluster_memory)
        self.assignments.copy_(assignments.to(self.device))
        for param, c in zip(self.centroids, centroids):
            param.data.copy_(c.to(param.device))
        self.log_dict({f"deepclusterv2/{k}": float(v) for k, v in stats.items()}, on_step=False, on_epoch=True)
        log.info("epoch %d: clustered the memory into K=%s: %s", self.current_epoch, self.ks, stats)

    @torch.no_grad()
    def fill_memory(self) -> None:
        """Two training views of every image through the current network (in dataset order)."""
        images = self.trainer.datamodule.splits.train.images
        bs = int(self.cfg.method.embed_batch_size)
        views = [embed_split(self, images, self.augment, self.project, bs) for _ in range(2)]  # 2 x [N, d]
        self.memory.update(torch.arange(len(images), device=self.device), torch.cat(views, dim=1).to(self.device))

    def cluster_memory(self):
        """k-means of every clustering on its crop's memory: ``(assignments [H, N], [centroids [K, d]], stats)``."""
        features = self.memory.features.detach().cpu()  # [N, 2d]
        seed = int(self.cfg.seed) * 1009 + self.current_epoch
        rows, centroids, gpu = [], [], faiss_gpu_device(self.device)  # rank 0's GPU when faiss has GPU support
        for j, k in enumerate(self.ks):
            crop = features[:, (j % 2) * self.dim:(j % 2 + 1) * self.dim]  # [N, d]
            assigned, c = kmeans(crop, k, int(self.cfg.method.kmeans_iterations), seed + j, gpu=gpu)
            rows.append(assigned)
            centroids.append(c)
        assignments = torch.stack(rows)  # [H, N]
        return assignments, centroids, cluster_stats(assignments[0], self.ks[0])

    # ------------------------------------------------------------------ loss
    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        z = [self.project(v) for v in views]  # (2 + N) x [B, d]
        targets = self.assignments[:, indices.to(self.assignments.device)]  # [H, B]
        t = float(self.cfg.method.temperature)
        loss = torch.stack([prototype_cross_entropy([prototype_scores(zi, c) for zi in z], target, t)
                            for c, target in zip(self.centroids, targets)]).mean()
        with torch.no_grad():  # this step's global crops replace the images' memory rows
            self.memory.update(gather_keys(indices.to(z[0].device)), gather_keys(torch.cat(z[:2], dim=1).detach()))
        return {"loss": loss}
