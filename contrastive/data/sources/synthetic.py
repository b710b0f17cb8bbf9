"""Procedural shapes: the embedded default dataset, generated in seconds, no download.

Every image shows one large shape (or a full-field texture) whose *structure* is the
class. Everything else is random nuisance: foreground and background colour, position,
size, rotation, a smooth illumination field and pixel noise. Colour and position
therefore carry no class information, and a linear probe on raw pixels stays near
chance, while an encoder that learns shape separates the classes easily.

Classes are chosen to survive SimCLR augmentation: every shape is mirror-symmetric up
to a rotation (so a horizontal flip keeps the class), large (a 20% crop usually keeps a
recognisable part of it) and defined by luminance contrast (so grayscale keeps it).
Shapes whose class depends on orientation (square vs diamond, plus vs X) are rotated
by at most +-20 degrees; the others by any angle.

Generation is vectorised over a chunk of images: one coordinate grid, per-image random
parameters, and signed-distance functions turned into anti-aliased masks. The only
Python loops run over chunks and classes, never over images.
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Tuple

import torch

from contrastive.core.errors import ConfigError

Tensor = torch.Tensor

# Label order; the default 10 classes are the first 10. Indices must stay stable:
# saved checkpoints and configs refer to classes by label.
CLASS_NAMES: List[str] = [
    "disk", "ring", "square", "hollow_square", "triangle",
    "plus", "x_cross", "stripes", "checkerboard", "dot_grid",
    "diamond", "star", "hollow_triangle", "bullseye", "half_disk", "hollow_diamond",
]

# Classes that an arbitrary rotation would turn into another class.
_LIMITED_ROTATION = {"square", "hollow_square", "plus", "x_cross", "diamond", "hollow_diamond"}
_MAX_LIMITED_ANGLE = math.radians(20.0)

# Fixed, so that the output for a seed does not depend on anything but the arguments.
_CHUNK = 4096
_NOISE_STD = 0.03  # per-pixel Gaussian noise, in [0, 1] units
_CLUTTER = 0.2  # illumination field: each of K*K cosines has amplitude <= _CLUTTER / K (std ~0.07)
_CLUTTER_FREQS = 4  # cosine frequencies 0..3 per axis: blobs a third of the image wide
_MIN_CONTRAST = 0.3  # fg/bg luminance gap before tinting (tint and clutter shift it a little)


def _box(x: Tensor, y: Tensor, hx: float, hy: float) -> Tensor:
    """Signed distance (Chebyshev-style, exact enough for masks) to an axis-aligned box."""
    return torch.maximum(x.abs() - hx, y.abs() - hy)


def _polygon(x: Tensor, y: Tensor, sides: int, inradius: float, phase: float) -> Tensor:
    """Regular polygon as the intersection of ``sides`` half-planes."""
    d = None
    for k in range(sides):
        a = phase + 2 * math.pi * k / sides
        dk = x * math.cos(a) + y * math.sin(a) - inradius
        d = dk if d is None else torch.maximum(d, dk)
    return d


def _plus(x: Tensor, y: Tensor) -> Tensor:
    return torch.minimum(_box(x, y, 1.0, 0.28), _box(x, y, 0.28, 1.0))


def _ring(r: Tensor, mid: float, half_width: float) -> Tensor:
    return (r - mid).abs() - half_width


def _fract(t: Tensor) -> Tensor:
    """Fractional part in [0, 1), also for negative inputs (unlike ``torch.frac``)."""
    return t - torch.floor(t)


def _periodic(t: Tensor) -> Tensor:
    """Signed distance, in periods, to the band ``|fract(t) - 0.5| < 0.25``."""
    return (_fract(t) - 0.5).abs() - 0.25


_S = math.sqrt(0.5)
_TRIANGLE = -math.pi / 2  # orientation at zero angle; triangles are rotated freely anyway

# Shapes in "shape units": (x, y) are image coordinates rotated about the centre and
# divided by the size, so that the shape spans roughly [-1, 1]. Textures get (u, v) in
# image units instead (see below), so their period does not scale with the size.
_SHAPES: Dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "disk": lambda x, y: torch.hypot(x, y) - 1.0,
    "ring": lambda x, y: _ring(torch.hypot(x, y), 0.72, 0.28),
    "square": lambda x, y: _box(x, y, 0.82, 0.82),
    "hollow_square": lambda x, y: _box(x, y, 0.6, 0.6).abs() - 0.24,
    "triangle": lambda x, y: _polygon(x, y, 3, 0.55, _TRIANGLE),
    "plus": _plus,
    "x_cross": lambda x, y: _plus(_S * (x + y), _S * (y - x)),
    "diamond": lambda x, y: (x.abs() + y.abs() - 1.05) * _S,
    "star": lambda x, y: torch.hypot(x, y) - _star_radius(torch.atan2(y, x)),
    "hollow_triangle": lambda x, y: _polygon(x, y, 3, 0.42, _TRIANGLE).abs() - 0.16,
    "bullseye": lambda x, y: torch.minimum(torch.hypot(x, y) - 0.3, _ring(torch.hypot(x, y), 0.82, 0.18)),
    "half_disk": lambda x, y: torch.maximum(torch.hypot(x, y + 0.35) - 1.0, -(y + 0.35)),
    "hollow_diamond": lambda x, y: ((x.abs() + y.abs()) * _S - 0.52).abs() - 0.2,
}


def _star_radius(angle: Tensor) -> Tensor:
    # Five points: boundary radius falls linearly from 1.0 at a tip to 0.42 between tips.
    t = _fract(angle * (5 / (2 * math.pi)))
    return 0.42 + 0.58 * (2 * (t - 0.5).abs())


def _texture(name: str, u: Tensor, v: Tensor, period: Tensor) -> Tensor:
    """Full-field textures, in image units (distance comes back in image units too)."""
    tu, tv = u / period, v / period
    if name == "stripes":
        return _periodic(tu) * period
    if name == "checkerboard":
        su, sv = _periodic(tu), _periodic(tv)
        sign = torch.where(su * sv > 0, -1.0, 1.0)  # inside where both bands agree
        return sign * torch.minimum(su.abs(), sv.abs()) * period
    # dot_grid: a disk of radius 0.3 periods in each cell.
    du, dv = _fract(tu) - 0.5, _fract(tv) - 0.5
    return (torch.hypot(du, dv) - 0.3) * period


def _colors(n: int, g: torch.Generator) -> Tuple[Tensor, Tensor]:
    """Random foreground/background colours whose luminances differ by >= _MIN_CONTRAST.

    Luminance carries the contrast (so grayscale keeps the shape visible); the tint
    (hue and saturation) is drawn independently of it and of the class, and may shift
    the luminance a little where a channel clips.
    """
    lum_bg = torch.rand(n, generator=g)
    gap = _MIN_CONTRAST + (1 - 2 * _MIN_CONTRAST) * torch.rand(n, generator=g)
    lum_fg = torch.frac(lum_bg + gap)  # circular distance >= _MIN_CONTRAST, both ways

    def tint(lum: Tensor) -> Tensor:
        hue = torch.rand(n, 3, generator=g)
        chroma = 0.6 * torch.rand(n, 1, generator=g)
        return (lum[:, None] + chroma * (hue - hue.mean(1, keepdim=True))).clamp(0, 1)

    return tint(lum_fg), tint(lum_bg)


def _chunk(labels: Tensor, size: int, num_classes: int, g: torch.Generator) -> Tensor:
    """Render one chunk of images as float ``[n, 3, size, size]`` in [0, 255]."""
    n = len(labels)
    # Every parameter is drawn for every image, in a fixed order, so the stream does not
    # depend on which classes happen to be in the chunk.
    radius = 0.4 + 0.5 * torch.rand(n, generator=g)  # half-extent; image spans [-1, 1]
    centre = (torch.rand(n, 2, generator=g) * 2 - 1) * (1 - 0.8 * radius)[:, None]
    angle = torch.rand(n, generator=g) * 2 * math.pi
    limited = (torch.rand(n, generator=g) * 2 - 1) * _MAX_LIMITED_ANGLE
    period = 0.35 + 0.3 * torch.rand(n, generator=g)  # texture period: ~3-6 per image
    fg, bg = _colors(n, g)
    clutter = torch.rand(n, 3, _CLUTTER_FREQS, _CLUTTER_FREQS, generator=g) * 2 - 1
    # Luminance-only noise: a third of the cost of per-channel noise, and just as good
    # at hiding exact pixel values from a linear probe.
    noise = torch.randn(n, 1, size, size, generator=g)

    # Pixel centres in [-1, 1]; y grows downwards like image rows.
    axis = (torch.arange(size, dtype=torch.float32) + 0.5) * (2 / size) - 1
    gy, gx = torch.meshgrid(axis, axis, indexing="ij")
    coverage = torch.empty(n, size, size)
    for k in range(num_classes):
        idx = (labels == k).nonzero().squeeze(1)
        if idx.numel() == 0:
            continue
        name = CLASS_NAMES[k]
        a = (limited if name in _LIMITED_ROTATION else angle)[idx][:, None, None]
        dx = gx - centre[idx, 0, None, None]
        dy = gy - centre[idx, 1, None, None]
        cos, sin = torch.cos(a), torch.sin(a)
        u, v = dx * cos + dy * sin, dy * cos - dx * sin
        if name in ("stripes", "checkerboard", "dot_grid"):
            dist = _texture(name, u, v, period[idx][:, None, None])
        else:
            r = radius[idx][:, None, None]
            dist = _SHAPES[name](u / r, v / r) * r  # back to image units
        # Anti-aliasing: a linear ramp one pixel wide (a pixel is 2 / size units).
        coverage[idx] = (0.5 - dist * (size / 2)).clamp(0, 1)

    # Smooth illumination field: random low-frequency 2-D cosines per channel, as one
    # matrix product (much cheaper than upsampling a coarse noise image).
    wave = torch.cos(math.pi * (axis[:, None] + 1) / 2 * torch.arange(_CLUTTER_FREQS))  # [size, K]
    basis = (wave[:, None, :, None] * wave[None, :, None, :]).reshape(size * size, -1)
    img = clutter.reshape(n * 3, -1) @ basis.T.mul(255 * _CLUTTER / _CLUTTER_FREQS)
    img = img.view(n, 3, size, size)
    # Composite straight into [0, 255] so the caller only has to truncate to uint8.
    img += (255 * bg)[:, :, None, None]
    img += coverage[:, None] * (255 * (fg - bg))[:, :, None, None]
    img += noise.mul_(255 * _NOISE_STD)
    return img.clamp_(0, 255)


def generate_shapes(num_images: int, image_size: int = 32, num_classes: int = 10, seed: int = 0) -> Tuple[Tensor, Tensor]:
    """Generates a deterministic, class-balanced set of procedural shape images.

    Uses a local ``torch.Generator`` seeded with ``seed`` (global RNG state is neither
    read nor changed), so the same arguments always give bit-identical output. Use
    different seeds for different splits (e.g. train and val); their images never
    coincide because all nuisance parameters are continuous.

    Args:
        num_images: Number of images, >= 1.
        image_size: Side length H = W in pixels, >= 16.
        num_classes: Number of classes, 2 to ``len(CLASS_NAMES)``; uses the first
            ``num_classes`` entries of :data:`CLASS_NAMES`.
        seed: Seed of the generator.

    Returns:
        ``(images, labels)``: images uint8 ``[N, 3, H, W]`` and labels int64 ``[N]`` in
        ``[0, num_classes)``. Labels are ``i % num_classes``, shuffled, so class counts
        differ by at most one.

    Raises:
        ConfigError: (a ``ValueError``) if an argument is out of range.
    """
    if not 2 <= num_classes <= len(CLASS_NAMES):
        raise ConfigError(f"num_classes must be between 2 and {len(CLASS_NAMES)}, got {num_classes}")
    if num_images < 1:
        raise ConfigError(f"num_images must be >= 1, got {num_images}")
    if image_size < 16:
        raise ConfigError(f"image_size must be >= 16, got {image_size}")

    g = torch.Generator().manual_seed(int(seed))
    labels = (torch.arange(num_images) % num_classes)[torch.randperm(num_images, generator=g)]
    images = torch.empty(num_images, 3, image_size, image_size, dtype=torch.uint8)
    for start in range(0, num_images, _CHUNK):
        part = labels[start : start + _CHUNK]
        # +0.5 then truncation rounds to nearest, one pass cheaper than round().
        images[start : start + len(part)] = _chunk(part, image_size, num_classes, g).add_(0.5).to(torch.uint8)
    return images, labels
