"""InfoMin's augmentation ("InfoMin Aug.", Tian et al. 2020), batched on the device.

The authors' released recipe (HobbitLong/PyContrast ``pycontrast/datasets/util.py``,
``build_transforms`` aug ``'D'``, "used in InfoMin"), in its order:

1. ``RandomResizedCrop(224, scale=(crop, 1.))`` (crop 0.2 with the MoCo queue), horizontal flip;
2. ``ColorJitter(0.8, 0.8, 0.8, 0.2)`` with probability 0.8;
3. Gaussian blur (sigma in (0.1, 2.0), a 23-pixel kernel at 224 px) with probability 0.5;
4. RandAugment ``rand-n2-m10-mstd0.5`` (:mod:`contrastive.augment.randaugment`);
5. ``RandomGrayscale(p=0.2)``; normalisation.

:class:`InfoMinAugment` is :class:`~contrastive.augment.pipelines.SimCLRAugment` (crop, flip, jitter,
blur, normalisation and their draws) with RandAugment inserted after the blur and the grayscale moved
after it; the streamed path (``dataset.storage=stream``) runs the same :meth:`photometric` on the
workers' crops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from contrastive.augment.ops import color_jitter, gaussian_blur, solarize, uniform
from contrastive.augment.pipelines import SimCLRAugment, SimCLRParams, _check
from contrastive.augment.randaugment import apply_op, grayscale_where, sample_layers
from contrastive.core.errors import ConfigError


@dataclass
class InfoMinParams(SimCLRParams):
    """:class:`SimCLRParams` plus the RandAugment draws (L = ``ra_num_ops``)."""

    ra_op: Tensor = None  # [B, L] op id, -1 where the layer does nothing
    ra_magnitude: Tensor = None  # [B, L] in [0, 10]
    ra_sign: Tensor = None  # [B, L] +-1


class InfoMinAugment(SimCLRAugment):
    """InfoMin Aug.: SimCLR's transform + RandAugment after the blur, grayscale last.

    Args:
        ra_num_ops: RandAugment layers per image (the code's ``n2``), >= 0.
        ra_magnitude: Mean magnitude in [0, 10] (``m10``).
        ra_magnitude_std: Std of the per-image magnitude (``mstd0.5``), >= 0.
        ra_prob: Probability that a drawn op runs (the code's ``AutoAugmentOp`` prob 0.5).
        Other arguments: as :class:`SimCLRAugment`.
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], ra_num_ops: int = 2,
                 ra_magnitude: float = 10.0, ra_magnitude_std: float = 0.5, ra_prob: float = 0.5, **simclr) -> None:
        super().__init__(image_size, mean, std, **simclr)
        if isinstance(ra_num_ops, bool) or not isinstance(ra_num_ops, int) or ra_num_ops < 0:
            raise ConfigError(f"augment.ra_num_ops must be an integer >= 0, got {ra_num_ops!r}")
        _check("augment.ra_magnitude", float(ra_magnitude), 0.0, 10.0)
        _check("augment.ra_magnitude_std", float(ra_magnitude_std), 0.0, float("inf"))
        _check("augment.ra_prob", float(ra_prob), 0.0, 1.0)
        self.ra_num_ops, self.ra_magnitude = ra_num_ops, float(ra_magnitude)
        self.ra_magnitude_std, self.ra_prob = float(ra_magnitude_std), float(ra_prob)

    def sample_params(self, batch: int, height: int, width: int, device=None,
                      generator: torch.Generator | None = None) -> InfoMinParams:
        base = super().sample_params(batch, height, width, device, generator)
        layers = max(self.ra_num_ops, 1)
        u = uniform((batch, layers, 5), device, generator)  # [B, L, 5]
        normal = torch.sqrt(-2.0 * torch.log(1.0 - u[..., 3])) * torch.cos(2.0 * torch.pi * u[..., 4])  # Box-Muller N(0, 1)
        op, mag, sign = sample_layers(batch, layers, self.ra_prob, self.ra_magnitude, self.ra_magnitude_std,
                                      u[..., :3], normal)
        return InfoMinParams(**vars(base), ra_op=op[:, :self.ra_num_ops], ra_magnitude=mag[:, :self.ra_num_ops],
                             ra_sign=sign[:, :self.ra_num_ops])

    def photometric(self, x: Tensor, params: InfoMinParams) -> Tensor:
        """Jitter, blur, RandAugment, grayscale (InfoMin's order), normalise: float ``[B, 3, S, S]``."""
        if self.cj_prob > 0:
            x = color_jitter(x, params.factors, params.order, hue=self.cj_high[3] > 0)
        if self.blur_prob > 0:
            x = gaussian_blur(x, params.sigma, self.kernel_size)
        for layer in range(self.ra_num_ops):
            x = apply_op(x, params.ra_op[:, layer], params.ra_magnitude[:, layer], params.ra_sign[:, layer],
                         self.mean.to(x.device).view(-1), self.ra_prob)
        if self.gray_prob > 0:
            x = grayscale_where(x, params.gray)
        if self.solarize_prob > 0:
            x = solarize(x, params.solarize)
        return self.normalise(x.clamp(0.0, 1.0))
