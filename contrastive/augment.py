"""Batched augmentation on the training device, with independent random parameters per sample.

uint8 batches ``[B, 3, H, W]`` become normalised float32 images in a handful of vectorised
kernels (no loop over samples, no host sync). Randomness comes from torch's global RNG on the
input's device (so ``seed_everything`` makes runs reproducible) unless a ``generator`` is given.
Formulas follow torchvision's tensor backend and ``RandomResizedCrop.get_params``.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive.errors import ConfigError

__all__ = [
    "build_augment", "AUGMENTATIONS", "SimCLRAugment", "SimCLRParams", "SupervisedAugment", "EvalTransform", "sample_crop_params",
    "resized_crop", "rgb_to_grayscale", "adjust_brightness", "adjust_contrast", "adjust_saturation",
    "adjust_hue", "color_jitter", "gaussian_blur", "solarize",
]


def _rand(shape: tuple[int, ...], device=None, generator: torch.Generator | None = None) -> Tensor:
    """U[0, 1) float32 samples on ``device``, from ``generator`` or the device's global RNG."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def sample_crop_params(batch: int, height: int, width: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                       generator: torch.Generator | None = None, device=None) -> Tensor:
    """Per-sample crop boxes distributed like ``RandomResizedCrop.get_params``, 10 tries at once.

    Args:
        batch, height, width: Number of boxes B and image size in pixels.
        scale: Range of the box area as a fraction of the image area.
        ratio: Range of the aspect ratio w / h (sampled log-uniformly).
        generator: Optional RNG; default is the global RNG of ``device``.
        device: Device of the result.

    Returns:
        float32 ``[B, 4]`` boxes ``(top, left, h, w)`` in pixels.
    """
    u = _rand((3, batch, 10), device, generator)  # [3, B, 10]
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[0])  # [B, 10]
    aspect = torch.exp(log_lo + (log_hi - log_lo) * u[1])  # [B, 10]
    w = torch.round(torch.sqrt(area * aspect))  # [B, 10]
    h = torch.round(torch.sqrt(area / aspect))  # [B, 10]
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)  # [B, 10]
    first = fits.to(torch.uint8).argmax(dim=1, keepdim=True)  # [B, 1] first try that fits
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)  # [B], [B]
    top = torch.minimum(torch.floor(u[2, :, 0] * (height - h + 1)), height - h)  # [B]
    left = torch.minimum(torch.floor(u[2, :, 1] * (width - w + 1)), width - w)  # [B]
    fw, fh = width, height  # fallback: whole image, center-cropped to the ratio range
    if width / height < min(ratio):
        fh = int(round(fw / min(ratio)))
    elif width / height > max(ratio):
        fw = int(round(fh * max(ratio)))
    found = fits.any(dim=1)  # [B]
    fallback = ((height - fh) // 2, (width - fw) // 2, fh, fw)
    return torch.stack([torch.where(found, v, float(f)) for v, f in zip((top, left, h, w), fallback)], dim=1)


def resized_crop(x: Tensor, boxes: Tensor, flip: Tensor, size: int, padding_mode: str = "border") -> Tensor:
    """Crops ``boxes``, resizes to ``size`` and flips, in one bilinear ``grid_sample``.

    Args:
        x: float ``[B, C, H, W]``.
        boxes: ``[B, 4]`` ``(top, left, h, w)`` in pixels of ``x``; may extend past the border.
        flip: bool ``[B]``, horizontal flip after the crop.
        size: Output height and width.
        padding_mode: "border" for crops, "zeros" for zero-padded shifts.

    Returns:
        float ``[B, C, size, size]``.
    """
    b, c, height, width = x.shape
    top, left, h, w = boxes.to(x).unbind(dim=1)  # [B] each
    theta = x.new_zeros(b, 2, 3)  # [B, 2, 3] output coords -> input coords, both in [-1, 1]
    theta[:, 0, 0] = (1.0 - 2.0 * flip.to(x)) * w / width  # negative x scale = flip
    theta[:, 0, 2] = (2.0 * left + w) / width - 1.0
    theta[:, 1, 1] = h / height
    theta[:, 1, 2] = (2.0 * top + h) / height - 1.0
    grid = F.affine_grid(theta, [b, c, size, size], align_corners=False)  # [B, S, S, 2]
    return F.grid_sample(x, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)


def rgb_to_grayscale(x: Tensor) -> Tensor:
    """float ``[B, 3, H, W]`` -> luma ``[B, 1, H, W]`` with torchvision's weights."""
    return 0.2989 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]  # [B, 1, H, W]


def _blend(x: Tensor, y: Tensor | float, ratio: Tensor) -> Tensor:
    """``ratio * x + (1 - ratio) * y`` clamped to [0, 1]; ``ratio`` is per sample ``[B]``."""
    r = ratio.view(-1, 1, 1, 1)  # [B, 1, 1, 1]
    return (r * x + (1.0 - r) * y).clamp_(0.0, 1.0)  # [B, 3, H, W]


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Per-sample ``F.adjust_brightness``: ``x`` float [B, 3, H, W] in [0, 1], ``factor`` [B]."""
    return _blend(x, 0.0, factor)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Per-sample ``F.adjust_contrast``: blends with each image's mean luma."""
    mean = rgb_to_grayscale(x).mean(dim=(1, 2, 3), keepdim=True)  # [B, 1, 1, 1]
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Per-sample ``F.adjust_saturation``: blends with the grayscale image."""
    return _blend(x, rgb_to_grayscale(x), factor)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Per-sample ``F.adjust_hue``: ``shift`` [B] in [-0.5, 0.5] is added to the HSV hue.

    torchvision's RGB -> HSV -> RGB round trip, fused: saturation and value are unchanged, so
    channel c of the result is ``max - (max - min) * clamp(min(k, 4 - k), 0, 1)`` with
    ``k = (n_c + 6 * hue) mod 6`` and ``n = (5, 3, 1)`` for (R, G, B).
    """
    r, g, b = x.unbind(dim=1)  # [B, H, W] each
    maxc, minc = x.amax(dim=1), x.amin(dim=1)  # [B, H, W]
    cr = maxc - minc  # [B, H, W]
    is_r, is_g = maxc == r, maxc == g  # [B, H, W]; red wins ties, then green (as torchvision)
    num = torch.where(is_r, g - b, torch.where(is_g, b - r, r - g))  # [B, H, W]
    offset = torch.where(is_r, 0.0, torch.where(is_g, 2.0, 4.0))  # [B, H, W]
    hue6 = offset + num / torch.where(cr == 0, 1.0, cr) + 6.0 * shift.view(-1, 1, 1)  # [B, H, W], 6 * hue
    n = torch.arange(5, 0, -2, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)  # [1, 3, 1, 1]
    k = torch.remainder(n + hue6.unsqueeze(1), 6.0)  # [B, 3, H, W]
    w = torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)  # [B, 3, H, W]
    return maxc.unsqueeze(1) - cr.unsqueeze(1) * w  # [B, 3, H, W]


def color_jitter(x: Tensor, factors: Tensor, order: Tensor, hue: bool = True) -> Tensor:
    """Per-sample ``ColorJitter`` with given factors, the ops in a per-sample order.

    Each of the four slots applies, per sample, the one op that sample has there.
    Brightness, contrast and saturation are all ``r * x + (1 - r) * y`` with a different
    ``y`` (0, the image's mean luma, its luma), so a slot is one fused blend for every
    sample. Hue is the expensive op: on CPU it runs only on the samples whose slot it is
    (each sample once in total); on GPU it runs on the whole batch under a mask, because
    selecting a data-dependent subset would make the host wait for the device.

    Args:
        x: float ``[B, 3, H, W]`` in [0, 1].
        factors: ``[B, 4]`` brightness, contrast, saturation factors and hue shift.
        order: long ``[B, 4]``, per sample a permutation of op ids (0 brightness, 1 contrast,
            2 saturation, 3 hue) in application order.
        hue: False skips the hue op (all shifts known to be 0).

    Returns:
        float ``[B, 3, H, W]`` in [0, 1].
    """
    for slot in range(4):
        chosen = order[:, slot]  # [B]
        ratio = torch.where(chosen == 3, 1.0, factors.gather(1, chosen.clamp(max=2).view(-1, 1)).squeeze(1))  # [B]
        luma = rgb_to_grayscale(x)  # [B, 1, H, W]
        op = chosen.view(-1, 1, 1, 1)  # [B, 1, 1, 1]
        target = torch.where(op == 0, 0.0, torch.where(op == 1, luma.mean(dim=(2, 3), keepdim=True), luma))  # [B, 1, H, W]
        x = _blend(x, target, ratio)  # [B, 3, H, W]; ratio 1 (hue slot) leaves x as it is
        if hue:
            x = _hue_slot(x, torch.where(chosen == 3, factors[:, 3], 0.0))
    return x


def _hue_slot(x: Tensor, shift: Tensor, subset: bool | None = None) -> Tensor:
    """``adjust_hue`` where ``shift`` [B] is non-zero, ``x`` unchanged elsewhere; ``subset``
    (default: on CPU) computes it only for those samples, else for all under a mask."""
    if x.device.type == "cpu" if subset is None else subset:
        idx = shift.nonzero().squeeze(1)  # [n]
        if len(idx) == 0:
            return x
        return x.index_copy(0, idx, adjust_hue(x[idx], shift[idx]))  # [B, 3, H, W]
    return torch.where((shift != 0).view(-1, 1, 1, 1), adjust_hue(x, shift), x)


def gaussian_blur(x: Tensor, sigma: Tensor, kernel_size: int) -> Tensor:
    """Per-sample Gaussian blur of float ``[B, C, H, W]`` like ``F.gaussian_blur`` (reflect padding).

    A separable grouped convolution (groups = B*C) with one kernel per sample; ``sigma`` ``[B]``
    is in pixels, 0 means no blur; ``kernel_size`` is odd.
    """
    b, c, height, width = x.shape
    half = kernel_size // 2
    pos = torch.linspace(-half, half, kernel_size, device=x.device)  # [K]
    blur = (sigma > 0).view(-1, 1)  # [B, 1]
    kernel = torch.exp(-0.5 * (pos / torch.where(blur, sigma.view(-1, 1), 1.0)) ** 2)  # [B, K]
    kernel = torch.where(blur, kernel / kernel.sum(dim=1, keepdim=True), (pos == 0).to(x))  # [B, K]
    kernel = kernel.repeat_interleave(c, dim=0)  # [B*C, K]
    y = F.pad(x.reshape(1, b * c, height, width), (half, half, half, half), mode="reflect")  # [1, B*C, H+2p, W+2p]
    y = F.conv2d(y, kernel.view(b * c, 1, kernel_size, 1), groups=b * c)  # [1, B*C, H, W+2p]
    y = F.conv2d(y, kernel.view(b * c, 1, 1, kernel_size), groups=b * c)  # [1, B*C, H, W]
    return y.view(b, c, height, width)


def solarize(x: Tensor, mask: Tensor, threshold: float = 0.5) -> Tensor:
    """Inverts pixels ``>= threshold`` in the samples where ``mask`` [B] is True."""
    return torch.where(mask.view(-1, 1, 1, 1) & (x >= threshold), 1.0 - x, x)


def _to_float(images: Tensor) -> Tensor:
    """Checks that ``images`` is uint8 ``[B, 3, H, W]`` and scales it to float32 [0, 1]."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8:
        raise TypeError(f"images must be a uint8 tensor, got {getattr(images, 'dtype', type(images).__name__)}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [B, 3, H, W], got {tuple(images.shape)}")
    return images.float().div_(255.0)  # [B, 3, H, W]


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
        return self.normalise(_resize_center_crop(_to_float(images), self.image_size))


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
        u = _rand((batch, 14), device, generator)  # [B, 14]
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
        return self._augment(_to_float(images), params)

    def _augment(self, x: Tensor, params: SimCLRParams) -> Tensor:
        """``apply`` on float ``[B, 3, H, W]`` in [0, 1]."""
        x = resized_crop(x, params.crop, params.flip, self.image_size).clamp_(0.0, 1.0)
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
        x = _to_float(images)  # [B, 3, H, W]
        return self._augment(x, self.sample_params(x.shape[0], x.shape[2], x.shape[3], x.device, generator))


class SupervisedAugment(_Normalised):
    """Standard CIFAR-style supervised augmentation, batched.

    Random crop with zero ``padding`` (a shift of up to ``padding`` pixels, as in the ResNet
    paper) or, with ``random_resized_crop``, a RandomResizedCrop; then a horizontal flip and
    normalisation. Inputs not of size ``image_size`` are first resized like :class:`EvalTransform`
    (only for the padded crop; random resized crops sample the original image directly).

    Args:
        image_size: Output height and width (>= 8).
        mean, std: Per-channel mean and standard deviation (> 0) of [0, 1] images.
        padding: Maximal shift in pixels, in [0, image_size).
        hflip_prob: Probability of a horizontal flip.
        random_resized_crop: Use a random resized crop instead of the padded crop.
        min_scale: Smallest crop area fraction of the random resized crop, in (0, 1].
    """

    def __init__(self, image_size: int, mean: Sequence[float], std: Sequence[float], padding: int = 4,
                 hflip_prob: float = 0.5, random_resized_crop: bool = False, min_scale: float = 0.08) -> None:
        super().__init__(image_size, mean, std)
        if not isinstance(padding, int) or not 0 <= padding < image_size:
            raise ConfigError(f"padding must be an integer in [0, {image_size}), got {padding!r}")
        _check("hflip_prob", hflip_prob, 0.0, 1.0)
        _check("min_scale", min_scale, 0.0, 1.0, lo_open=True)
        self.padding, self.hflip_prob = padding, hflip_prob
        self.random_resized_crop, self.min_scale = random_resized_crop, min_scale

    def forward(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """uint8 ``[B, 3, H, W]`` -> float32 ``[B, 3, S, S]``, normalised."""
        x = _to_float(images)  # [B, 3, H, W]
        if not self.random_resized_crop:
            x = _resize_center_crop(x, self.image_size)  # [B, 3, S, S]
        b, _, height, width = x.shape
        u = _rand((b, 3), x.device, generator)  # [B, 3]
        if self.random_resized_crop:
            boxes = sample_crop_params(b, height, width, (self.min_scale, 1.0), generator=generator, device=x.device)
        else:
            shift = torch.floor(u[:, 1:] * (2 * self.padding + 1)) - self.padding  # [B, 2] (dy, dx)
            boxes = torch.cat((shift, shift.new_full((b, 2), float(self.image_size))), dim=1)  # [B, 4]
        mode = "border" if self.random_resized_crop else "zeros"
        x = resized_crop(x, boxes, u[:, 0] < self.hflip_prob, self.image_size, mode)  # [B, 3, S, S]
        return self.normalise(x.clamp_(0.0, 1.0))


#: ``augment.name`` -> class; the other keys of the ``augment`` config are its keyword arguments.
AUGMENTATIONS = {"simclr": SimCLRAugment, "supervised": SupervisedAugment}


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
