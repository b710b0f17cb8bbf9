"""Decoding image files into uint8 arrays, with clear errors for bad files.

Files are decoded once (:mod:`contrastive.data.io.decode`) in a thread pool (the
decoders release the GIL), resized and center-cropped to a fixed size and written
straight into one uint8 array: the memory-mapped cache of
:mod:`contrastive.data.io.cache`, keyed by the file list, sizes, modification times and
decode settings, so the second run of a dataset starts in a second and the processes
of a node share one copy.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch

from contrastive.data.base import ImageArray
from contrastive.data.io.cache import cached_decode
from contrastive.data.io.decode import decode_rgb, resolve_decoder
from contrastive.core.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
BAD_IMAGE_POLICIES = ("error", "skip")
# 1: torch.save'd .pt files; 2: the memory-mapped file of contrastive.data.io.cache; 3: uint8 resize;
# 4: EXIF orientation applied by every decoder, the concrete decoder (auto resolved) in the key and header
CACHE_FORMAT = 4


def list_class_folders(root: Path) -> Tuple[List[str], List[Tuple[Path, int]]]:
    """``root/<class>/**/<image>`` -> (sorted class names, [(path, label)])."""
    if not root.is_dir():
        raise DatasetError(f"dataset folder '{root}' does not exist")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir())
    if not classes:
        raise DatasetError(f"dataset folder '{root}' holds no class sub-folders (expected {root}/<class>/<image>)")
    samples = []
    for label, name in enumerate(classes):
        for path in sorted((root / name).rglob("*")):
            if path.suffix.lower() in IMAGE_EXTENSIONS:
                samples.append((path, label))
    if not samples:
        raise DatasetError(f"dataset folder '{root}' holds no images with extensions {', '.join(IMAGE_EXTENSIONS)}")
    return classes, samples


def _cache_key(samples: Sequence[Tuple[Path, int]], settings: str) -> str:
    """Checksum of the source listing (path, label, size, mtime of every file) and the settings."""
    digest = hashlib.sha1(f"{CACHE_FORMAT}|{settings}".encode())
    for path, label in samples:
        stat = path.stat()
        digest.update(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def _check_policy(on_bad_image: str) -> None:
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise DatasetError(f"dataset.on_bad_image='{on_bad_image}' is not valid; choose one of {BAD_IMAGE_POLICIES}")


def bad_image_error(path: Path, err: Exception) -> DatasetError:
    return DatasetError(f"cannot decode image '{path}' ({err.__class__.__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}); "
                        "remove it or set dataset.on_bad_image=skip")


def decode_files(
    samples: Sequence[Tuple[Path, int]],
    size: int,
    on_bad_image: str = "error",
    cache_dir: Optional[Path] = None,
    desc: str = "decoding",
    resize: Optional[int] = None,
    decoder: str = "auto",
    verify: bool = True,
) -> Tuple[ImageArray, List[str]]:
    """Decode ``(path, label)`` pairs into an :class:`ImageArray` (memory-mapped when cached).

    Args:
        samples: Files and their labels.
        size: Side of the stored square images.
        on_bad_image: ``"error"`` raises a :class:`DatasetError` naming the first
            unreadable file; ``"skip"`` leaves such files out and returns their names.
        cache_dir: Where decoded arrays are cached (:mod:`contrastive.data.io.cache`);
            ``None`` disables the cache.
        desc: Progress-bar label.
        resize: Shorter side before the center crop (``None``: ``size``).
        decoder: See :data:`contrastive.data.io.decode.DECODERS`; the concrete one
            (``auto`` resolved) is part of the cache key and recorded in its header.
        verify: Check the cache's CRC-32 before using it.

    Returns:
        The decoded array and the list of skipped files.
    """
    _check_policy(on_bad_image)
    decoder = resolve_decoder(decoder)
    if not samples:
        raise DatasetError("no images to decode")

    def work(i: int) -> Optional[torch.Tensor]:
        try:
            return decode_rgb(samples[i][0], decoder, size, resize)  # the stream's evaluation batches: the same call
        except (RuntimeError, ValueError, OSError) as err:
            if on_bad_image == "error":
                raise bad_image_error(samples[i][0], err) from None
            return None

    labels = torch.tensor([label for _, label in samples], dtype=torch.long)
    settings = f"{size}|{resize}|{decoder}|{on_bad_image}"
    key = _cache_key(samples, settings) if cache_dir is not None else ""
    images, labels, skipped = cached_decode(cache_dir, key, labels, (3, size, size), work,
                                            [str(p) for p, _ in samples], desc, verify, {"decoder": decoder})
    if skipped:
        log.warning("skipped %d unreadable image(s): %s", len(skipped), ", ".join(skipped[:10]))
    if len(images) == 0:
        raise DatasetError(f"none of the {len(samples)} images could be decoded")
    return ImageArray(images, labels), skipped
