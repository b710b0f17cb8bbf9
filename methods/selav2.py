"""SeLa v2, from "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments" (Caron,
Misra, Mairal, Goyal, Bojanowski, Joulin, NeurIPS 2020, Appendix; https://arxiv.org/abs/2006.09882):
SeLa (Asano, Rupprecht, Vedaldi, ICLR 2020, self-labelling by Sinkhorn-Knopp) with SwAV's training
improvements (multi-crop, the MLP projection head, a temperature on l2-normalised scores, LARS, cosine).

Every image carries a pseudo-label per head: at the start of every epoch the labels of the *whole
training set* are recomputed by Sinkhorn-Knopp under the equal-partition constraint
(:func:`contrastive.clustering.sinkhorn.sinkhorn_labels`), from a memory of last epoch's projections of the
two global crops (head ``j`` on crop ``j mod 2``, as DeepCluster v2's clusterings) scored against the
head's prototypes. During the epoch every crop's prototype scores ``z . c / t`` (l2-normalised ``z`` and
``c``, ``t`` = 0.1) are classified into the image's label by cross-entropy, averaged over heads and crops;
unlike DeepCluster v2's k-means centroids the prototypes are learned (a bias-free linear layer per head,
its rows l2-normalised before every forward, as SwAV's code does). The memory (written every step with
the global batch's projections; filled by one pass with two training views before the first epoch)
and the labels are checkpointed, so a resumed run continues exactly.
"""

from __future__ import annotations

import logging
from typing import Dict, List

import torch
import torch.nn.functional as F
from lightly.models.modules import SwaVProjectionHead
from torch import nn

from contrastive.clustering.assignments import EpochStateMixin, unassigned
from contrastive.clustering.kmeans import cluster_stats
from contrastive.clustering.sinkhorn import sinkhorn_labels
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.embedding import embed_split, on_rank_zero
from contrastive.engine.method import DataInfo, Method, check_batch_size
from contrastive.losses.clustering import prototype_cross_entropy, prototype_scores
from contrastive.memory.feature_bank import FeatureBank
from contrastive.memory.queue import gather_keys

log = logging.getLogger(__name__)


@METHODS.register("selav2")
class SeLaV2(EpochStateMixin, Method):
    """SeLa v2: cross-entropy against whole-set Sinkhorn-Knopp pseudo-labels over learned prototypes."""

    MULTICROP = True

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        self.dim = int(m.projection.output_dim)
        self.ks = [int(k) for k in m.num_prototypes]
        self.projection_head = SwaVProjectionHead(self.backbone.feature_dim, int(m.projection.hidden_dim), self.dim)
        self.prototypes = nn.ModuleList(nn.Linear(self.dim, k, bias=False) for k in self.ks)
        # The projections of both global crops of every image, side by side: [N, 2 x d].
        self.memory = FeatureBank(data.num_train, 2 * self.dim)
        # Every image's label per head: checkpointed, not a buffer (DDP would broadcast it every step).
        self.register_epoch_state("assignments", unassigned(len(self.ks), data.num_train))

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        ks = list(m.num_prototypes)
        if not ks or any(not 2 <= int(k) <= data.num_train for k in ks):
            raise ConfigError(f"method.num_prototypes={ks} is not valid: a non-empty list of label counts, "
                              f"each in [2, {data.num_train}] (2 to the training set size)")
        for key in ("temperature", "sinkhorn_epsilon"):
            if not float(m[key]) > 0:
                raise ConfigError(f"method.{key} must be > 0, got {m[key]}")
        if int(m.sinkhorn_iterations) < 1 or int(m.embed_batch_size) < 1:
            raise ConfigError(f"method.sinkhorn_iterations and method.embed_batch_size must be >= 1, "
                              f"got {m.sinkhorn_iterations}, {m.embed_batch_size}")
        check_batch_size(cfg, 1, "SeLa v2")

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """l2-normalised projections ``[B, d]``."""
        return F.normalize(self.projection_head(self.backbone(images)), dim=1)

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Rows of every head's prototypes to unit norm (SwAV's code, before every forward)."""
        for head in self.prototypes:
            head.weight.copy_(F.normalize(head.weight, dim=1))

    # ------------------------------------------------------------------ self-labelling
    def on_train_epoch_start(self) -> None:
        """Fill the memory if empty (first epoch), then relabel the whole set."""
        super().on_train_epoch_start()
        if not bool(self.memory.filled.all()):
            self.fill_memory()
        self.normalize_prototypes()
        assignments, stats = on_rank_zero(self, self.label_memory)
        self.assignments.copy_(assignments.to(self.device))
        self.log_dict({f"selav2/{k}": float(v) for k, v in stats.items()}, on_step=False, on_epoch=True)
        log.info("epoch %d: relabelled the memory into K=%s: %s", self.current_epoch, self.ks, stats)

    @torch.no_grad()
    def fill_memory(self) -> None:
        """Two training views of every image through the current network (in dataset order)."""
        images = self.trainer.datamodule.splits.train.images
        bs = int(self.cfg.method.embed_batch_size)
        views = [embed_split(self, images, self.augment, self.project, bs) for _ in range(2)]  # 2 x [N, d]
        self.memory.update(torch.arange(len(images), device=self.device), torch.cat(views, dim=1).to(self.device))

    def label_memory(self):
        """Whole-set Sinkhorn-Knopp labels of every head: ``(assignments [H, N], stats)``."""
        features = self.memory.features.detach()  # [N, 2d]
        m = self.cfg.method
        rows = [sinkhorn_labels(features[:, (j % 2) * self.dim:(j % 2 + 1) * self.dim], head.weight.detach(),
                                float(m.sinkhorn_epsilon), int(m.sinkhorn_iterations))
                for j, head in enumerate(self.prototypes)]
        assignments = torch.stack(rows).cpu()  # [H, N]
        return assignments, cluster_stats(assignments[0], self.ks[0])

    # ------------------------------------------------------------------ loss
    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        self.normalize_prototypes()

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        z = [self.project(v) for v in views]  # (2 + N) x [B, d]
        targets = self.assignments[:, indices.to(self.assignments.device)]  # [H, B]
        t = float(self.cfg.method.temperature)
        loss = torch.stack([prototype_cross_entropy([prototype_scores(zi, head.weight) for zi in z], target, t)
                            for head, target in zip(self.prototypes, targets)]).mean()
        with torch.no_grad():  # this step's global crops replace the images' memory rows
            self.memory.update(gather_keys(indices.to(z[0].device)), gather_keys(torch.cat(z[:2], dim=1).detach()))
        return {"loss": loss}
