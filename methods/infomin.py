"""InfoMin Aug.: "What Makes for Good Views for Contrastive Learning?" (Tian, Sun, Poole, Krishnan, Schmid,
Isola, NeurIPS 2020, https://arxiv.org/abs/2005.10243), as its authors released it (HobbitLong/PyContrast).

MoCo v2 (the momentum key encoder, the queue of keys, the 2-layer MLP head; :class:`methods.mocov2.MoCoV2`)
with InfoMin's stronger augmentation (``augment=infomin``, :mod:`contrastive.augment.infomin`: RandAugment
and colour jitter at strength 1) and, as the released ``InfoMin`` setting has it
(``pycontrast/options/base_options.py``: ``'InfoMin': ['RGB', True, 'moco', 'D', 'mlp', 0.15]``, the
``True`` being ``--jigsaw``), PIRL's jigsaw branch: the image's 3 x 3 jigsaw patches go through the same
encoder one by one, a jigsaw head (the MLP per patch, the patch embeddings shuffled, concatenated and
mapped to 128-d, ``pycontrast/networks/util.py`` ``JigsawHead``) gives a second query, contrasted with
the same key and queue. The loss (``pycontrast/learning/contrast_trainer.py``) is
``(1 - beta) * InfoNCE(q, k) + beta * InfoNCE(q_jig, k)``, ``beta`` = 0.5 (``--beta``); ``beta = 0``
(``method.jigsaw.weight=0``) is MoCo v2 with InfoMin's augmentation alone.

The jigsaw input follows the code's ``jigsaw_transform``: a random-resized crop of scale (0.6, 1) to 255 px
(at 224-px training), a flip, then in each cell of a 3 x 3 grid (85 px) a 64-px patch at a random
offset; the patches get no colour augmentation. At other image sizes the three sizes scale with it.
On streamed batches (``dataset.storage=stream``) the patches are cut from the workers' first crop
(the full image is not on the device): their crop scale is then the views' (0.2, 1), not (0.6, 1).
"""

from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn.functional as F
from torch import nn

from contrastive.augment.ops import resized_crop, sample_crop_params, to_float, uniform
from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo
from contrastive.losses.self_supervised import info_nce_with_queue
from .mocov2 import MoCoV2

GRID = 3  # the code's JigsawCrop(n_grid=3)


def jigsaw_sizes(image_size: int) -> tuple[int, int, int]:
    """(crop side, grid cell, patch side) in pixels: the code's (255, 85, 64) at 224 px, scaled to ``image_size``."""
    side = int(round(image_size * 255 / 224))
    cell = side // GRID
    return side, cell, max(1, min(cell, int(round(side * 64 / 255))))


def jigsaw_patches(images: torch.Tensor, image_size: int, min_scale: float) -> torch.Tensor:
    """uint8 ``[B, 3, H, W]`` -> float ``[B, 9, 3, p, p]`` in [0, 1]: a random-resized crop (scale
    (``min_scale``, 1)) and flip to the jigsaw side, then one patch at a random offset in every grid cell."""
    x = to_float(images)
    b, _, h, w = x.shape
    side, cell, patch = jigsaw_sizes(image_size)
    u = uniform((b, 1 + 2 * GRID * GRID), x.device)  # [B, 1 + 18]
    big = resized_crop(x, sample_crop_params(b, h, w, (min_scale, 1.0), device=x.device), u[:, 0] < 0.5, side)
    big = big.clamp_(0.0, 1.0).permute(0, 2, 3, 1)  # [B, side, side, 3]
    starts = torch.arange(GRID, device=x.device) * cell  # [G]
    top = starts.repeat_interleave(GRID).view(1, -1) + torch.floor(u[:, 1:1 + GRID * GRID] * (cell - patch + 1)).long()
    left = starts.repeat(GRID).view(1, -1) + torch.floor(u[:, 1 + GRID * GRID:] * (cell - patch + 1)).long()  # [B, 9]
    span = torch.arange(patch, device=x.device)
    rows = (top.unsqueeze(-1) + span).unsqueeze(-1)  # [B, 9, p, 1]
    cols = (left.unsqueeze(-1) + span).unsqueeze(-2)  # [B, 9, 1, p]
    batch_ids = torch.arange(b, device=x.device).view(b, 1, 1, 1)
    return big[batch_ids, rows, cols].permute(0, 1, 4, 2, 3)  # [B, 9, 3, p, p]


class JigsawHead(nn.Module):
    """PIRL's jigsaw head as InfoMin's code builds it: the projection MLP per patch, the 9 patch embeddings
    of an image in random order, concatenated, a linear map to ``output_dim``, l2-normalised.

    Args:
        feature_dim, hidden_dim, output_dim: The backbone's feature size and the MLP's sizes.
    """

    def __init__(self, feature_dim: int, hidden_dim: int, output_dim: int) -> None:
        super().__init__()
        self.per_patch = nn.Sequential(nn.Linear(feature_dim, hidden_dim), nn.ReLU(inplace=True),
                                       nn.Linear(hidden_dim, output_dim))
        self.combine = nn.Linear(GRID * GRID * output_dim, output_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Patch features ``[B * 9, F]`` (image-major) -> l2-normalised jigsaw queries ``[B, d]``."""
        z = self.per_patch(features)  # [B * 9, d]
        b = z.shape[0] // (GRID * GRID)
        z = z.view(b, GRID * GRID, -1)
        order = torch.rand(b, GRID * GRID, device=z.device).argsort(dim=1)  # a random permutation per image
        z = z.gather(1, order.unsqueeze(-1).expand_as(z))  # [B, 9, d]
        return F.normalize(self.combine(z.reshape(b, -1)), dim=1)


@METHODS.register("infomin")
class InfoMin(MoCoV2):
    """MoCo v2 + InfoMin's augmentation + the jigsaw query (``method.jigsaw.weight`` = beta)."""

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        p, j = cfg.method.projection, cfg.method.jigsaw
        self.jigsaw_weight = float(j.weight)
        self.jigsaw_head = (JigsawHead(self.backbone.feature_dim, int(p.hidden_dim), int(p.output_dim))
                            if self.jigsaw_weight > 0 else None)

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        super().validate_config(cfg, data)
        j = cfg.method.jigsaw
        if not 0.0 <= float(j.weight) < 1.0:
            raise ConfigError(f"method.jigsaw.weight must be in [0, 1) (beta of (1 - beta) * instance + beta * jigsaw; "
                              f"0 turns the jigsaw branch off), got {j.weight}")
        if not 0.0 < float(j.min_scale) <= 1.0:
            raise ConfigError(f"method.jigsaw.min_scale must be in (0, 1], got {j.min_scale}")
        if int(cfg.method.projection.num_layers) != 2:
            raise ConfigError(f"method.projection.num_layers must be 2 for infomin (its 2-layer MLP head), "
                              f"got {cfg.method.projection.num_layers}")

    def training_views(self, batch):
        views, labels = super().training_views(batch)
        if self.jigsaw_head is None:
            return views, labels
        source = batch.images[:, 0] if batch.precropped else batch.images  # uint8 [B, 3, H, W]
        patches = jigsaw_patches(source, self.data.image_size, float(self.cfg.method.jigsaw.min_scale))
        normalised = self.view_augment(0).normalise(patches.flatten(0, 1))  # [B * 9, 3, p, p]
        return views + [self._to_memory_format(normalised)], labels

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        k = self.keys(views[1])  # [B, d] keys of the second view
        negatives = self.queue.keys.to(k.device)  # [K, d]
        t = float(self.cfg.method.temperature)
        instance = info_nce_with_queue(self.query(views[0]), k, negatives, t)
        self._pending_keys = k  # enqueued after backward (MoCoV2.on_train_batch_end)
        if self.jigsaw_head is None:
            return {"loss": instance}
        jigsaw = info_nce_with_queue(self.jigsaw_head(self.backbone(views[2])), k, negatives, t)
        beta = self.jigsaw_weight
        return {"loss": (1.0 - beta) * instance + beta * jigsaw, "instance": instance.detach(), "jigsaw": jigsaw.detach()}
