"""The contract of a parity reference: one method built from lightly's documented pieces, trained by a plain loop.

A reference follows lightly's own published benchmark recipe for the method
(lightly-ai/lightly docs/source/getting_started/benchmarks/cifar10_benchmark.py and
benchmarks/imagenet/resnet50/<method>.py), or the authors' released code where lightly has no such
method, and takes every value that both sides must share (batch, epochs, optimizer, schedule, head sizes,
temperature, momentum, augmentation strengths) from :class:`Settings`, which ``parity.py`` fills from our
resolved config of the same run. The backbone is the same network on both sides (built by
``parity.py`` from our backbone registry), so any difference in accuracy comes from the method's code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, List, Mapping, Tuple

import torch
from torch import nn


@dataclass(frozen=True)
class Settings:
    """What both sides share, from our resolved config (``OmegaConf.to_container(cfg, resolve=True)``).

    Attributes:
        batch_size: images per optimizer step.
        epochs: training epochs.
        steps_per_epoch: optimizer steps per epoch (``len(loader)`` with ``drop_last=True``).
        image_size: side of the training views in pixels.
        feature_dim: width of the backbone's pooled features ``[B, feature_dim]``.
        mean, std: the dataset's normalisation.
        method: our resolved ``method:`` section (temperature, projection sizes, momentum, ...).
        optimizer: our resolved ``optimizer:`` section (name, lr as the run uses it, weight decay, ...).
        scheduler: our resolved ``scheduler:`` section (name, warmup_epochs, ...).
        augment: our resolved ``augment:`` section (crop scale, colour jitter, blur, solarise, multi-crop).
        scaled_lr: the lr our run actually uses after ``optimizer.lr_scaling`` (logged by ours).
    """

    batch_size: int
    epochs: int
    steps_per_epoch: int
    image_size: int
    feature_dim: int
    mean: Tuple[float, float, float]
    std: Tuple[float, float, float]
    method: Mapping[str, Any]
    optimizer: Mapping[str, Any]
    scheduler: Mapping[str, Any]
    augment: Mapping[str, Any]
    scaled_lr: float


class Reference(nn.Module):
    """One method as lightly's benchmark recipe builds it.

    Subclasses set ``RECIPE`` (the file they follow) and implement :meth:`transform` and
    :meth:`training_loss`; :meth:`after_optimizer_step` is for momentum encoders, queues and the like.
    ``parity.py`` owns the loop: ``loss = ref.training_loss(views, step)``, backward, optimizer step,
    scheduler step, ``ref.after_optimizer_step(step)``; then it evaluates ``ref.backbone`` exactly as it
    evaluates ours.
    """

    RECIPE: str = ""

    def __init__(self, backbone: nn.Module, settings: Settings) -> None:
        super().__init__()
        self.backbone = backbone
        self.settings = settings

    def transform(self) -> Callable[[Any], List[torch.Tensor]]:
        """A PIL image -> the list of normalised view tensors ``[3, H, W]`` (lightly's transform, our values)."""
        raise NotImplementedError

    def training_loss(self, views: List[torch.Tensor], step: int) -> torch.Tensor:
        """The batch's loss (a scalar) from the views ``[B, 3, H, W]`` of :meth:`transform`."""
        raise NotImplementedError

    def after_optimizer_step(self, step: int) -> None:
        """Called after every optimizer step (momentum updates, queue bookkeeping); nothing by default."""

    def parameter_groups(self) -> List[dict]:
        """The optimizer's parameter groups; the default follows ``settings.optimizer.exclude_bias_and_norm``.

        ``parity.py`` builds the optimizer (lightly's LARS, torch's SGD or AdamW) and lightly's
        ``CosineWarmupScheduler`` / step schedule from these groups and ``settings``; override only where the
        recipe needs other groups (e.g. a predictor with its own lr).
        """
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (no_decay if p.ndim <= 1 else decay).append(p)
        if not self.settings.optimizer.get("exclude_bias_and_norm", False):
            return [{"params": decay + no_decay}]
        return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0, "lars_exclude": True}]
