"""BYOL as lightly's benchmark recipe builds it: lightly's BYOL heads, BYOLTransform, NegativeCosineSimilarity.

Follows lightly-ai/lightly ``benchmarks/imagenet/resnet50/byol.py``: the teacher (momentum copy of backbone
and projection head) is updated at the start of every step with ``m = cosine_schedule(step, total, base, 1)``,
each view's student prediction regresses the other view's teacher projection, loss
``2 * NegCos(t0, p1) + 2 * NegCos(t1, p0)`` (the paper's normalised MSE ``2 - 2 cos`` up to the constant 4),
LARS without decay and LARS adaptation for biases and norms, cosine schedule with warm-up per step;
BYOL's asymmetric views (``BYOLView1Transform`` / ``BYOLView2Transform``). Differs by design:

* every value comes from our resolved config (:class:`Settings`): head sizes (4096 / 256 in both), the
  projector's output BatchNorm without affine parameters (our default run's ``output_batch_norm=true``; the
  paper's projector has none), momentum base (0.996 in both), lr (our base x batch/256; the file 0.45),
  weight decay, warm-up, and both views' strengths (our ``augment`` and ``augment.per_view``: blur and
  solarisation probabilities per view, jitter, grayscale, crop scale);
* the teacher head starts as a copy of the student's (as the authors' BYOL does; the file builds a fresh one);
* no online linear classifier; our registry's backbone instead of a ResNet-50.
"""

from __future__ import annotations

import copy
from typing import List

import torch
from lightly.loss import NegativeCosineSimilarity
from lightly.models.modules import BYOLPredictionHead, BYOLProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import BYOLTransform, BYOLView1Transform, BYOLView2Transform
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from benchmarks.reproduce.parity.references import register
from benchmarks.reproduce.parity.references.base import Reference, Settings


def byol_view(cls, s: Settings, view: int):
    """Lightly's BYOL view transform ``cls`` at our ``augment`` values (``per_view[view]`` on top)."""
    a = dict(s.augment)
    a.update((a.get("per_view") or [{}, {}])[view])
    return cls(input_size=s.image_size, cj_prob=float(a["cj_prob"]), cj_strength=float(a["cj_strength"]),
               cj_bright=float(a["cj_brightness"]), cj_contrast=float(a["cj_contrast"]), cj_sat=float(a["cj_saturation"]),
               cj_hue=float(a["cj_hue"]), min_scale=float(a["min_scale"]), random_gray_scale=float(a["gray_prob"]),
               gaussian_blur=float(a["blur_prob"]), solarization_prob=float(a["solarize_prob"]),
               sigmas=tuple(float(v) for v in a["blur_sigma"]), hf_prob=float(a["hflip_prob"]),
               normalize={"mean": list(s.mean), "std": list(s.std)})


@register("byol")
class BYOLReference(Reference):
    RECIPE = "lightly-ai/lightly benchmarks/imagenet/resnet50/byol.py"

    def __init__(self, backbone: nn.Module, settings: Settings) -> None:
        super().__init__(backbone, settings)
        m = settings.method
        out = int(m["projection"]["output_dim"])
        head = BYOLProjectionHead(settings.feature_dim, int(m["projection"]["hidden_dim"]), out)
        self.projection_head = nn.Sequential(head, nn.BatchNorm1d(out, affine=False)) \
            if m["projection"].get("output_batch_norm") else head
        self.prediction_head = BYOLPredictionHead(out, int(m["predictor"]["hidden_dim"]), out)
        self.teacher_backbone = copy.deepcopy(self.backbone)
        self.teacher_projection_head = copy.deepcopy(self.projection_head)
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_projection_head)
        self.criterion = NegativeCosineSimilarity()
        if m["momentum"]["schedule"] != "cosine":
            raise ValueError("the BYOL reference follows lightly's cosine momentum (method.momentum.schedule=cosine)")
        self.momentum = (float(m["momentum"]["base"]), float(m["momentum"]["final"]))

    def transform(self):
        s = self.settings
        return BYOLTransform(view_1_transform=byol_view(BYOLView1Transform, s, 0),
                             view_2_transform=byol_view(BYOLView2Transform, s, 1))

    @torch.no_grad()
    def teacher(self, x: torch.Tensor) -> torch.Tensor:
        return self.teacher_projection_head(self.teacher_backbone(x).flatten(start_dim=1))

    def student(self, x: torch.Tensor) -> torch.Tensor:
        return self.prediction_head(self.projection_head(self.backbone(x).flatten(start_dim=1)))

    def training_loss(self, views: List[torch.Tensor], step: int) -> torch.Tensor:
        total = self.settings.epochs * self.settings.steps_per_epoch
        m = cosine_schedule(step, total, *self.momentum)
        update_momentum(self.backbone, self.teacher_backbone, m=m)
        update_momentum(self.projection_head, self.teacher_projection_head, m=m)
        t0, t1 = self.teacher(views[0]), self.teacher(views[1])
        p0, p1 = self.student(views[0]), self.student(views[1])
        return 2 * self.criterion(t0, p1) + 2 * self.criterion(t1, p0)
