"""Frozen features of a transfer dataset's splits, cached per checkpoint, dataset and split.

Kornblith, Shlens and Le 2019 (as the protocol is summarised from them; their text is not
in our copy of the papers) train the linear classifier on features of the resized,
centre-cropped image: each image is decoded, its shorter side resized to the encoder's
input size and centre-cropped (:func:`to_uint8`), then normalised with the training run's
mean and std (``EvalTransform``). Extraction runs on the GPU when there is one, in bf16
autocast where ``eval.amp`` allows it (``tests/test_transfer_extract.py`` compares the
scores with fp32).

Cache: ``<ckpt>.eval/transfer/<dataset>-<split>-<key[:16]>.pt``; the key hashes the checkpoint
bytes, the dataset, the split settings, the image size, the normalisation and the autocast
flag, so a changed checkpoint or split never reuses stale features.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

from contrastive.evaluation.features import config_sha256

log = logging.getLogger("contrastive")

#: Bump when extraction changes in a way that makes old caches wrong.
TRANSFER_FEATURE_VERSION = 1

Features = Tuple[torch.Tensor, torch.Tensor]  # (float32 [N, D], int64 [N] or float multi-hot [N, C])


def to_uint8(image, size: int) -> torch.Tensor:
    """PIL image -> uint8 ``[3, size, size]``: RGB, shorter side resized to ``size`` (bilinear,
    antialiased), centre crop."""
    from torchvision.transforms.v2 import functional as TF

    x = TF.pil_to_tensor(image.convert("RGB"))  # [3, H, W] uint8
    x = TF.resize(x, [size], antialias=True)
    return TF.center_crop(x, [size, size])


class _Resized(Dataset):
    def __init__(self, base: Dataset, size: int) -> None:
        self.base, self.size = base, size

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        image, label = self.base[index]
        label = label if isinstance(label, torch.Tensor) else torch.tensor(int(label))
        return to_uint8(image, self.size), label


def extract_split(embed: Callable[[torch.Tensor], torch.Tensor], dataset: Dataset, size: int,
                  transform: torch.nn.Module, batch_size: int, device: torch.device, amp: bool,
                  workers: int) -> Features:
    """Embed every image of ``dataset`` in order (call inside ``frozen_encoder``).

    Args:
        embed: normalised float ``[B, 3, S, S]`` -> ``[B, D]`` (``model.embed``).
        dataset: ``(PIL image, label)`` items.
        size: S.
        transform: uint8 -> normalised float (``EvalTransform``).
        batch_size: images per forward pass.
        device: where the encoder runs.
        amp: bf16 autocast.
        workers: DataLoader worker processes decoding images.

    Returns:
        (float32 features ``[N, D]``, labels) on the CPU.
    """
    loader = DataLoader(_Resized(dataset, size), batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda")
    feats, labels = [], []
    for images, y in loader:
        x = transform(images.to(device, non_blocking=True))  # [B, 3, S, S]
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            feats.append(embed(x).float().cpu())  # [B, D]
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def split_key(checkpoint_sha256: str, dataset: str, split: str, settings: Dict[str, Any]) -> str:
    """Cache key of one split's features."""
    return config_sha256({"checkpoint": checkpoint_sha256, "dataset": dataset, "split": split,
                          "settings": settings, "version": TRANSFER_FEATURE_VERSION})


def cached_features(folder: Optional[Path], key: str, name: str, compute: Callable[[], Features]) -> Tuple[Features, bool]:
    """Load ``<folder>/<name>-<key[:16]>.pt`` or compute and save it (atomically); ``folder=None``
    disables the cache. Returns (features, loaded from the cache)."""
    if folder is None:
        return compute(), False
    path = folder / f"{name}-{key[:16]}.pt"
    if path.is_file():
        try:
            data = torch.load(path, map_location="cpu", weights_only=True)
            if data["key"] == key:
                return (data["x"], data["y"]), True
        except Exception as err:  # a broken cache is rebuilt, never trusted
            log.warning("ignoring unreadable transfer feature cache %s (%s)", path, err)
    start = time.perf_counter()
    x, y = compute()
    log.info("%s: %d features in %.1f s", name, len(x), time.perf_counter() - start)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save({"key": key, "x": x, "y": y}, tmp)
    os.replace(tmp, path)
    return (x, y), False
