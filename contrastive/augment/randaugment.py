"""RandAugment as InfoMin's released code uses it, batched: every image draws its own ops and magnitudes.

InfoMin (Tian et al. 2020) augments with ``rand_augment_transform('rand-n2-m10-mstd0.5')`` of its
released code (HobbitLong/PyContrast ``pycontrast/datasets/RandAugment.py``, after timm's): each
image applies ``num_ops`` = 2 ops drawn uniformly with replacement from 15 ops; each drawn op runs
with probability 0.5, at a magnitude drawn from N(10, 0.5) and clipped to [0, 10] (``mstd0.5``), and
the geometric ops and rotation pick a random sign. The per-op arguments at magnitude ``m``:

==================  ===========================================================================
AutoContrast        stretch each channel's min..max to 0..1 (PIL ``ImageOps.autocontrast``)
Equalize            histogram equalisation per channel (PIL ``ImageOps.equalize``)
Invert              ``1 - x``
Rotate              +-30 m / 10 degrees about the centre, uncovered pixels filled with the mean colour
PosterizeTpu        keep ``int(4 m / 10)`` most significant bits
Solarize            invert the pixels ``>= int(256 m / 10)`` (of 255)
SolarizeAdd         add ``int(110 m / 10)`` (of 255) to the pixels below 128
Color, Contrast,    PIL ``ImageEnhance`` with factor ``1.8 m / 10 + 0.1``
Brightness,
Sharpness
ShearX, ShearY      shear by +-0.3 m / 10 (PIL's affine about the top-left corner), mean-colour fill
TranslateXRel/YRel  shift by +-0.45 m / 10 of the side, mean-colour fill
==================  ===========================================================================

Differences from the per-image PIL code, all of them small: pixels stay float between ops (PIL rounds
to uint8 after each; the level ops below quantise to 256 levels where the op is defined on them),
and affine ops sample bilinearly (the code picks bilinear or bicubic at random).
Each op runs only on the images that drew it, a fixed number of rows picked with ``topk``
(:func:`capacity`; no loop over images, no host sync): ten photometric ops and one combined affine
resample per layer.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from contrastive.augment.ops import adjust_brightness, adjust_contrast, adjust_saturation, rgb_to_grayscale

#: The ops in the code's ``_RAND_TRANSFORMS`` order (their ids in :func:`randaugment`).
OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "PosterizeTpu", "Solarize", "SolarizeAdd", "Color",
       "Contrast", "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateXRel", "TranslateYRel")
_GEOMETRIC = {"Rotate": 3, "ShearX": 11, "ShearY": 12, "TranslateXRel": 13, "TranslateYRel": 14}
MAX_LEVEL = 10.0


def _quantise(x: Tensor) -> Tensor:
    """float [0, 1] -> integer levels 0..255 as float."""
    return (x * 255.0).round_().clamp_(0.0, 255.0)


def autocontrast(x: Tensor) -> Tensor:
    """Per image and channel, maps [min, max] to [0, 1] (identity where min == max)."""
    lo = x.amin(dim=(2, 3), keepdim=True)  # [B, 3, 1, 1]
    hi = x.amax(dim=(2, 3), keepdim=True)
    span = hi - lo
    return torch.where(span > 0, (x - lo) / span.clamp_min(1e-12), x)


def equalize(x: Tensor) -> Tensor:
    """PIL's ``ImageOps.equalize`` per image and channel: ``lut[i] = (step // 2 + cdf[i - 1]) // step``
    with ``step = (N - count of the last used level) // 255``; identity where ``step`` is 0."""
    b, c, h, w = x.shape
    levels = _quantise(x).long().view(b * c, h * w)  # [BC, HW]
    hist = torch.zeros(b * c, 256, device=x.device).scatter_add_(1, levels, torch.ones_like(levels, dtype=torch.float))
    last = 255 - (hist.flip(1) > 0).float().argmax(dim=1)  # [BC] highest used level
    step = torch.div(h * w - hist.gather(1, last.unsqueeze(1)).squeeze(1), 255, rounding_mode="floor")  # [BC]
    before = torch.cumsum(hist, dim=1) - hist  # [BC, 256] count below each level
    lut = torch.div(torch.div(step, 2, rounding_mode="floor").unsqueeze(1) + before, step.clamp_min(1).unsqueeze(1),
                    rounding_mode="floor").clamp_(0, 255)  # [BC, 256]
    out = lut.gather(1, levels).view(b, c, h, w) / 255.0
    return torch.where((step > 0).view(b, c, 1, 1), out, x)


def posterize(x: Tensor, bits: Tensor) -> Tensor:
    """Keeps the ``bits`` [B] most significant of 8 bits (``bits >= 8``: identity)."""
    shift = (8 - bits.clamp(0, 8)).view(-1, 1, 1, 1).float()  # [B, 1, 1, 1]
    keep = torch.pow(2.0, shift)
    return torch.floor(_quantise(x) / keep) * keep / 255.0


def solarize_threshold(x: Tensor, threshold: Tensor) -> Tensor:
    """Inverts the pixels ``>= threshold`` [B] (levels of 255; 256: identity)."""
    return torch.where(_quantise(x) >= threshold.view(-1, 1, 1, 1), 1.0 - x, x)


def solarize_add(x: Tensor, add: Tensor) -> Tensor:
    """Adds ``add`` [B] (levels of 255) to the pixels below level 128, saturating at 255."""
    q = _quantise(x)
    return torch.where(q < 128, (q + add.view(-1, 1, 1, 1)).clamp_(max=255.0), q) / 255.0


def sharpness(x: Tensor, factor: Tensor) -> Tensor:
    """PIL ``ImageEnhance.Sharpness``: blend with the SMOOTH-filtered image (kernel 1 1 1 / 1 5 1 / 1 1 1,
    / 13; the border pixels are kept) by ``factor`` [B]."""
    h, w = x.shape[-2:]
    inner = (F.avg_pool2d(x, 3, stride=1) * 9.0 + 4.0 * x[..., 1:-1, 1:-1]) / 13.0  # [B, 3, H-2, W-2]
    smooth = x.clone()
    smooth[..., 1:h - 1, 1:w - 1] = inner
    r = factor.view(-1, 1, 1, 1)
    return (r * x + (1.0 - r) * smooth).clamp_(0.0, 1.0)


def affine(x: Tensor, matrix: Tensor, fill: Tensor) -> Tensor:
    """Resamples ``x`` [B, C, H, W] with per-image pixel-space matrices ``matrix`` [B, 2, 3] (output pixel
    ``(u, v)`` reads input ``matrix @ (u, v, 1)``, PIL's ``Image.transform(AFFINE)``); pixels read from
    outside the image take ``fill`` [C]."""
    b, c, h, w = x.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=x.dtype) + 0.5,
                            torch.arange(w, device=x.device, dtype=x.dtype) + 0.5, indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).view(1, h * w, 3)  # [1, HW, 3]
    source = points @ matrix.transpose(1, 2)  # [B, HW, 2] input pixel coordinates
    grid = torch.stack([source[..., 0] * 2.0 / w - 1.0, source[..., 1] * 2.0 / h - 1.0], dim=-1).view(b, h, w, 2)
    ones = torch.ones_like(x[:, :1])
    sampled = F.grid_sample(torch.cat([x, ones], dim=1), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    inside = sampled[:, -1:]  # [B, 1, H, W] how much of each pixel came from inside the image
    return sampled[:, :-1] + (1.0 - inside) * fill.view(1, c, 1, 1)


def geometric_matrix(op: Tensor, magnitude: Tensor, sign: Tensor, height: int, width: int) -> Tensor:
    """Per-image pixel-space matrices [B, 2, 3] of the drawn geometric op (identity for the others)."""
    b = op.shape[0]
    level = magnitude / MAX_LEVEL * sign  # [B]
    m = torch.zeros(b, 2, 3, device=op.device)
    m[:, 0, 0] = m[:, 1, 1] = 1.0
    shear = 0.3 * level
    m[:, 0, 1] = torch.where(op == _GEOMETRIC["ShearX"], shear, 0.0)
    m[:, 1, 0] = torch.where(op == _GEOMETRIC["ShearY"], shear, 0.0)
    m[:, 0, 2] = torch.where(op == _GEOMETRIC["TranslateXRel"], 0.45 * level * width, 0.0)
    m[:, 1, 2] = torch.where(op == _GEOMETRIC["TranslateYRel"], 0.45 * level * height, 0.0)
    # PIL rotate(degrees): counter-clockwise about the centre, matrix of angle a = -radians(degrees).
    a = torch.where(op == _GEOMETRIC["Rotate"], -math.radians(30.0) * level, 0.0)
    cos, sin = torch.cos(a), torch.sin(a)
    rotate = op == _GEOMETRIC["Rotate"]
    cx, cy = width / 2.0, height / 2.0
    rot = torch.stack([torch.stack([cos, sin, cx - cos * cx - sin * cy], dim=1),
                       torch.stack([-sin, cos, cy + sin * cx - cos * cy], dim=1)], dim=1)  # [B, 2, 3]
    return torch.where(rotate.view(-1, 1, 1), rot, m)


def _photometric_op(k: int, x: Tensor, level: Tensor) -> Tensor:
    """Photometric op ``k`` (an id of :data:`OPS`) at ``level = magnitude / 10`` [B] on float ``x``."""
    enhance = 1.8 * level + 0.1
    if k == 0:
        return autocontrast(x)
    if k == 1:
        return equalize(x)
    if k == 2:
        return 1.0 - x
    if k == 4:
        return posterize(x, torch.floor(4.0 * level).long())
    if k == 5:
        return solarize_threshold(x, torch.floor(256.0 * level))
    if k == 6:
        return solarize_add(x, torch.floor(110.0 * level))
    return {7: adjust_saturation, 8: adjust_contrast, 9: adjust_brightness, 10: sharpness}[k](x, enhance)


def capacity(batch: int, share: float) -> int:
    """Rows an op is computed on: the images that drew it fit with overwhelming probability (mean + 6 sd
    + 8 of Binomial(batch, share), so a batch where more drew it, and the extra images skip the op, is
    rarer than one in 10^9), or the whole batch when that is smaller."""
    mean = batch * share
    return min(batch, int(math.ceil(mean + 6.0 * math.sqrt(mean * (1.0 - share)) + 8)))


def _on_drawn(out: Tensor, x: Tensor, drawn: Tensor, share: float, fn) -> Tensor:
    """``out`` with ``fn(x[rows], rows)`` written into the rows where ``drawn`` [B] is True, computed on a
    fixed number of rows (:func:`capacity`) picked with ``topk``: no host sync, no boolean indexing."""
    rows = torch.topk(drawn.float(), capacity(x.shape[0], share), sorted=False).indices  # [C]
    keep = drawn.index_select(0, rows).view(-1, 1, 1, 1)  # [C, 1, 1, 1]
    new = torch.where(keep, fn(x.index_select(0, rows), rows), out.index_select(0, rows))
    return out.index_copy(0, rows, new)


def apply_op(x: Tensor, op: Tensor, magnitude: Tensor, sign: Tensor, fill: Tensor, prob: float = 0.5) -> Tensor:
    """One RandAugment layer: image ``i`` gets op ``op[i]`` (-1: none) at ``magnitude[i]`` with ``sign[i]``.

    Each op runs only on the rows that drew it (up to :func:`capacity`; ``prob`` is the chance a drawn
    op runs, so an op reaches a share ``prob / 15`` of the batch)."""
    level = magnitude / MAX_LEVEL  # [B]
    share = prob / len(OPS)
    out = x
    for k in range(len(OPS)):
        if k not in _GEOMETRIC.values():
            out = _on_drawn(out, x, op == k, share, lambda rows_x, rows, k=k: _photometric_op(k, rows_x, level[rows]))
    geometric = torch.zeros_like(op, dtype=torch.bool)
    for k in _GEOMETRIC.values():
        geometric |= op == k
    h, w = x.shape[-2:]
    return _on_drawn(out, x, geometric, share * len(_GEOMETRIC), lambda rows_x, rows: affine(
        rows_x, geometric_matrix(op[rows], magnitude[rows], sign[rows], h, w), fill))


def sample_layers(batch: int, num_ops: int, prob: float, magnitude: float, magnitude_std: float, u: Tensor,
                  normal: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The draws of ``num_ops`` layers from uniforms ``u`` [B, L, 3] and normals ``normal`` [B, L]:
    op ids [B, L] (-1 where the op's probability test failed), magnitudes [B, L] and signs [B, L]."""
    op = torch.floor(u[..., 0] * len(OPS)).long().clamp_(max=len(OPS) - 1)
    op = torch.where(u[..., 1] < prob, op, -1)
    mag = (magnitude + magnitude_std * normal).clamp(0.0, MAX_LEVEL) if magnitude_std > 0 else torch.full_like(normal, magnitude)
    sign = torch.where(u[..., 2] > 0.5, -1.0, 1.0)  # the code's _randomly_negate
    return op, mag, sign


def grayscale_where(x: Tensor, mask: Tensor) -> Tensor:
    """Grayscale (3 equal channels) where ``mask`` [B] is True."""
    return torch.where(mask.view(-1, 1, 1, 1), rgb_to_grayscale(x).expand_as(x), x)
