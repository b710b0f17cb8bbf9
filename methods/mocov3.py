"""MoCo v3: An Empirical Study of Training Self-Supervised Vision Transformers (Chen, Xie, He,
ICCV 2021, https://arxiv.org/abs/2104.02057).

No queue: each query is contrasted with the momentum keys of the same (global) batch, symmetrised
over the two views, ``ctr(q1, k2) + ctr(q2, k1)`` with ``ctr`` the InfoNCE of Alg. 1 scaled by
``2 tau`` (:func:`contrastive.losses.self_supervised.batch_info_nce`). The query encoder has a
projector and a predictor; the key encoder is the momentum copy of backbone and projector,
momentum from 0.99 to 1 on a cosine.

Heads (:func:`mlp`): the paper's text gives "The projection head is a 3-layer MLP" with BN in all
layers, but the authors' released code builds that only for ViT (moco-v3 moco/builder.py
``MoCo_ViT``); for ResNet, ``MoCo_ResNet`` builds ``_build_mlp(2, ...)``: a 2-layer projector whose
output BN has no learnable scale or shift (``last_bn=True``, ``BatchNorm1d(dim, affine=False)``),
and a 2-layer predictor with no BN at its output (``last_bn=False``). The ResNet models the
authors report were trained with that code, and this method's backbones are convolutional, so
it follows the ResNet code (``method.projection.num_layers: 2``; 3 gives the paper's text with
the same non-affine output BN). Linear layers have no bias, as ``_build_mlp``'s.
The ResNet-50 recipe is experiment=mocov3_imagenet (CONFIG.md's 100-epoch row).
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightly.models.modules.heads import ProjectionHead
from torch import nn

from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo, check_batch_size
from contrastive.engine.momentum import MomentumMethod
from contrastive.losses.self_supervised import batch_info_nce
from contrastive.memory.queue import gather_keys


def mlp(num_layers: int, input_dim: int, hidden_dim: int, output_dim: int, last_bn: bool) -> nn.Module:
    """MoCo v3's MLP (moco-v3 moco/builder.py ``_build_mlp``), ``[B, input_dim] -> [B, output_dim]``.

    ``num_layers`` bias-free Linear layers; each hidden one is followed by BN and ReLU, the last
    by a BN without affine parameters when ``last_bn`` ("for simplicity, we further removed
    gamma in BN", following SimCLR's head) and by nothing otherwise.
    """
    dims = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
    blocks = [(dims[i], dims[i + 1], nn.BatchNorm1d(dims[i + 1]), nn.ReLU(), False) for i in range(num_layers - 1)]
    blocks.append((dims[-2], output_dim, nn.BatchNorm1d(output_dim, affine=False) if last_bn else None, None, False))
    return ProjectionHead(blocks)


@METHODS.register("mocov3")
class MoCoV3(MomentumMethod):
    """MoCo v3 for convolutional backbones, heads as the released ResNet code (module doc)."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        out = int(m.projection.output_dim)
        self.projection_head = mlp(int(m.projection.num_layers), self.backbone.feature_dim, int(m.projection.hidden_dim),
                                   out, last_bn=True)
        self.prediction_head = mlp(2, out, int(m.predictor.hidden_dim), out, last_bn=False)
        self.init_momentum(self.backbone, self.projection_head)

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        super().validate_config(cfg, data)
        if not float(cfg.method.temperature) > 0:
            raise ConfigError(f"method.temperature must be > 0, got {cfg.method.temperature}")
        if int(cfg.method.projection.num_layers) < 2:
            raise ConfigError(f"method.projection.num_layers must be >= 2 (2: MoCo v3's ResNet code, 3: its paper text "
                              f"and ViT code), got {cfg.method.projection.num_layers}")
        check_batch_size(cfg, 2, "in-batch negatives")

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        q = [F.normalize(self.prediction_head(self.projection_head(self.backbone(v))), dim=1) for v in views[:2]]
        with torch.no_grad():
            k = [gather_keys(F.normalize(self.momentum[1](self.momentum[0](v)), dim=1)) for v in views[:2]]  # 2 x [M, d]
        rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
        t, offset = float(self.cfg.method.temperature), rank * q[0].shape[0]
        loss = batch_info_nce(q[0], k[1], t, offset) + batch_info_nce(q[1], k[0], t, offset)
        return {"loss": loss}
