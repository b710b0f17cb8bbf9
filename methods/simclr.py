"""SimCLR: A Simple Framework for Contrastive Learning of Visual Representations.

Chen, Kornblith, Norouzi, Hinton, ICML 2020 (https://arxiv.org/abs/2002.05709).

Two strongly augmented views of every image pass through the backbone and a projection
head; the loss makes the two views of an image agree against the ``2(N-1)`` other views
of the (global, under DDP) batch. The paper's recipe (configs/method/simclr.yaml): LARS
with lr = 0.075 x sqrt(batch) (its Appendix B.1 rule for small batches and short
schedules; ``optimizer.lr=0.3 optimizer.lr_scaling=linear`` is the large-batch
0.3 x batch/256), 10 warm-up epochs then cosine decay (the paper presets
``configs/experiment/simclr_*``; ``method=simclr`` alone uses 3 so that the 15-epoch default
run is not all warm-up), weight decay 1e-6, temperature 0.5 on CIFAR.

The paper's ablations, all switches of this file:

- **Projection head** (Sec. 4.2, Fig. 8: "identity mapping", "linear projection",
  slides: "Non-linear Projection Head gave best results", "Projection Head: 2-layer MLP"): ``method.projection.num_layers=0`` (no head, the loss on ``h``),
  ``1`` (one linear layer ``W h``) or ``>= 2`` (lightly's MLP: Linear-BN-ReLU blocks then a
  linear output layer; 2 is the paper's default).
- **Loss** (Table 2, compared in Table 4), ``method.loss``: ``nt_xent`` (default),
  ``nt_logistic``, ``margin_triplet`` (``method.margin``), optionally with semi-hard
  negatives (``method.semi_hard=true``, Table 4's "sh"); pure functions in
  :mod:`contrastive.losses.pairwise`.
- **l2 normalisation** (Table 5, the rows with "ℓ2 norm?" No): ``method.normalize=false`` uses the
  raw dot products ``u^T v`` as logits instead of cosine similarities.
- **Temperature** (Table 5): ``method.temperature``.
"""

from __future__ import annotations

from typing import Dict, List

import torch
from lightly.models.modules import SimCLRProjectionHead
from torch import nn

from contrastive.core.errors import ConfigError
from contrastive.losses.pairwise import margin_triplet, nt_logistic, nt_xent, nt_xent_views, view_similarities
from contrastive.engine.method import DataInfo, Method, check_batch_size
from contrastive.core.registry import METHODS

LOSSES = ("nt_xent", "nt_logistic", "margin_triplet")


def projection_head(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> nn.Module:
    """SimCLR's projection ``g``: 0 layers = identity (output ``input_dim``), 1 = linear, >= 2 = MLP
    (``[B, input_dim]`` -> ``[B, output_dim]``)."""
    if num_layers == 0:
        return nn.Identity()
    if num_layers == 1:
        return nn.Linear(input_dim, output_dim)
    return SimCLRProjectionHead(input_dim, hidden_dim, output_dim, num_layers)


@METHODS.register("simclr")
class SimCLR(Method):
    """SimCLR with lightly's projection head and NT-Xent loss (without host syncs), plus the paper's ablations."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        p = m.projection
        self.projection_head = self.make_projection_head(self.backbone.feature_dim, int(p.hidden_dim), int(p.output_dim),
                                                         int(p.num_layers))

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        if not m.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {m.temperature}")
        if int(m.projection.num_layers) < 0:
            raise ConfigError(f"method.projection.num_layers must be >= 0 (0: no head, 1: linear, 2+: MLP), "
                              f"got {m.projection.num_layers}")
        if m.loss not in LOSSES:
            raise ConfigError(f"method.loss='{m.loss}' is not valid; choose one of {', '.join(LOSSES)}")
        if not isinstance(m.normalize, bool) or not isinstance(m.semi_hard, bool):
            raise ConfigError(f"method.normalize and method.semi_hard must be true or false, got {m.normalize}, {m.semi_hard}")
        if not float(m.margin) >= 0:
            raise ConfigError(f"method.margin must be >= 0, got {m.margin}")
        if m.semi_hard and m.loss == "nt_xent":
            raise ConfigError("method.semi_hard=true applies to method.loss=nt_logistic|margin_triplet (SimCLR Table 4), not nt_xent")
        # With one image per batch there is no negative: the losses are undefined.
        check_batch_size(cfg, 2, "NT-Xent (one positive and at least one negative per view)")

    @staticmethod
    def make_projection_head(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int) -> nn.Module:
        """The head ``g`` (:func:`projection_head`); SimCLR v2 builds its own."""
        return projection_head(input_dim, hidden_dim, output_dim, num_layers)

    def project(self, images: torch.Tensor) -> torch.Tensor:
        return self.projection_head(self.backbone(images))  # [B, output_dim]

    def contrastive_loss(self, z0: torch.Tensor, z1: torch.Tensor) -> torch.Tensor:
        """``method.loss`` on the two views' projections ``[B, d]``."""
        m = self.cfg.method
        if m.loss == "nt_xent" and m.normalize:
            # lightly's NT-Xent without a host sync (equal to it and to losses.nt_xent, tested); gather_distributed:
            # negatives come from every process's batch, as in the paper.
            return nt_xent_views(z0, z1, float(m.temperature), bool(m.gather_distributed))
        pos, neg = view_similarities(z0.float(), z1.float(), bool(m.normalize), bool(m.gather_distributed))
        if m.loss == "nt_xent":
            return nt_xent(pos, neg, float(m.temperature))
        if m.loss == "nt_logistic":
            return nt_logistic(pos, neg, float(m.temperature), bool(m.semi_hard))
        return margin_triplet(pos, neg, float(m.margin), bool(m.semi_hard))

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        # Both views in one batch, so BatchNorm normalises over the 2B views together, as the authors' code
        # does (google-research/simclr model.py: the views concatenated to "(num_transforms * bsz, h, w, c)"
        # before the base network and the head); one view at a time gave BN statistics per view.
        z0, z1 = self.project(torch.cat([views[0], views[1]])).chunk(2)  # [B, d] each
        return {"loss": self.contrastive_loss(z0, z1)}
