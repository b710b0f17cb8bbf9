"""Decoding image files into uint8 arrays, with clear errors for bad files.

Files are decoded once with ``torchvision.io`` in a thread pool (the decoders
release the GIL), resized to a fixed size and stacked into one uint8 tensor. The
result is cached on disk, keyed by the file list, sizes and modification times, so
the second run of a dataset starts in a second.
"""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torchvision.io import ImageReadMode, decode_image, read_file
from tqdm.auto import tqdm

from contrastive.data.base import ImageArray
from contrastive.errors import DatasetError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
BAD_IMAGE_POLICIES = ("error", "skip")


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


def _decode(path: Path, size: int) -> torch.Tensor:
    """One file -> uint8 [3, size, size]: RGB (grayscale converted), shorter side
    resized with antialiasing, then center-cropped."""
    image = decode_image(read_file(str(path)), mode=ImageReadMode.RGB)  # [3, h, w] uint8
    h, w = image.shape[-2:]
    if (h, w) != (size, size):
        scale = size / min(h, w)
        nh, nw = max(size, round(h * scale)), max(size, round(w * scale))
        image = F.interpolate(image[None].float(), size=(nh, nw), mode="bilinear", antialias=True, align_corners=False)
        top, left = (nh - size) // 2, (nw - size) // 2
        image = image[0, :, top : top + size, left : left + size].round().clamp(0, 255).to(torch.uint8)
    return image


def _cache_key(samples: Sequence[Tuple[Path, int]], size: int) -> str:
    digest = hashlib.sha1(str(size).encode())
    for path, label in samples:
        stat = path.stat()
        digest.update(f"{path}|{label}|{stat.st_size}|{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:20]


def decode_files(
    samples: Sequence[Tuple[Path, int]],
    size: int,
    on_bad_image: str = "error",
    cache_dir: Optional[Path] = None,
    desc: str = "decoding",
) -> Tuple[ImageArray, List[str]]:
    """Decode ``(path, label)`` pairs into an :class:`ImageArray`.

    Args:
        samples: Files and their labels.
        size: Side of the stored square images.
        on_bad_image: ``"error"`` raises a :class:`DatasetError` naming the first
            unreadable file; ``"skip"`` leaves such files out and returns their names.
        cache_dir: Where decoded arrays are cached; ``None`` disables the cache.
        desc: Progress-bar label.

    Returns:
        The decoded array and the list of skipped files.
    """
    if on_bad_image not in BAD_IMAGE_POLICIES:
        raise DatasetError(f"dataset.on_bad_image='{on_bad_image}' is not valid; choose one of {BAD_IMAGE_POLICIES}")
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / f"{_cache_key(samples, size)}-{on_bad_image}.pt"
        if cache_file.is_file():
            cached = torch.load(cache_file, weights_only=True)
            return ImageArray(cached["images"], cached["labels"]), list(cached["skipped"])

    def work(item: Tuple[Path, int]) -> Optional[torch.Tensor]:
        try:
            return _decode(item[0], size)
        except (RuntimeError, ValueError, OSError) as err:
            if on_bad_image == "error":
                raise DatasetError(
                    f"cannot decode image '{item[0]}' ({err.__class__.__name__}: {str(err).splitlines()[0][:120]}); "
                    "remove it or set dataset.on_bad_image=skip"
                ) from None
            return None

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        decoded = list(tqdm(pool.map(work, samples), total=len(samples), desc=desc, leave=False, mininterval=1.0,
                            disable=None))  # None: shown on a terminal, silent in logs and pipes
    keep = [i for i, img in enumerate(decoded) if img is not None]
    skipped = [str(samples[i][0]) for i, img in enumerate(decoded) if img is None]
    if skipped:
        log.warning("skipped %d unreadable image(s): %s", len(skipped), ", ".join(skipped[:10]))
    if not keep:
        raise DatasetError(f"none of the {len(samples)} images could be decoded")
    images = torch.stack([decoded[i] for i in keep])  # [N, 3, size, size] uint8
    labels = torch.tensor([samples[i][1] for i in keep], dtype=torch.long)
    if cache_file is not None:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache_file.with_suffix(".tmp")
        torch.save({"images": images, "labels": labels, "skipped": skipped}, tmp)
        os.replace(tmp, cache_file)
    return ImageArray(images, labels), skipped
