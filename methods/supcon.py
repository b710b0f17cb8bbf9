"""SupCon: Supervised Contrastive Learning (Khosla et al., NeurIPS 2020, https://arxiv.org/abs/2004.11362).

Two augmented views of every image pass through the encoder and a projection network; the loss
(:func:`contrastive.losses.supcon.supcon_loss`, the paper's Eq. 2, ``L^sup_out``) pulls together every
pair of views of the same *class* in the global multiviewed batch and pushes apart the rest. The
method needs labels (``supervised = True``: a dataset with unlabelled training images is a one-line
error before anything is built). After training, "we train a linear classifier on top of the frozen
representations" (Sec. 3): ``linear_eval.py checkpoint=<run>/checkpoints/last.ckpt``; the run's own
headline is the kNN monitor's top-1, as for the self-supervised methods.

From the paper (Sec. 3.1): the representation ``r`` "is normalized to the unit hypersphere"
(``method.normalize_representation``; HobbitLong/SupContrast's PyTorch code, networks/resnet_big.py
``SupConResNet``, feeds the raw ``r`` to the head), the projection is "a multi-layer perceptron with a
single hidden layer of size 2048 and output vector of size D_P = 128 or just a single linear layer"
(``method.projection.num_layers=2|1``; resnet_big.py: Linear-ReLU-Linear, no BatchNorm), and its
output is normalised again. "we rescale the loss by t during training": losses.py multiplies it by
``t / base_temperature`` (``method.base_temperature``, 0.07 in losses.py).
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo, Method
from contrastive.losses.supcon import supcon_loss


def supcon_projection(input_dim: int, hidden_dim: int, output_dim: int, num_layers: int, batch_norm: bool) -> nn.Module:
    """SupCon's ``Proj``: 1 = one linear layer, 2 = Linear-ReLU-Linear (resnet_big.py's ``head='mlp'``),
    ``[B, input_dim] -> [B, output_dim]``; ``batch_norm``: BatchNorm after the hidden layer (not the paper's)."""
    if num_layers == 1:
        return nn.Linear(input_dim, output_dim)
    norm = [nn.BatchNorm1d(hidden_dim)] if batch_norm else []
    return nn.Sequential(nn.Linear(input_dim, hidden_dim), *norm, nn.ReLU(inplace=True), nn.Linear(hidden_dim, output_dim))


@METHODS.register("supcon")
class SupCon(Method):
    """SupCon: Eq. 2 over two views per image, positives = every view of the same label."""

    supervised = True

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        p = cfg.method.projection
        self.projection_head = supcon_projection(self.backbone.feature_dim, int(p.hidden_dim), int(p.output_dim),
                                                 int(p.num_layers), bool(p.batch_norm))

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        m = cfg.method
        if not float(m.temperature) > 0:
            raise ConfigError(f"method.temperature must be > 0, got {m.temperature}")
        if m.base_temperature is not None and not float(m.base_temperature) > 0:
            raise ConfigError(f"method.base_temperature must be > 0 or null (null: Eq. 2 unscaled), got {m.base_temperature}")
        if int(m.projection.num_layers) not in (1, 2):
            raise ConfigError(f"method.projection.num_layers={m.projection.num_layers} is not valid; choose one of "
                              "1 (linear), 2 (MLP with one hidden layer)")
        if not isinstance(m.normalize_representation, bool):
            raise ConfigError(f"method.normalize_representation must be true or false, got {m.normalize_representation}")

    def project(self, images: torch.Tensor) -> torch.Tensor:
        """``z = Proj(r)`` on the unit sphere, ``[B, output_dim]``."""
        r = self.backbone(images)  # [B, D_E]
        if self.cfg.method.normalize_representation:
            r = F.normalize(r, dim=1)
        return F.normalize(self.projection_head(r), dim=1)

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        m = self.cfg.method
        z = torch.stack([self.project(v) for v in views], dim=1)  # [B, V, D_P]
        base = None if m.base_temperature is None else float(m.base_temperature)
        return {"loss": supcon_loss(z, labels, float(m.temperature), base, bool(m.gather_distributed))}
