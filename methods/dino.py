"""DINO: Emerging Properties in Self-Supervised Vision Transformers (Caron, Touvron, Misra,
Jegou, Mairal, Bojanowski, Joulin, ICCV 2021, https://arxiv.org/abs/2104.14294).

Self-distillation without labels: the student (all crops) matches the softmax of a momentum
teacher (global crops only), centred and sharpened (Eq. 1 and Sec. 3.1), lightly's ``DINOLoss``.
The schedules of its Sec. 3 and Appendix are here as pure functions of the epoch/step
(:mod:`contrastive.engine.schedules`): the teacher temperature's "linear warm-up from 0.04 to
0.07", the weight decay's "cosine schedule from 0.04 to 0.4", the teacher momentum's cosine from
0.996 to 1 (:class:`~contrastive.engine.momentum.MomentumMethod`), and the last layer frozen
during the first epoch. Those are its ViT recipe (AdamW); for ResNet-50 the authors' command
(README, "ResNet-50 and other convnets trainings") trains with SGD lr 0.03, a constant weight
decay of 1e-4 (start = end), global crops (0.14, 1), local crops (0.05, 0.14) and no BN in the
head: experiment=dino_imagenet.
"""

from __future__ import annotations

import copy
from typing import Dict, List

import torch
from lightly.loss import DINOLoss
from lightly.models.modules import DINOProjectionHead

from contrastive.core.errors import ConfigError
from contrastive.core.registry import METHODS
from contrastive.engine.method import DataInfo
from contrastive.engine.momentum import MomentumMethod
from contrastive.engine.schedules import cosine_ramp, linear_warmup
from contrastive.losses.precision import float32


@METHODS.register("dino")
class DINO(MomentumMethod):
    """DINO with lightly's head and loss, multi-crop and its schedules."""

    MULTICROP = True

    def __init__(self, cfg, data: DataInfo) -> None:
        super().__init__(cfg, data)
        m = cfg.method
        h = m.head
        def head() -> DINOProjectionHead:
            return DINOProjectionHead(self.backbone.feature_dim, int(h.hidden_dim), int(h.bottleneck_dim), int(h.output_dim),
                                      batch_norm=bool(h.batch_norm), freeze_last_layer=int(m.freeze_last_layer_epochs))

        self.projection_head = head()
        # lightly's head uses weight_norm, which deepcopy refuses: the teacher's head is built anew
        self.init_momentum(self.backbone, self.projection_head,
                           fresh=[copy.deepcopy(self.backbone), head()])
        self.criterion = DINOLoss(output_dim=int(h.output_dim), student_temp=float(m.student_temperature),
                                  center_momentum=float(m.center_momentum))

    @classmethod
    def validate_config(cls, cfg, data: DataInfo) -> None:
        super().validate_config(cfg, data)
        m = cfg.method
        for key in ("student_temperature", "teacher_temperature", "warmup_teacher_temperature"):
            if not float(m[key]) > 0:
                raise ConfigError(f"method.{key} must be > 0, got {m[key]}")
        if not 0.0 <= float(m.center_momentum) <= 1.0:
            raise ConfigError(f"method.center_momentum={m.center_momentum} is outside [0, 1]")
        if min(float(m.weight_decay_start), float(m.weight_decay_end)) < 0:
            raise ConfigError(f"method.weight_decay_start/end must be >= 0, got {m.weight_decay_start}, {m.weight_decay_end}")

    def teacher_temperature(self) -> float:
        m = self.cfg.method
        return linear_warmup(self.current_epoch, int(m.warmup_teacher_temperature_epochs),
                             float(m.warmup_teacher_temperature), float(m.teacher_temperature))

    def training_losses(self, views: List[torch.Tensor], labels, indices) -> Dict[str, torch.Tensor]:
        with torch.no_grad():
            teacher = [self.momentum[1](self.momentum[0](v)).float() for v in views[:2]]  # 2 x [B, K]
        student = [self.projection_head(self.backbone(v)).float() for v in views]  # (2 + N) x [B, K]
        loss = float32(self.criterion)(teacher, student, teacher_temp=self.teacher_temperature())  # its einsum in float32
        return {"loss": loss}

    def on_after_backward(self) -> None:
        self.projection_head.cancel_last_layer_gradients(self.current_epoch)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        """DINO's weight decay for this step, on the parameter groups that decay at all."""
        m, trainer = self.cfg.method, self._trainer
        total = int(trainer.estimated_stepping_batches) if trainer is not None else 1
        wd = cosine_ramp(self.global_step, total, float(m.weight_decay_start), float(m.weight_decay_end))
        for optimizer in self.trainer.optimizers:
            for group in optimizer.param_groups:
                if group["weight_decay"] > 0:
                    group["weight_decay"] = wd
