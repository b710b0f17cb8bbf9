"""Batched augmentation on the training device, with independent random parameters per sample.

uint8 batches ``[B, 3, H, W]`` become normalised float32 images in a handful of vectorised
kernels (no loop over samples, no host sync). Randomness comes from torch's global RNG on the
input's device (so ``seed_everything`` makes runs reproducible) unless a ``generator`` is given.
Formulas follow torchvision's tensor backend and ``RandomResizedCrop.get_params``; the
per-sample kernels live in :mod:`contrastive.augment.ops`, this module composes them into
the SimCLR, supervised and evaluation transforms.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive.augment.ops import (  # noqa: F401  (the public per-sample ops, re-exported in __all__)
    SHIFT_FILLS,
    adjust_brightness,
    adjust_contrast,
    adjust_hue,
    adjust_saturation,
    color_jitter,
    gaussian_blur,
    resized_crop,
    rgb_to_grayscale,
    sample_crop_params,
    shift_boxes,
    solarize,
    to_float,
    uniform,
)
from contrastive.augment.noise import with_gaussian_noise
from contrastive.core.errors import ConfigError

__all__ = [
    "build_augment", "AUGMENTATIONS", "SimCLRAugment", "SimCLRParams", "SupervisedAugment", "EvalTransform", "sample_crop_params",
    "resized_crop", "rgb_to_grayscale", "adjust_brightness", "adjust_contrast", "adjust_saturation",
    "adjust_hue", "color_jitter", "gaussian_blur", "solarize",
]


def _resize_center_crop(x: Tensor, size: int) -> Tensor:
    """torchvision ``Resize(size)`` (bilinear, antialias) + ``CenterCrop(size)`` on ``[B, C, H, W]``."""
    height, width = x.shape[-2:]
    if (height, width) == (size, size):
        return x
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    nh, nw = (size, new_long) if height <= width else (new_long, size)
    if (nh, nw) != (height, width):
        x = F.interpolate(x, size=(nh, nw), mode="bilinear", align_corners=False, antialias=True)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return x[:, :, top:top + size, left:left + size].clamp(0.0, 1.0)  # [B, C, size, size]


def _check(name: str, value: float, lo: float, hi: float, lo_open: bool = False) -> None:
    """Raises ConfigError unless ``lo <(=) value <= hi``."""
    if not (lo < value if lo_open else lo <= value) or not value <= hi:
        raise ConfigError(f"{name} must be in {'(' if lo_open else '['}{lo}, {hi}], got {value}")


class _Normalised(torch.nn.Module):
    """Holds ``image_size`` and mean/std buffers ``[1, 3, 1, 1]`` after validating them."""

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if not isinstance(image_size, int) or image_size < 8:
            raise ConfigError(f"image_size must be an integer >= 8, got {image_size!r}")
        if len(mean) != 3 or len(std) != 3:
            raise ConfigError(f"mean and std must have 3 values (RGB), got {list(mean)} and {list(std)}")
        if min(std) <= 0:
            raise ConfigError(f"std values must be > 0, got {list(std)}")
        self.image_size = image_size
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def normalise(self, x: Tensor) -> Tensor:
        """``(x - mean) / std`` per channel."""
        return (x - self.mean.to(x.device)) / self.std.to(x.device)  # [B, 3, S, S]


class EvalTransform(_Normalised):
    """Deterministic: resize the shorter side (bilinear, antialias) + center crop, then normalise.

    Args:
        image_size: Output height and width (>= 8).
        mean, std: Per-channel mean and standard deviation (> 0) of [0, 1] images.
    """

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """uint8 ``[B, 3, H, W]`` -> float32 ``[B, 3, S, S]``; ``generator`` is ignored."""
        return self.normalise(_resize_center_crop(to_float(images), self.image_size))


@dataclass
class SimCLRParams:
    """Per-sample random parameters of :class:`SimCLRAugment` (B = batch size)."""

    crop: Tensor  # [B, 4] (top, left, h, w) in input pixels
    flip: Tensor  # [B] bool
    jitter: Tensor  # [B] bool, colour jitter applied
    factors: Tensor  # [B, 4] brightness, contrast, saturation, hue shift; identity where not jittered
    order: Tensor  # [B, 4] colour op ids in application order
    gray: Tensor  # [B] bool
    sigma: Tensor  # [B] blur sigma, 0 = no blur
    solarize: Tensor  # [B] bool


class SimCLRAugment(_Normalised):
    """SimCLR augmentation (Chen et al. 2020, Appendix A), batched.

    Random resized crop + horizontal flip, colour jitter (random op order) with probability
    ``cj_prob``, grayscale, Gaussian blur, solarisation, normalisation.

    Args:
        image_size: Output height and width (>= 8).
        mean, std: Per-channel mean and standard deviation (> 0) of [0, 1] images.
        min_scale, max_scale: Range of the crop area fraction, 0 < min_scale <= max_scale <= 1.
        hflip_prob, cj_prob, gray_prob, blur_prob, solarize_prob: Per-sample probabilities.
        cj_strength: Jitter strength s; the ColorJitter arguments are ``cj_* * s``.
        cj_brightness, cj_contrast, cj_saturation, cj_hue: Jitter ranges at s = 1
            (``cj_hue * cj_strength`` <= 0.5).
        blur_sigma: Range of the blur sigma in pixels; the kernel is ~10% of image_size, odd.
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float],
                 min_scale: float = 0.08, max_scale: float = 1.0, hflip_prob: float = 0.5,
                 cj_prob: float = 0.8, cj_strength: float = 0.5, cj_brightness: float = 0.8,
                 cj_contrast: float = 0.8, cj_saturation: float = 0.8, cj_hue: float = 0.2,
                 gray_prob: float = 0.2, blur_prob: float = 0.0, blur_sigma: tuple[float, float] = (0.1, 2.0),
                 solarize_prob: float = 0.0) -> None:
        super().__init__(image_size, mean, std)
        _check("max_scale", max_scale, 0.0, 1.0, lo_open=True)
        _check("min_scale", min_scale, 0.0, max_scale, lo_open=True)
        for name, p in (("hflip_prob", hflip_prob), ("cj_prob", cj_prob), ("gray_prob", gray_prob),
                        ("blur_prob", blur_prob), ("solarize_prob", solarize_prob)):
            _check(name, p, 0.0, 1.0)
        for name, v in (("cj_strength", cj_strength), ("cj_brightness", cj_brightness),
                        ("cj_contrast", cj_contrast), ("cj_saturation", cj_saturation)):
            _check(name, v, 0.0, math.inf)
        _check("cj_hue * cj_strength", cj_hue * cj_strength, 0.0, 0.5)
        if len(blur_sigma) != 2:
            raise ConfigError(f"blur_sigma must be a (min, max) pair, got {blur_sigma!r}")
        _check("blur_sigma[0]", blur_sigma[0], 0.0, blur_sigma[1], lo_open=True)
        self.scale, self.blur_sigma = (min_scale, max_scale), tuple(blur_sigma)
        self.hflip_prob, self.cj_prob, self.gray_prob = hflip_prob, cj_prob, gray_prob
        self.blur_prob, self.solarize_prob = blur_prob, solarize_prob
        b, c, s, h = (v * cj_strength for v in (cj_brightness, cj_contrast, cj_saturation, cj_hue))
        self.cj_low = (max(0.0, 1.0 - b), max(0.0, 1.0 - c), max(0.0, 1.0 - s), -h)
        self.cj_high = (1.0 + b, 1.0 + c, 1.0 + s, h)
        k = max(3, int(0.1 * image_size))
        self.kernel_size = k + 1 - k % 2

    def sample_params(self, batch: int, height: int, width: int, device=None,
                      generator: torch.Generator | None = None) -> SimCLRParams:
        """Draws independent parameters for ``batch`` images of size ``height`` x ``width``."""
        crop = sample_crop_params(batch, height, width, self.scale, generator=generator, device=device)  # [B, 4]
        u = uniform((batch, 14), device, generator)  # [B, 14]
        jitter = u[:, 1] < self.cj_prob  # [B]
        factors = [torch.where(jitter, lo + (hi - lo) * u[:, 2 + k], 1.0 if k < 3 else 0.0)  # identity if no jitter
                   for k, (lo, hi) in enumerate(zip(self.cj_low, self.cj_high))]
        sigma = self.blur_sigma[0] + (self.blur_sigma[1] - self.blur_sigma[0]) * u[:, 12]  # [B]
        return SimCLRParams(
            crop=crop, flip=u[:, 0] < self.hflip_prob, jitter=jitter, factors=torch.stack(factors, dim=1),
            order=u[:, 6:10].argsort(dim=1), gray=u[:, 10] < self.gray_prob,
            sigma=torch.where(u[:, 11] < self.blur_prob, sigma, 0.0), solarize=u[:, 13] < self.solarize_prob)

    def apply(self, images: Tensor, params: SimCLRParams) -> Tensor:
        """Augments uint8 ``[B, 3, H, W]`` with given parameters -> float32 ``[B, 3, S, S]``."""
        return self._augment(to_float(images), params)

    def _augment(self, x: Tensor, params: SimCLRParams) -> Tensor:
        """``apply`` on float ``[B, 3, H, W]`` in [0, 1]."""
        return self.photometric(resized_crop(x, params.crop, params.flip, self.image_size).clamp_(0.0, 1.0), params)

    def photometric(self, x: Tensor, params: SimCLRParams) -> Tensor:
        """The photometric part alone, on float ``[B, 3, S, S]`` crops in [0, 1] (streamed crops
        arrive already cropped and flipped: no resample)."""
        if self.cj_prob > 0:
            x = color_jitter(x, params.factors, params.order, hue=self.cj_high[3] > 0)  # [B, 3, S, S]
        if self.gray_prob > 0:
            x = torch.where(params.gray.view(-1, 1, 1, 1), rgb_to_grayscale(x).expand_as(x), x)
        if self.blur_prob > 0:
            x = gaussian_blur(x, params.sigma, self.kernel_size)  # [B, 3, S, S]
        if self.solarize_prob > 0:
            x = solarize(x, params.solarize)  # [B, 3, S, S]
        return self.normalise(x)

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """images uint8 [B, 3, H, W] -> float32 [B, 3, image_size, image_size], normalised with mean/std."""
        x = to_float(images)  # [B, 3, H, W]
        return self._augment(x, self.sample_params(x.shape[0], x.shape[2], x.shape[3], x.device, generator))


class SupervisedAugment(_Normalised):
    """Standard CIFAR-style supervised augmentation, batched.

    Random crop with zero ``padding`` (a shift of up to ``padding`` pixels, as in the ResNet
    paper), or a continuous shift of up to ``shift_range`` x the side (Keras'
    ``ImageDataGenerator`` width/height_shift_range, bilinear), or, with ``random_resized_crop``,
    a RandomResizedCrop; then a horizontal flip and normalisation. Inputs not of size
    ``image_size`` are first resized like :class:`EvalTransform` (only for the shifted crop;
    random resized crops sample the original image directly).

    Args:
        image_size: Output height and width (>= 8).
        mean, std: Per-channel mean and standard deviation (> 0) of [0, 1] images.
        padding: Maximal integer shift in pixels, in [0, image_size).
        shift_range: None, or a fraction r in (0, 1) for continuous shifts uniform in
            [-r S, r S] (then ``padding`` must be 0).
        shift_fill: What a shift uncovers: "zero" (black) or "nearest" (the edge pixel
            repeated, Keras' default ``fill_mode='nearest'``).
        hflip_prob: Probability of a horizontal flip.
        random_resized_crop: Use a random resized crop instead of the padded crop.
        min_scale: Smallest crop area fraction of the random resized crop, in (0, 1].
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], padding: int = 4,
                 hflip_prob: float = 0.5, random_resized_crop: bool = False, min_scale: float = 0.08,
                 shift_range: float | None = None, shift_fill: str = "zero") -> None:
        super().__init__(image_size, mean, std)
        if not isinstance(padding, int) or not 0 <= padding < image_size:
            raise ConfigError(f"padding must be an integer in [0, {image_size}), got {padding!r}")
        _check_shift(shift_range, shift_fill, padding, random_resized_crop)
        self.shift_range, self.shift_fill = shift_range, shift_fill
        _check("hflip_prob", hflip_prob, 0.0, 1.0)
        _check("min_scale", min_scale, 0.0, 1.0, lo_open=True)
        self.padding, self.hflip_prob = padding, hflip_prob
        self.random_resized_crop, self.min_scale = random_resized_crop, min_scale

    def forward(self, images: Tensor, generator: torch.Generator | None = None, normalise: bool = True) -> Tensor:
        """uint8 ``[B, 3, H, W]`` -> float32 ``[B, 3, S, S]``, normalised (``normalise=False``: in
        [0, 1], for a transform that must come after the crop/flip and before normalisation)."""
        x = to_float(images)  # [B, 3, H, W]
        if not self.random_resized_crop:
            x = _resize_center_crop(x, self.image_size)  # [B, 3, S, S]
        b, _, height, width = x.shape
        u = uniform((b, 3), x.device, generator)  # [B, 3]
        if self.random_resized_crop:
            boxes = sample_crop_params(b, height, width, (self.min_scale, 1.0), generator=generator, device=x.device)
        else:
            boxes = shift_boxes(u[:, 1:], self.image_size, self.padding, self.shift_range)  # [B, 4] (dy, dx, S, S)
        mode = "border" if self.random_resized_crop else SHIFT_FILLS[self.shift_fill]
        x = resized_crop(x, boxes, u[:, 0] < self.hflip_prob, self.image_size, mode)  # [B, 3, S, S]
        return self.normalise(x.clamp_(0.0, 1.0)) if normalise else x.clamp_(0.0, 1.0)


def _check_shift(shift_range, shift_fill: str, padding: int, random_resized_crop: bool) -> None:
    """Raises ConfigError for a bad ``shift_fill`` / ``shift_range`` or one that would be ignored."""
    if not isinstance(shift_fill, str) or shift_fill not in SHIFT_FILLS:
        raise ConfigError(f"augment.shift_fill must be one of {', '.join(SHIFT_FILLS)}, got {shift_fill!r}")
    if shift_range is None:
        return
    if isinstance(shift_range, bool) or not isinstance(shift_range, (int, float)) or not 0 < shift_range < 1:
        raise ConfigError(f"augment.shift_range must be null or a fraction of the image side in (0, 1), got {shift_range!r}")
    if padding != 0:
        raise ConfigError(f"augment.shift_range={shift_range} (continuous shifts) and augment.padding={padding} (integer "
                          "shifts) exclude each other: set augment.padding=0 or augment.shift_range=null")
    if random_resized_crop:
        raise ConfigError("augment.shift_range shifts the padded crop; it cannot be combined with augment.random_resized_crop=true")


#: ``augment.name`` -> class; the other keys of the ``augment`` config are its keyword arguments.
AUGMENTATIONS = {"simclr": SimCLRAugment, "supervised": SupervisedAugment,
                 "supervised_noise": with_gaussian_noise(SupervisedAugment)}  # + Gaussian noise (ImCLR Sec. 3.3)


def build_augment(cfg, image_size: int, mean: Sequence[float], std: Sequence[float]) -> torch.nn.Module:
    """The training augmentation named by ``cfg["name"]`` (``simclr`` when absent).

    Args:
        cfg: The ``augment`` config (a mapping): ``name`` plus the class's keyword arguments.
        image_size, mean, std: As for :class:`SimCLRAugment` / :class:`SupervisedAugment`.

    Raises:
        ConfigError: Unknown name (lists the choices) or a keyword the class does not take.
    """
    kwargs = dict(cfg)
    name = str(kwargs.pop("name", "simclr"))
    if name not in AUGMENTATIONS:
        raise ConfigError(f"unknown augment '{name}'; valid choices: {', '.join(sorted(AUGMENTATIONS))}")
    cls = AUGMENTATIONS[name]
    try:
        inspect.signature(cls).bind(image_size, mean, std, **kwargs)
    except TypeError as err:
        raise ConfigError(f"augment '{name}': {err}") from None
    return cls(image_size, mean, std, **kwargs)
