"""Additive Gaussian input noise, after another augmentation (ImCLR Sec. 3.3's Π-model setting).

ImCLR Sec. 3.3: "Horizontal flips, random crops, and gaussian noise are used as data
augmentation." The standard deviation is not stated in the paper: our choice is 0.15, the value
of the benchmark ImCLR's Π-model setting follows (Oliver et al. 2018's released code,
github.com/brain-research/realistic-ssl-evaluation, lib/networks.py ``jitter``: noise of std 0.15
added to the normalised input), set in ``configs/augment/supervised_noise.yaml``.

:func:`with_gaussian_noise` turns an augmentation class (``SupervisedAugment``) into one that
takes an extra ``noise_std`` and adds ``N(0, noise_std^2)`` to every pixel of its *normalised*
output, independently per sample, channel and pixel. The result wraps the base augmentation
(it is not an instance of it), so the streamed path (``dataset.storage=stream``), which replays
only the built-in augmentations' geometry, refuses it with its usual one-line error instead of
silently dropping the noise.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch
from torch import Tensor

from contrastive.core.errors import ConfigError


def add_gaussian_noise(x: Tensor, std: float, generator: torch.Generator | None = None) -> Tensor:
    """``x + N(0, std^2)`` elementwise (``std == 0``: ``x`` unchanged).

    Args:
        x: Float images ``[B, C, H, W]`` (any shape works).
        std: Standard deviation of the noise, >= 0.
        generator: Optional RNG on ``x``'s device (else torch's global RNG).
    """
    if std == 0:
        return x
    noise = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)  # same shape as x
    return x + std * noise


def check_noise_std(std: Any) -> float:
    """``std`` as a float, or ConfigError unless it is a finite number >= 0."""
    if isinstance(std, bool) or not isinstance(std, (int, float)) or not math.isfinite(std) or std < 0:
        raise ConfigError(f"augment.noise_std must be a finite number >= 0, got {std!r}")
    return float(std)


class _Noisy(torch.nn.Module):
    """``base`` then additive Gaussian noise of std ``noise_std`` on the normalised output."""

    base_class: type = torch.nn.Module

    def __init__(self, image_size: int, mean, std, noise_std: float = 0.15, **kwargs: Any) -> None:
        super().__init__()
        self.noise_std = check_noise_std(noise_std)
        self.base = self.base_class(image_size, mean, std, **kwargs)
        self.image_size = self.base.image_size

    def normalise(self, x: Tensor) -> Tensor:
        """The base augmentation's normalisation (no noise)."""
        return self.base.normalise(x)

    def forward(self, images: Tensor, generator: torch.Generator | None = None, normalise: bool = True) -> Tensor:
        """uint8 ``[B, 3, H, W]`` -> float32 ``[B, 3, S, S]``: the base augmentation, then noise.

        With ``normalise=False`` the base's [0, 1] output is returned without noise (the caller
        normalises later, e.g. after AutoAugment; the noise then belongs after that step).
        """
        if not normalise:
            return self.base(images, generator, normalise=False)
        return add_gaussian_noise(self.base(images, generator), self.noise_std, generator)


def with_gaussian_noise(base_class: type) -> type:
    """A class built like ``base_class(image_size, mean, std, **kwargs)`` plus ``noise_std``.

    Its signature is the base's plus ``noise_std`` (so ``build_augment``'s keyword check names
    an unknown key in one line).
    """
    base_sig = inspect.signature(base_class)
    params = list(base_sig.parameters.values()) + [
        inspect.Parameter("noise_std", inspect.Parameter.KEYWORD_ONLY, default=0.15, annotation=float)]
    cls = type(f"{base_class.__name__}WithNoise", (_Noisy,), {"base_class": base_class})
    cls.__signature__ = base_sig.replace(parameters=params)
    return cls
