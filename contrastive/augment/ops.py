"""Per-sample image ops on batches: the kernels behind :mod:`contrastive.augment.pipelines`.

Every function takes float ``[B, C, H, W]`` images in [0, 1] and per-sample parameters
(tensors with a leading ``B``), and runs as a few vectorised kernels with no loop over
samples. Formulas follow torchvision's tensor backend (``F.adjust_*``, ``F.gaussian_blur``)
and ``RandomResizedCrop.get_params``; ``tests/test_augment.py`` checks them against it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def uniform(shape: tuple[int, ...], device=None, generator: torch.Generator | None = None) -> Tensor:
    """U[0, 1) float32 samples on ``device``, from ``generator`` or the device's global RNG."""
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def to_float(images: Tensor) -> Tensor:
    """Checks that ``images`` is uint8 ``[B, 3, H, W]`` and scales it to float32 [0, 1]."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8:
        raise TypeError(f"images must be a uint8 tensor, got {getattr(images, 'dtype', type(images).__name__)}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape [B, 3, H, W], got {tuple(images.shape)}")
    return images.float().div_(255.0)  # [B, 3, H, W]


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
    u = uniform((3, batch, 10), device, generator)  # [3, B, 10]
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


#: ``augment.shift_fill`` -> the ``grid_sample`` padding mode of a shifted crop: "zero" pads with
#: black (the ResNet paper's zero-padded crop), "nearest" repeats the edge pixel (Keras'
#: ``ImageDataGenerator`` default ``fill_mode='nearest'``; ``scipy.ndimage`` mode "nearest").
SHIFT_FILLS = {"zero": "zeros", "nearest": "border"}


def shift_boxes(u: Tensor, size: int, padding: int = 0, shift_range: float | None = None) -> Tensor:
    """Per-sample boxes for :func:`resized_crop` that translate ``size`` x ``size`` images.

    A box ``(dy, dx, S, S)`` makes output pixel ``(i, j)`` sample input ``(i + dy, j + dx)``
    (Keras' ``apply_affine_transform`` convention for ``tx``, ``ty``).

    Args:
        u: U[0, 1) draws ``[B, 2]`` for (rows, columns).
        size: Image height and width S.
        padding: With ``shift_range`` None: integer shifts, uniform in {-padding, ..., padding}.
        shift_range: A fraction r in (0, 1): continuous shifts uniform in [-r S, r S] pixels, as
            Keras ``ImageDataGenerator(width_shift_range=r, height_shift_range=r)`` draws
            ``np.random.uniform(-r, r) * side``; :func:`resized_crop` then samples bilinearly
            (Keras: ``interpolation_order=1``).

    Returns:
        float32 ``[B, 4]`` boxes ``(top, left, h, w)``.
    """
    if shift_range is None:
        shift = torch.floor(u * (2 * padding + 1)) - padding  # [B, 2] integers in [-padding, padding]
    else:
        shift = (2.0 * u - 1.0) * (float(shift_range) * size)  # [B, 2] in [-r S, r S)
    return torch.cat((shift, shift.new_full((u.shape[0], 2), float(size))), dim=1)  # [B, 4]


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
