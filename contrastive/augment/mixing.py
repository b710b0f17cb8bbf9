"""Soft labels and strong augmentation for supervised methods (ImCLR): CutMix, MixUp, AutoAugment.

* Soft targets and their loss: :func:`contrastive.losses.classification.one_hot` and
  :func:`~contrastive.losses.classification.soft_target_cross_entropy`.
* :class:`BatchMix`: torchvision's ``v2.CutMix`` / ``v2.MixUp`` on a batch of float images with
  soft labels (one mixing coefficient and box per call, partner = the previous image in the
  batch, as torchvision does), applied with probability ``prob``.
* :class:`PerImageAutoAugment`: torchvision's ``v2.AutoAugment`` (CIFAR-10 policy) on uint8
  images. Called on a batch, torchvision draws ONE sub-policy and one set of magnitudes for the
  whole batch; this wrapper calls it once per group of ``group_size`` images (default 1: every
  image its own policy, as in a per-sample data loader). That is a Python loop of ``N / group_size``
  small calls per step, each a few kernels: on a GPU about 0.1-0.3 ms per call, so ~30-80 ms for
  256 images - comparable to a ResNet-56 step on 128 image pairs. Larger groups trade policy
  diversity for speed.

Everything runs on the device of its input; randomness comes from torch's global RNGs (the
mixing coefficient and box are drawn on the CPU by torchvision, so no device sync is needed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from contrastive.core.errors import ConfigError

__all__ = ["MIXES", "BatchMix", "PerImageAutoAugment"]

#: Valid values of ``method.mix``.
MIXES = ("none", "cutmix", "mixup")


class BatchMix(nn.Module):
    """CutMix (Yun et al. 2019) or MixUp (Zhang et al. 2018) of a batch, via torchvision.transforms.v2.

    Args:
        name: ``none``, ``cutmix`` or ``mixup``.
        alpha: Beta(alpha, alpha) parameter of the mixing coefficient (> 0).
        prob: Probability that a call mixes at all (CutMix's official CIFAR code uses 0.5).

    ``forward(x, targets)``: float ``[N, 3, H, W]`` images and soft targets ``[N, C]`` ->
    mixed images and targets (rows still sum to 1).
    """

    def __init__(self, name: str = "none", alpha: float = 1.0, prob: float = 1.0) -> None:
        super().__init__()
        if name not in MIXES:
            raise ConfigError(f"mix '{name}' is not valid; choose one of {', '.join(MIXES)}")
        if not alpha > 0:
            raise ConfigError(f"mix alpha must be > 0, got {alpha}")
        if not 0.0 <= prob <= 1.0:
            raise ConfigError(f"mix probability must be in [0, 1], got {prob}")
        self.name, self.alpha, self.prob = name, float(alpha), float(prob)
        self.transform = None
        if name != "none":
            from torchvision.transforms import v2

            self.transform = (v2.CutMix if name == "cutmix" else v2.MixUp)(alpha=self.alpha)

    def forward(self, x: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        if self.transform is None or x.shape[0] < 2:
            return x, targets
        if self.prob < 1.0 and float(torch.rand(())) >= self.prob:  # CPU draw: no device sync
            return x, targets
        return self.transform(x, targets)  # [N, 3, H, W], [N, C]


class PerImageAutoAugment(nn.Module):
    """torchvision ``v2.AutoAugment`` with an independent random sub-policy per group of images.

    Args:
        policy: ``cifar10``, ``imagenet`` or ``svhn`` (torchvision's ``AutoAugmentPolicy``).
        group_size: Images that share one random sub-policy (1 = per image; see the module doc).
    """

    def __init__(self, policy: str = "cifar10", group_size: int = 1) -> None:
        super().__init__()
        from torchvision.transforms import AutoAugmentPolicy, v2

        policies = {p.value: p for p in AutoAugmentPolicy}
        if policy not in policies:
            raise ConfigError(f"autoaugment policy '{policy}' is not valid; choose one of {', '.join(policies)}")
        if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
            raise ConfigError(f"autoaugment group size must be an integer >= 1, got {group_size!r}")
        self.group_size = group_size
        self.transform = v2.AutoAugment(policies[policy])

    def forward(self, images: Tensor) -> Tensor:
        """uint8 ``[N, 3, H, W]`` -> uint8 ``[N, 3, H, W]``."""
        if images.dtype != torch.uint8:
            raise TypeError(f"AutoAugment expects uint8 images, got {images.dtype}")
        return torch.cat([self.transform(group) for group in images.split(self.group_size)])
