"""SwAV: Unsupervised Learning of Visual Features by Contrasting Cluster Assignments (Caron,
Misra, Mairal, Goyal, Bojanowski, Joulin, NeurIPS 2020, https://arxiv.org/abs/2006.09882).

"Swapped prediction": the code (Sinkhorn-Knopp soft assignment to prototypes, computed on the
global views only) of one view is predicted from the other views' prototype scores (Eq. 1-3),
lightly's ``SwaVLoss`` (3 Sinkhorn iterations, epsilon 0.05, temperature 0.1). Multi-crop
(``augment.multicrop``): 2 global + N low-resolution views, all predicting the global views' codes.
The prototypes are a bias-free linear layer (the authors' src/resnet50.py: ``nn.Linear(output_dim,
nmb_prototypes, bias=False)``), l2-normalised before every forward (Sec. 4: "we normalize the
prototypes"; main_swav.py normalises their weights, under no_grad, at the start of each iteration),
so the first step too sees unit prototypes, and "frozen during the first epoch" (Appendix: their
gradients are dropped for ``method.freeze_prototypes_epochs``). SwAV's queue for small batches is
not implemented.
"""

from __future__ import annotations

import logging
from typing import Dict, List

import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead
from torch import nn

from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo, Method, check_batch_size
from contrastive.losses.clustering import prototype_scores
from contrastive.losses.precision import float32

log = logging.getLogger(__name__)


class Prototypes(nn.Linear):
    """SwAV's prototypes ``[K, d]``: a bias-free linear layer. Reads checkpoints written with lightly's
    ``SwaVPrototypes`` (``heads.0.weight``, ``heads.0.bias``): the weight is kept, the bias dropped."""

    def __init__(self, dim: int, num_prototypes: int) -> None:
        super().__init__(dim, num_prototypes, bias=False)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        if prefix + "heads.0.weight" in state_dict:
            state_dict[prefix + "weight"] = state_dict.pop(prefix + "heads.0.weight")
            if state_dict.pop(prefix + "heads.0.bias", None) is not None:
                log.warning("this SwAV checkpoint's prototypes have a bias (lightly's SwaVPrototypes); it is dropped: "
                            "SwAV's prototypes have none")
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


@METHODS.register("swav")
class SwAV(Method):
    """SwAV with lightly's projection head and loss, and bias-free prototypes."""

    MULTICROP = True

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        out = int(m.projection.output_dim)
        self.projection_head = SwaVProjectionHead(self.backbone.feature_dim, int(m.projection.hidden_dim), out)
        self.prototypes = Prototypes(out, int(m.num_prototypes))  # [K, d], bias-free
        self.criterion = SwaVLoss(temperature=float(m.temperature), sinkhorn_iterations=int(m.sinkhorn_iterations),
                                  sinkhorn_epsilon=float(m.sinkhorn_epsilon), sinkhorn_gather_distributed=True)

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        if int(m.num_prototypes) < 2:
            raise ConfigError(f"method.num_prototypes must be >= 2, got {m.num_prototypes}")
        for key in ("temperature", "sinkhorn_epsilon"):
            if not float(m[key]) > 0:
                raise ConfigError(f"method.{key} must be > 0, got {m[key]}")
        if int(m.freeze_prototypes_epochs) < 0:
            raise ConfigError(f"method.freeze_prototypes_epochs must be >= 0, got {m.freeze_prototypes_epochs}")
        check_batch_size(cfg, 2, "the Sinkhorn-Knopp equipartition over the batch")

    def scores(self, images: torch.Tensor) -> torch.Tensor:
        """Prototype scores ``[B, K]`` of l2-normalised projections."""
        z = F.normalize(self.projection_head(self.backbone(images)), dim=1)  # [B, d]
        return prototype_scores(z, self.prototypes.weight)  # [B, K], float32 under autocast too

    @torch.no_grad()
    def normalize_prototypes(self) -> None:
        """Every prototype onto the unit sphere, in place (before each forward, as SwAV's main_swav.py)."""
        self.prototypes.weight.copy_(F.normalize(self.prototypes.weight, dim=1))

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        self.normalize_prototypes()
        scores = [self.scores(v).float() for v in views]  # (2 + N) x [B, K]
        return {"loss": float32(self.criterion)(scores[:2], scores[2:]).reshape(())}  # lightly returns [1]

    def on_after_backward(self) -> None:
        if self.current_epoch < int(self.cfg.method.freeze_prototypes_epochs):
            for p in self.prototypes.parameters():
                p.grad = None  # SwAV: the prototypes stay fixed during the first epoch
