"""Decoding one image file to RGB uint8, and the per-image geometric transforms.

One function per step, shared by the in-memory path (:mod:`contrastive.data.io.folders`)
and the streaming path (:mod:`contrastive.data.stream`), so both give bit-identical
evaluation tensors for the same file.

* :func:`load_rgb`: file -> uint8 ``[3, H, W]``; any mode (grayscale, RGBA, CMYK,
  palette, 16-bit) becomes 8-bit RGB. Decoders: ``pil`` (Pillow) and ``torchvision``
  (``torchvision.io.decode_jpeg`` for JPEGs, Pillow for everything else); the default
  was chosen by ``benchmarks/bench_data.py`` (see BENCHMARKS.md).
* :func:`resize_center_crop`: the evaluation protocol (resize the shorter side, then
  center-crop, e.g. 256 -> 224).
* :func:`sample_crop_box` / :func:`crop_resize`: torchvision's ``RandomResizedCrop``
  (``get_params`` with a given generator) on the full-resolution image, and the flip.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from contrastive.core.errors import ConfigError

DECODERS = ("pil", "torchvision")
_JPEG_SUFFIXES = (".jpg", ".jpeg")


def _pil_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 ``[H, W, 3]``.

    16-bit and 32-bit integer modes (``I;16``, ``I``) are scaled to 8 bits by their
    bit depth rather than clipped; CMYK, palette, LA and RGBA go through Pillow's
    ``convert("RGB")`` (alpha is dropped, not composited).
    """
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        values = np.asarray(image, dtype=np.int64)
        shift = 8 if image.mode.startswith("I;16") or values.max(initial=0) < 65536 else 24
        gray = np.clip(values >> shift, 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "F":
        gray = np.clip(np.asarray(image, dtype=np.float32), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")  # avoids Pillow's warning on palette transparency
    return np.asarray(image.convert("RGB"))


def load_rgb(path: Path | str, decoder: str = "pil") -> torch.Tensor:
    """Decode an image file to uint8 ``[3, H, W]`` RGB.

    Args:
        path: The file.
        decoder: One of :data:`DECODERS`.

    Raises:
        OSError / ValueError / RuntimeError: The file cannot be decoded (the callers
        apply ``dataset.on_bad_image``).
    """
    if decoder == "torchvision" and str(path).lower().endswith(_JPEG_SUFFIXES):
        from torchvision.io import ImageReadMode, decode_jpeg, read_file

        try:
            return decode_jpeg(read_file(str(path)), mode=ImageReadMode.RGB)  # [3, H, W]
        except RuntimeError as err:  # a JPEG variant libjpeg cannot give as RGB: Pillow decides
            try:
                return _pil_tensor(path)
            except (OSError, ValueError):
                raise err from None  # unreadable for both: report the first decoder's reason
    if decoder not in DECODERS:
        raise ConfigError(f"dataset.decoder='{decoder}' is not valid; choose one of {', '.join(DECODERS)}")
    return _pil_tensor(path)


def load_rgb_bytes(data: bytes | memoryview, decoder: str = "torchvision") -> torch.Tensor:
    """:func:`load_rgb` of an encoded image held in memory (a shard entry): uint8 ``[3, H, W]``."""
    if decoder == "torchvision" and bytes(data[:3]) == b"\xff\xd8\xff":  # the JPEG magic number
        from torchvision.io import ImageReadMode, decode_jpeg

        try:
            return decode_jpeg(torch.frombuffer(bytearray(data), dtype=torch.uint8), mode=ImageReadMode.RGB)  # [3, H, W]
        except RuntimeError as err:
            try:
                return _pil_tensor(io.BytesIO(data))
            except (OSError, ValueError):
                raise err from None
    if decoder not in DECODERS:
        raise ConfigError(f"dataset.decoder='{decoder}' is not valid; choose one of {', '.join(DECODERS)}")
    return _pil_tensor(io.BytesIO(data))


def _pil_tensor(path: Path | str | io.BytesIO) -> torch.Tensor:
    with Image.open(path) as image:
        array = _pil_rgb(image)  # [H, W, 3]
    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).contiguous()  # [3, H, W]; Pillow's view is read-only


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 ``[3, h, w]`` -> uint8 ``[3, height, width]``, bilinear with antialiasing
    (torchvision's tensor ``Resize(antialias=True)``).

    On CPU the uint8 kernel is used directly (torchvision's fast path): 2.3-3x faster
    than converting to float and back, within 1 grey level of it (benchmarks/bench_data.py).
    """
    if tuple(image.shape[-2:]) == (height, width):
        return image
    if image.device.type == "cpu":
        return F.interpolate(image[None], size=(height, width), mode="bilinear", antialias=True, align_corners=False)[0]
    out = F.interpolate(image[None].float(), size=(height, width), mode="bilinear", antialias=True, align_corners=False)
    return out[0].round_().clamp_(0, 255).to(torch.uint8)


def resize_center_crop(image: torch.Tensor, size: int, resize: int | None = None) -> torch.Tensor:
    """Evaluation protocol: resize the shorter side to ``resize``, center-crop ``size``.

    Args:
        image: uint8 ``[3, H, W]``.
        size: Output side.
        resize: Shorter side before the crop (``None``: ``size``, i.e. crop fraction 1).

    Returns:
        uint8 ``[3, size, size]``.
    """
    resize = size if resize is None else int(resize)
    h, w = image.shape[-2:]
    scale = resize / min(h, w)
    nh, nw = max(resize, round(h * scale)), max(resize, round(w * scale))
    image = _resize(image, nh, nw)
    top, left = (nh - size) // 2, (nw - size) // 2
    return image[:, top : top + size, left : left + size].contiguous()


def eval_resize(size: int, crop_fraction: float) -> int:
    """Shorter side before the center crop: ``round(size / crop_fraction)`` (224 / 0.875 = 256)."""
    if not 0.0 < float(crop_fraction) <= 1.0:
        raise ConfigError(f"dataset.eval_crop_fraction must be in (0, 1], got {crop_fraction}")
    return int(round(size / float(crop_fraction)))


def sample_crop_box(height: int, width: int, scale: Tuple[float, float], ratio: Tuple[float, float],
                    generator: torch.Generator) -> Tuple[int, int, int, int]:
    """``torchvision.transforms.RandomResizedCrop.get_params`` with an explicit generator.

    The area is a fraction in ``scale`` of the *original* image area, the aspect ratio
    ``w / h`` log-uniform in ``ratio``; 10 tries, then the central crop clipped to the
    ratio range. Returns ``(top, left, h, w)`` in pixels.
    """
    area = height * width
    log_ratio = torch.log(torch.tensor(ratio))  # float32, as torchvision: the same draws give the same boxes
    for _ in range(10):
        target_area = area * torch.empty(1).uniform_(scale[0], scale[1], generator=generator).item()
        aspect = torch.exp(torch.empty(1).uniform_(log_ratio[0], log_ratio[1], generator=generator)).item()
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(torch.randint(0, height - h + 1, size=(1,), generator=generator).item())
            left = int(torch.randint(0, width - w + 1, size=(1,), generator=generator).item())
            return top, left, h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def crop_resize(image: torch.Tensor, box: Tuple[int, int, int, int], size: int, flip: bool) -> torch.Tensor:
    """uint8 ``[3, H, W]``, box ``(top, left, h, w)`` -> uint8 ``[3, size, size]`` (antialiased), flipped."""
    top, left, h, w = box
    out = _resize(image[:, top : top + h, left : left + w], size, size)
    return out.flip(-1) if flip else out


def pad_shift_crop(image: torch.Tensor, size: int, padding: int, generator: torch.Generator, flip: bool) -> torch.Tensor:
    """CIFAR-style crop of an already ``size``-square image: shift by up to ``padding``
    pixels with zero fill (as :class:`contrastive.augment.pipelines.SupervisedAugment`), then flip."""
    dy, dx = (int(v) for v in torch.randint(-padding, padding + 1, (2,), generator=generator))
    padded = F.pad(image, (padding, padding, padding, padding))  # [3, S+2p, S+2p]
    out = padded[:, padding + dy : padding + dy + size, padding + dx : padding + dx + size]
    return (out.flip(-1) if flip else out).contiguous()
