"""Decoding one image to RGB uint8, and the per-image geometric transforms.

One decode function, :func:`decode_rgb`, for every path: the in-memory folder loading
and its decoded-image cache (:mod:`contrastive.data.io.folders`), the file stream
workers (:mod:`contrastive.data.stream`) and the shard reader
(:mod:`contrastive.data.shards.reader`), so all give identical tensors for one file.

* :func:`decode_rgb`: file or encoded bytes -> uint8 ``[3, H, W]`` RGB, optionally with
  the evaluation protocol (resize the shorter side, center crop). ``dataset.decoder``
  (:data:`DECODERS`): ``torchcodec`` (the optional extra ``contrastive[torchcodec]``),
  ``torchvision`` (``torchvision.io.decode_image``) or ``pil`` (Pillow); ``auto``
  (:func:`resolve_decoder`) takes the first of these that works on this machine. The
  two libraries decode JPEG and PNG; every other format, and a JPEG or PNG variant they
  refuse, goes through Pillow. Every decoder gives the same tensor: the EXIF orientation
  is applied, any mode (grayscale, LA, RGBA, palette, CMYK, 16-bit) becomes 8-bit RGB
  (alpha dropped, not composited; 16 bits scaled by their depth, ``>> 8``), and a file
  no decoder reads fails with Pillow's reason whichever decoder was asked for.
* :func:`resize_center_crop`: the evaluation protocol (resize the shorter side, then
  center-crop, e.g. 256 -> 224).
* :func:`sample_crop_box` / :func:`crop_resize`: torchvision's ``RandomResizedCrop``
  (``get_params`` with a given generator) on the full-resolution image, and the flip.
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps, UnidentifiedImageError

from contrastive.core.errors import ConfigError

DECODERS = ("auto", "torchcodec", "torchvision", "pil")
_LIBRARIES = ("torchcodec", "torchvision")  # the order ``auto`` tries them in
_MAGIC = {b"\xff\xd8\xff": "jpeg", b"\x89PNG\r\n\x1a\n": "png"}  # the formats the libraries decode
_TORCHVISION_DEPRECATION = "The image decoding and encoding capabilities of TorchVision are deprecated"
Source = bytes | bytearray | memoryview | Path | str


def resolve_decoder(name: str) -> str:
    """The concrete decoder ``dataset.decoder=name`` uses on this machine.

    Args:
        name: One of :data:`DECODERS`.

    Returns:
        ``"torchcodec"``, ``"torchvision"`` or ``"pil"``: for ``auto``, torchcodec when it
        is installed and works, else torchvision when its image decoders load, else Pillow.

    Raises:
        ConfigError: ``name`` is not a decoder, or names a library that does not work here.
    """
    name = str(name)
    if name not in DECODERS:
        raise ConfigError(f"dataset.decoder='{name}' is not valid; choose one of {', '.join(DECODERS)}")
    if name == "auto":
        return next((lib for lib in _LIBRARIES if _unavailable(lib) is None), "pil")
    reason = _unavailable(name)
    if reason is not None:
        raise ConfigError(f"dataset.decoder={name} cannot decode on this machine ({reason}); use dataset.decoder=auto or pil")
    return name


@lru_cache(maxsize=None)
def _unavailable(name: str) -> Optional[str]:
    """``None`` when decoder ``name`` works here (a 2x1 JPEG tagged "rotate 90" comes out
    1x2), else why not. Checked once per process."""
    if name == "pil":
        return None
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90 degrees clockwise
    buffer = io.BytesIO()
    Image.new("RGB", (2, 1), (200, 30, 90)).save(buffer, format="JPEG", exif=exif.tobytes())
    try:
        out = _LIBRARY_DECODE[name](torch.frombuffer(bytearray(buffer.getvalue()), dtype=torch.uint8), "jpeg")
    except ImportError:
        return f"{name} is not installed" + (": pip install 'contrastive[torchcodec]'" if name == "torchcodec" else "")
    except (RuntimeError, OSError, ValueError, TypeError) as err:
        return f"{name} failed on a test image: {err.__class__.__name__}"
    if tuple(out.shape) != (3, 2, 1):
        return f"this {name} version does not apply the EXIF orientation; upgrade it"
    return None


def decode_rgb(source: Source, decoder: str = "auto", size: Optional[int] = None, resize: Optional[int] = None) -> torch.Tensor:
    """Decode an image file, or its encoded bytes (a shard entry), to uint8 RGB.

    Args:
        source: A path, or the encoded image.
        decoder: One of :data:`DECODERS` (``auto``: :func:`resolve_decoder`).
        size: ``None``: the full image. Else the evaluation protocol: the shorter side
            resized to ``resize`` with antialiasing, then center-cropped to ``size``.
        resize: Shorter side before the crop (``None``: ``size``).

    Returns:
        uint8 ``[3, H, W]``, or ``[3, size, size]`` with ``size``.

    Raises:
        ConfigError: ``decoder`` is not valid here (see :func:`resolve_decoder`).
        OSError / ValueError / RuntimeError: The image cannot be decoded (the callers
            apply ``dataset.on_bad_image``).
    """
    name = resolve_decoder(decoder)
    if isinstance(source, (str, Path)):
        data = np.fromfile(source, dtype=np.uint8)  # writable: the libraries take it without a copy
    else:
        data = np.frombuffer(bytearray(source), dtype=np.uint8)
    image = None
    fmt = next((f for magic, f in _MAGIC.items() if data[: len(magic)].tobytes() == magic), None)
    if name != "pil" and fmt is not None:
        try:
            image = _LIBRARY_DECODE[name](torch.from_numpy(data), fmt)
        except (RuntimeError, ValueError):
            image = None  # a variant the library cannot give as RGB, or a damaged file: Pillow decides
    if image is None:
        image = _pil_decode(data)
    image = image.contiguous()
    return image if size is None else resize_center_crop(image, size, resize)


def _to_8bit(image: torch.Tensor) -> torch.Tensor:
    """A 16-bit decode (uint16) scaled by its bit depth as Pillow does: the high byte."""
    return image if image.dtype == torch.uint8 else (image.to(torch.int32) >> 8).to(torch.uint8)


def _torchcodec(data: torch.Tensor, fmt: str) -> torch.Tensor:
    """torchcodec (it applies the EXIF orientation of JPEGs and PNGs itself)."""
    from torchcodec.decoders import decode_jpeg, decode_png

    if fmt == "jpeg":
        return decode_jpeg(data, mode="RGB")
    return _to_8bit(decode_png(data, mode="RGB", output_dtype="auto"))


class _QuietTorchvision:
    """Ignores torchvision's DeprecationWarning of its image decoders while one of them runs.

    Not ``warnings.catch_warnings``: it swaps the process-wide filter list, so threads
    decoding at once would restore each other's lists. The first decoding thread adds
    the one filter, the last removes it.
    """

    def __init__(self) -> None:
        self._lock, self._users, self._entry = threading.Lock(), 0, None

    def __enter__(self) -> None:
        with self._lock:
            if self._users == 0:
                warnings.filterwarnings("ignore", message=_TORCHVISION_DEPRECATION, category=DeprecationWarning)
                self._entry = warnings.filters[0]
            self._users += 1

    def __exit__(self, *exc) -> None:
        with self._lock:
            self._users -= 1
            if self._users == 0 and self._entry in warnings.filters:
                warnings.filters.remove(self._entry)


_QUIET_TORCHVISION = _QuietTorchvision()


def _torchvision(data: torch.Tensor, fmt: str) -> torch.Tensor:
    """``torchvision.io.decode_image`` (deprecated since torchvision 0.29; its warning is silenced here)."""
    from torchvision.io import ImageReadMode, decode_image

    with _QUIET_TORCHVISION:
        return _to_8bit(decode_image(data, mode=ImageReadMode.RGB, apply_exif_orientation=True))


_LIBRARY_DECODE = {"torchcodec": _torchcodec, "torchvision": _torchvision}


def _pil_rgb(image: Image.Image) -> np.ndarray:
    """Any Pillow mode -> uint8 ``[H, W, 3]``: 16/32-bit integers scaled by their bit depth,
    not clipped; CMYK, palette, LA and RGBA through ``convert("RGB")`` (alpha dropped)."""
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


def _pil_decode(data: np.ndarray) -> torch.Tensor:
    """Pillow: uint8 ``[3, H, W]``, EXIF orientation applied (``ImageOps.exif_transpose``)."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            ImageOps.exif_transpose(image, in_place=True)
            array = _pil_rgb(image)  # [H, W, 3]
    except UnidentifiedImageError:
        raise OSError(f"not an image format Pillow reads ({len(data)} bytes)") from None
    return torch.from_numpy(np.array(array, copy=True)).permute(2, 0, 1).contiguous()  # [3, H, W]; Pillow's view is read-only


def _resize(image: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """uint8 ``[3, h, w]`` -> uint8 ``[3, height, width]``, bilinear with antialiasing
    (torchvision's tensor ``Resize(antialias=True)``).

    On CPU the uint8 kernel is used directly (torchvision's fast path): 2.3-3x faster
    than converting to float and back, within 1 grey level of it (benchmarks/speed/components/bench_data.py).
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
