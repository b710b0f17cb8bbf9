"""SimCLR as lightly's benchmark recipe builds it: lightly's SimCLRTransform, SimCLRProjectionHead, NTXentLoss.

Follows lightly-ai/lightly ``benchmarks/imagenet/resnet50/simclr.py`` (and the SimCLR model of
``docs/source/getting_started/benchmarks/cifar10_benchmark.py``): both views through backbone and head
in one batch, NT-Xent between the two halves, LARS without decay and LARS adaptation for biases and
norms, cosine schedule with linear warm-up stepped per batch. Differs from that file by design:

* every value comes from our resolved config (:class:`Settings`) instead of the file's ImageNet
  constants: temperature (ours 0.2 on this budget; the file 0.1), lr (our base x our scaling rule;
  the file 0.075 x sqrt(batch)), weight decay, warm-up length (ours in epochs; the file 10 epochs),
  head sizes, and the transform's strengths (crop scale, jitter, grayscale, blur probability and sigmas),
  at the dataset's image size and normalisation;
* no online linear classifier during training (both sides are evaluated after training instead);
* the backbone is our registry's (the same instance type and initial weights as ours), not a ResNet-50.
"""

from __future__ import annotations

from typing import List

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from torch import nn

from benchmarks.reproduce.parity.references import register
from benchmarks.reproduce.parity.references.base import Reference, Settings


def simclr_transform(s: Settings) -> SimCLRTransform:
    """Lightly's two-view SimCLR transform at our ``augment`` strengths (blur probability, sigmas, jitter)."""
    a = s.augment
    if float(a["max_scale"]) != 1.0:
        raise ValueError(f"lightly's SimCLRTransform crops up to scale 1.0; augment.max_scale={a['max_scale']}")
    return SimCLRTransform(
        input_size=s.image_size, cj_prob=float(a["cj_prob"]), cj_strength=float(a["cj_strength"]),
        cj_bright=float(a["cj_brightness"]), cj_contrast=float(a["cj_contrast"]), cj_sat=float(a["cj_saturation"]),
        cj_hue=float(a["cj_hue"]), min_scale=float(a["min_scale"]), random_gray_scale=float(a["gray_prob"]),
        gaussian_blur=float(a["blur_prob"]), sigmas=tuple(float(v) for v in a["blur_sigma"]),
        hf_prob=float(a["hflip_prob"]), normalize={"mean": list(s.mean), "std": list(s.std)})


def simclr_head(s: Settings) -> nn.Module:
    """Lightly's SimCLR head at our sizes (``num_layers`` 0 = none, 1 = linear, as our ablation switch)."""
    p = s.method["projection"]
    layers = int(p["num_layers"])
    if layers == 0:
        return nn.Identity()
    if layers == 1:
        return nn.Linear(s.feature_dim, int(p["output_dim"]))
    return SimCLRProjectionHead(s.feature_dim, int(p["hidden_dim"]), int(p["output_dim"]), layers)


@register("simclr")
class SimCLRReference(Reference):
    RECIPE = "lightly-ai/lightly benchmarks/imagenet/resnet50/simclr.py"

    def __init__(self, backbone: nn.Module, settings: Settings) -> None:
        super().__init__(backbone, settings)
        self.projection_head = simclr_head(settings)
        self.criterion = NTXentLoss(temperature=float(settings.method["temperature"]))

    def transform(self):
        return simclr_transform(self.settings)

    def training_loss(self, views: List[torch.Tensor], step: int) -> torch.Tensor:
        z = self.projection_head(self.backbone(torch.cat(views)).flatten(start_dim=1))  # [2B, d]
        z0, z1 = z.chunk(len(views))
        return self.criterion(z0, z1)
