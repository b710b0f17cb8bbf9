"""SwAV as lightly's benchmark recipe builds it, with our values.

Follows lightly-ai/lightly ``benchmarks/imagenet/resnet50/swav.py`` (``SwaVProjectionHead``,
``SwaVPrototypes`` frozen for the first epochs, l2-normalised projections, ``prototypes.normalize()`` at the
start of every step, ``SwaVLoss`` with the global crops' codes, ``SwaVTransform``, weight decay off for
biases and norms) and ``docs/source/getting_started/benchmarks/cifar10_benchmark.py`` (``SwaVModel``).
From :class:`Settings`: the projection widths (``method.projection``), the number of prototypes, the
temperature, Sinkhorn's epsilon and iterations, the epochs with frozen prototypes
(``method.freeze_prototypes_epochs``) and the multi-crop augmentation (2 global crops of
``image_size`` over ``(augment.min_scale, max_scale)``, ``augment.multicrop.num_local`` local crops of
``multicrop.size`` over ``(multicrop.min_scale, max_scale)``, colour jitter, grayscale, blur).
Where it differs from lightly's files by design:
- no queue: the ImageNet file starts its queue at epoch 15, after the end of the runs this reference is
  for (our SwAV has none either);
- the prototypes are lightly's ``SwaVPrototypes``, a linear layer with a bias (SwAV's are bias-free;
  ours are): kept, because it is lightly's piece;
- each crop passes the backbone alone (as both files do); the prototypes' freeze drops their gradients
  by ``requires_grad`` during a step (lightly's own mechanism) and :meth:`after_optimizer_step` makes
  them trainable again, so ``parameter_groups`` always sees them;
- no online linear classifier; optimizer, lr and schedule come from ``parity.py`` and :class:`Settings`
  (the ImageNet file's LARS 0.6 x batch / 256 and the CIFAR-10 file's Adam 1e-3 are not used).
"""

from __future__ import annotations

from typing import Any, Callable, List

import torch
import torch.nn.functional as F
from lightly.loss import SwaVLoss
from lightly.models.modules import SwaVProjectionHead, SwaVPrototypes
from lightly.transforms import SwaVTransform
from torch import nn

from benchmarks.reproduce.parity.references import register
from benchmarks.reproduce.parity.references._lightly_common import LightlyReference, epoch_of, require, view_kwargs
from benchmarks.reproduce.parity.references.base import Settings

#: Global (high-resolution) crops per image: SwAV's and lightly's ``CROP_COUNTS[0]``.
NUM_GLOBAL = 2


@register("swav")
class SwAVReference(LightlyReference):
    """Backbone -> ``SwaVProjectionHead`` -> l2 norm -> ``SwaVPrototypes`` -> ``SwaVLoss`` over all crops."""

    RECIPE = "lightly-ai/lightly benchmarks/imagenet/resnet50/swav.py"

    def __init__(self, backbone: nn.Module, settings: Settings) -> None:
        super().__init__(backbone, settings)
        m = settings.method
        out = int(m["projection"]["output_dim"])
        self.projection_head = SwaVProjectionHead(settings.feature_dim, int(m["projection"]["hidden_dim"]), out)
        self.prototypes = SwaVPrototypes(out, int(m["num_prototypes"]),
                                         n_steps_frozen_prototypes=int(m["freeze_prototypes_epochs"]))
        self.criterion = SwaVLoss(temperature=float(m["temperature"]), sinkhorn_iterations=int(m["sinkhorn_iterations"]),
                                  sinkhorn_epsilon=float(m["sinkhorn_epsilon"]))

    def transform(self) -> Callable[[Any], List[torch.Tensor]]:
        s = self.settings
        a, mc = s.augment, s.augment["multicrop"]
        require(s, "SwaVTransform", solarize_prob=0.0, per_view=None)
        return SwaVTransform(crop_sizes=(s.image_size, int(mc["size"])), crop_counts=(NUM_GLOBAL, int(mc["num_local"])),
                             crop_min_scales=(float(a["min_scale"]), float(mc["min_scale"])),
                             crop_max_scales=(float(a["max_scale"]), float(mc["max_scale"])),
                             gaussian_blur=float(a["blur_prob"]), **view_kwargs(s))

    def scores(self, images: torch.Tensor, epoch: int) -> torch.Tensor:
        """``[B, 3, H, W]`` -> prototype scores ``[B, num_prototypes]`` of the l2-normalised projections."""
        z = F.normalize(self.projection_head(self.backbone(images).flatten(start_dim=1)), dim=1, p=2)
        return self.prototypes(z, step=epoch)

    def training_loss(self, views: List[torch.Tensor], step: int) -> torch.Tensor:
        self.prototypes.normalize()
        epoch = epoch_of(self.settings, step)
        scores = [self.scores(v, epoch) for v in views]
        return self.criterion(scores[:NUM_GLOBAL], scores[NUM_GLOBAL:]).reshape(())  # lightly returns [1]

    def after_optimizer_step(self, step: int) -> None:
        self.prototypes.requires_grad_(True)
