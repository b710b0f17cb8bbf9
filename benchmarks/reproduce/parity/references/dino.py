"""DINO as lightly's benchmark recipe builds it, with our values.

Follows lightly-ai/lightly ``benchmarks/imagenet/resnet50/dino.py`` (a student and a momentum teacher,
``DINOProjectionHead`` with its last layer frozen for the first epochs, ``DINOLoss`` over the teacher's
global crops and all of the student's crops, ``update_momentum`` with ``cosine_schedule``,
``deactivate_requires_grad`` on the teacher, ``DINOTransform``, weight decay off for biases and norms) and
``docs/source/getting_started/benchmarks/cifar10_benchmark.py`` (``DINOModel``: the teacher temperature's
epoch warm-up through ``DINOLoss(..., epoch=)``).
From :class:`Settings`: the head (``method.head``: hidden, bottleneck and output widths, batch norm), the
student temperature, the teacher temperature and its warm-up (``warmup_teacher_temperature``,
``warmup_teacher_temperature_epochs``), the centre momentum, the teacher momentum and its schedule
(``method.momentum``), the epochs with a frozen last layer and the multi-crop augmentation (2 global crops
of ``image_size`` over ``(augment.min_scale, max_scale)``, ``multicrop.num_local`` local crops; blur and
solarisation per view from ``augment.per_view`` when set).
Where it differs from lightly's files by design:
- the evaluated ``backbone`` is the student, as in the CIFAR-10 file and in ours (the ImageNet file
  evaluates its teacher);
- the teacher momentum is applied after each optimizer step (with the next step's value), not at the
  start of the next step: the same updates, except that the last step's also happens;
- the last layer's freeze drops its gradients by ``requires_grad`` during a step, not by
  ``cancel_last_layer_gradients`` after backward (the loop has no hook there): the optimizer skips it
  the same way; :meth:`after_optimizer_step` makes it trainable again;
- each crop passes the networks alone, as in the CIFAR-10 file (the ImageNet file concatenates the
  global crops, and the local crops, into one batch each);
- the head is lightly's 3-layer ``DINOProjectionHead`` (the CIFAR-10 file swaps in 2 layers): a shared value;
- not here: the ImageNet file's gradient clipping at norm 3 (our run does not clip) and our run's
  weight-decay schedule (``method.weight_decay_start`` -> ``weight_decay_end``; the references cannot
  reach the optimizer, so ``optimizer.weight_decay`` stays constant); no online linear classifier;
  optimizer, lr and schedule come from ``parity.py`` and :class:`Settings`.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, List

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead
from lightly.models.utils import deactivate_requires_grad, update_momentum
from lightly.transforms import DINOTransform
from lightly.utils.scheduler import cosine_schedule
from torch import nn

from contrastive.core.errors import ConfigError
from benchmarks.reproduce.parity.references import register
from benchmarks.reproduce.parity.references._lightly_common import (
    LightlyReference,
    epoch_of,
    per_view,
    set_trainable,
    total_steps,
    view_kwargs,
    view_value,
)
from benchmarks.reproduce.parity.references.base import Settings

#: Global crops per image; the teacher sees only these.
NUM_GLOBAL = 2


def dino_transform(settings: Settings) -> DINOTransform:
    """lightly's ``DINOTransform`` with our values: blur of (global 1, global 2, local) and solarisation of
    the second global crop from ``augment.per_view`` when set, else ``augment.blur_prob`` everywhere."""
    a, mc = settings.augment, settings.augment["multicrop"]
    views = per_view(settings) or [None, None]
    if view_value(settings, views[0], "solarize_prob") > 0 or (views[1] is None and float(a["solarize_prob"]) > 0):
        raise ConfigError("augment.solarize_prob > 0 on the first global crop: lightly's DINOTransform (DINO's parity "
                          "reference) solarises only the second; set it there with augment.per_view")
    blur = tuple(view_value(settings, v, "blur_prob") for v in views) + (float(a["blur_prob"]),)  # global 1, 2, local
    return DINOTransform(global_crop_size=settings.image_size,
                         global_crop_scale=(float(a["min_scale"]), float(a["max_scale"])),
                         local_crop_size=int(mc["size"]),
                         local_crop_scale=(float(mc["min_scale"]), float(mc["max_scale"])),
                         n_local_views=int(mc["num_local"]), gaussian_blur=blur,
                         solarization_prob=view_value(settings, views[1], "solarize_prob"), **view_kwargs(settings))


@register("dino")
class DINOReference(LightlyReference):
    """Student (backbone + head, all crops) against a momentum teacher (global crops), ``DINOLoss``."""

    RECIPE = "lightly-ai/lightly benchmarks/imagenet/resnet50/dino.py"

    def __init__(self, backbone: nn.Module, settings: Settings) -> None:
        super().__init__(backbone, settings)
        m = settings.method
        if str(m["momentum"]["schedule"]) not in ("cosine", "constant"):
            raise ConfigError(f"method.momentum.schedule={m['momentum']['schedule']!r}: DINO's parity reference takes "
                              "cosine or constant")
        self.projection_head = self._head()
        self.teacher_backbone = copy.deepcopy(backbone)
        self.teacher_head = self._head()  # lightly's weight-normed head cannot be deep-copied: built, then loaded
        self.teacher_head.load_state_dict(self.projection_head.state_dict())
        deactivate_requires_grad(self.teacher_backbone)
        deactivate_requires_grad(self.teacher_head)
        self._last_layer = [p for p in self.projection_head.last_layer.parameters() if p.requires_grad]
        self.criterion = DINOLoss(output_dim=int(m["head"]["output_dim"]),
                                  warmup_teacher_temp=float(m["warmup_teacher_temperature"]),
                                  teacher_temp=float(m["teacher_temperature"]),
                                  warmup_teacher_temp_epochs=int(m["warmup_teacher_temperature_epochs"]),
                                  student_temp=float(m["student_temperature"]),
                                  center_momentum=float(m["center_momentum"]))

    def _head(self) -> DINOProjectionHead:
        h = self.settings.method["head"]
        return DINOProjectionHead(self.settings.feature_dim, int(h["hidden_dim"]), int(h["bottleneck_dim"]),
                                  int(h["output_dim"]), batch_norm=bool(h["batch_norm"]))

    def transform(self) -> Callable[[Any], List[torch.Tensor]]:
        return dino_transform(self.settings)

    def student(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> the student head's output ``[B, output_dim]``."""
        return self.projection_head(self.backbone(images).flatten(start_dim=1))

    @torch.no_grad()
    def teacher(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, 3, H, W]`` -> the teacher head's output ``[B, output_dim]``."""
        return self.teacher_head(self.teacher_backbone(images).flatten(start_dim=1))

    def momentum(self, step: int) -> float:
        """The teacher momentum before optimizer step ``step`` (lightly's ``cosine_schedule`` or constant)."""
        m = self.settings.method["momentum"]
        if str(m["schedule"]) == "constant":
            return float(m["base"])
        return float(cosine_schedule(step, total_steps(self.settings), float(m["base"]), float(m["final"])))

    def training_loss(self, views: List[torch.Tensor], step: int) -> torch.Tensor:
        epoch = epoch_of(self.settings, step)
        set_trainable(self._last_layer, epoch >= int(self.settings.method["freeze_last_layer_epochs"]))
        teacher_out = [self.teacher(v) for v in views[:NUM_GLOBAL]]
        student_out = [self.student(v) for v in views]
        return self.criterion(teacher_out, student_out, epoch=epoch)

    def after_optimizer_step(self, step: int) -> None:
        set_trainable(self._last_layer, True)
        m = self.momentum(min(step + 1, total_steps(self.settings)))
        update_momentum(self.backbone, self.teacher_backbone, m=m)
        update_momentum(self.projection_head, self.teacher_head, m=m)
