"""PCL v2: Prototypical Contrastive Learning of Unsupervised Representations (Li, Zhou, Xiong,
Hoi, ICLR 2021, https://arxiv.org/abs/2005.04966).

MoCo v2 (:mod:`methods.mocov2`: momentum encoder, key queue, MLP head; the defaults and the
``experiment=pclv2_*`` presets differ as MoCo v2's do, see configs/method/pclv2.yaml) plus
prototypes. At the start of every epoch after a warm-up, the momentum encoder embeds every
training image (un-augmented, the eval transform) and faiss k-means clusters the embeddings
``M`` times with different cluster counts (the paper's ImageNet run: 25,000, 50,000 and 100,000).
Each cluster gets a concentration ``phi`` (:func:`contrastive.clustering.concentration.concentration`)
and the loss is ProtoNCE (Eq. 6): MoCo's InfoNCE plus, averaged over the ``M`` clusterings, the
InfoNCE of the query against the prototypes of the batch's images (its own is the target) and
``r`` prototypes drawn from those no image of the batch is assigned to, each logit scaled by its
prototype's ``1 / phi``, as the released code (pcl/builder.py) builds it
(:func:`contrastive.losses.clustering.proto_nce`). The k-means is PCL's ``run_kmeans``
(main_pcl.py): Euclidean, 5 restarts, centroids l2-normalised afterwards (``method.kmeans``).
Under DDP every process embeds a shard, rank 0 clusters the gathered features (on its GPU where
faiss has GPU support, as main_pcl.py) and broadcasts the result, the others waiting within
``cluster_wait_minutes`` (:func:`contrastive.engine.embedding.on_rank_zero`); each process
contrasts its own batch's prototypes, as PCL's processes do.
"""

from __future__ import annotations

import logging
from typing import Dict, List

import torch
import torch.nn.functional as F

from contrastive.clustering.concentration import concentration
from contrastive.clustering.assignments import EpochStateMixin, unassigned
from contrastive.clustering.kmeans import cluster_stats, faiss_gpu_device, kmeans
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.embedding import embed_split, on_rank_zero
from contrastive.engine.method import DataInfo
from contrastive.losses.clustering import draw_negative_prototypes, proto_nce
from .mocov2 import MoCoV2

log = logging.getLogger(__name__)


@METHODS.register("pclv2")
class PCLv2(EpochStateMixin, MoCoV2):
    """MoCo v2 + ProtoNCE against per-epoch k-means prototypes of the momentum features."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m, dim = cfg.method, int(cfg.method.projection.output_dim)
        self.ks = [int(k) for k in m.num_prototypes]
        # Prototypes, their concentrations and every sample's prototype, per clustering: checkpointed under
        # the keys they had as buffers, but not buffers (DDP would broadcast them every step; the ImageNet
        # preset's centroids alone are 175,000 x 128 floats): contrastive.clustering.assignments.
        for j, k in enumerate(self.ks):
            self.register_epoch_state(f"centroids_{j}", torch.zeros(k, dim))
            self.register_epoch_state(f"concentration_{j}", torch.ones(k))
        self.register_epoch_state("assignments", unassigned(len(self.ks), data.num_train))

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        super().validate_config(cfg, data)
        m = cfg.method
        ks = list(m.num_prototypes)
        if not ks or any(not 2 <= int(k) <= data.num_train for k in ks):
            raise ConfigError(f"method.num_prototypes={ks} is not valid: a non-empty list of cluster counts, "
                              f"each in [2, {data.num_train}] (2 to the training set size)")
        if not 1 <= int(m.num_negative_prototypes) < min(int(k) for k in ks):
            raise ConfigError(f"method.num_negative_prototypes={m.num_negative_prototypes} must be in "
                              f"[1, {min(int(k) for k in ks) - 1}] (below the smallest cluster count)")
        km = m.kmeans
        if int(m.warmup_epochs) < 0 or min(int(km.iterations), int(km.nredo), int(m.embed_batch_size)) < 1:
            raise ConfigError(f"method.warmup_epochs must be >= 0 and method.kmeans.iterations, method.kmeans.nredo, "
                              f"method.embed_batch_size >= 1, got {m.warmup_epochs}, {km.iterations}, {km.nredo}, "
                              f"{m.embed_batch_size}")
        if not 1 <= int(km.min_points_per_centroid) <= int(km.max_points_per_centroid):
            raise ConfigError(f"method.kmeans.min_points_per_centroid={km.min_points_per_centroid} and "
                              f"max_points_per_centroid={km.max_points_per_centroid} must satisfy 1 <= min <= max")
        if not float(m.concentration_alpha) > 0:
            raise ConfigError(f"method.concentration_alpha must be > 0, got {m.concentration_alpha}")

    def prototypes(self, j: int):
        """``(centroids [K_j, d], concentration [K_j])`` of clustering ``j``."""
        return getattr(self, f"centroids_{j}"), getattr(self, f"concentration_{j}")

    # ------------------------------------------------------------------ clustering
    def on_train_epoch_start(self) -> None:
        """Re-cluster the momentum features (from epoch ``method.warmup_epochs`` on; before: MoCo v2 only)."""
        super().on_train_epoch_start()
        if self.current_epoch < int(self.cfg.method.warmup_epochs):
            return
        images = self.trainer.datamodule.splits.train.images
        momentum_embed = lambda x: self.momentum[1](self.momentum[0](x))  # noqa: E731
        features = embed_split(self, images, self.eval_transform, momentum_embed, int(self.cfg.method.embed_batch_size))
        assignments, prototypes, stats = on_rank_zero(self, lambda: self.cluster(features.cpu()))
        self.assignments.copy_(assignments.to(self.device))
        for j, (c, phi) in enumerate(prototypes):
            centroids, conc = self.prototypes(j)
            centroids.copy_(c.to(self.device))
            conc.copy_(phi.to(self.device))
        self.log_dict({f"{self.cfg.method.name}/{k}": float(v) for k, v in stats.items()}, on_step=False, on_epoch=True)
        log.info("epoch %d: clustered %d momentum features into K=%s: %s", self.current_epoch, len(images), self.ks, stats)

    def cluster(self, features: torch.Tensor):
        """k-means per cluster count on ``features [N, d]``: ``(assignments [M, N], [(centroids, phi)], stats)``."""
        m = self.cfg.method
        seed = int(self.cfg.seed) * 1009 + self.current_epoch
        rows, prototypes, gpu = [], [], faiss_gpu_device(self.device)  # rank 0's GPU when faiss has GPU support
        for j, k in enumerate(self.ks):
            km = m.kmeans
            assigned, fitted = kmeans(features, k, int(km.iterations), seed + j, int(km.max_points_per_centroid),
                                      spherical=bool(km.spherical), nredo=int(km.nredo),
                                      min_points_per_centroid=int(km.min_points_per_centroid), gpu=gpu)
            # phi from the distances to the centroids as fitted; the prototypes are their unit vectors
            # (PCL's main_pcl.py: distances from index.search, line 435; normalize, line 464).
            phi = concentration(features, assigned, fitted, float(m.concentration_alpha), float(m.temperature))
            rows.append(assigned)
            prototypes.append((F.normalize(fitted, dim=1), phi))
        assignments = torch.stack(rows)  # [M, N]
        stats = cluster_stats(assignments[0], self.ks[0])
        stats["concentration_min"], stats["concentration_max"] = float(prototypes[0][1].min()), float(prototypes[0][1].max())
        return assignments, prototypes, stats

    # ------------------------------------------------------------------ loss
    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        q = self.query(views[0])  # [B, d]
        losses = {"instance": self.instance_loss(q, views[1])}
        targets = self.assignments[:, indices.to(self.assignments.device)]  # [M, B]
        if self.current_epoch >= int(self.cfg.method.warmup_epochs):  # clustered at this epoch's start
            r = int(self.cfg.method.num_negative_prototypes)
            # The draw is a function of (seed, step): a resumed run draws what the straight run drew.
            draw = torch.Generator(device=q.device).manual_seed(int(self.cfg.seed) * 1_000_003 + self.global_step)
            terms = []
            for j, target in enumerate(targets):
                centroids, phi = self.prototypes(j)
                negatives, valid = draw_negative_prototypes(len(phi), target, r, draw)  # [r], [r]
                terms.append(proto_nce(q, centroids, phi, target, negatives, valid))
            losses["prototype"] = torch.stack(terms).mean()
        losses["loss"] = sum(losses.values())
        return losses
