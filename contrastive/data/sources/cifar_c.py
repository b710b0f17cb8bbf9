"""CIFAR-100-C (Hendrycks & Dietterich 2019) and the corruption-error table of ImCLR's Table 4.

ImCLR (Chen, Sinha & Kyrillidis 2020), Table 4: the test error of VGG16-CIFAR100 with and without
ImCLR on CIFAR-100-C, 19 corruptions x 5 severities, and its mean. The archive's standard layout
(``CIFAR-100-C/`` after unpacking ``CIFAR-100-C.tar``) is one ``<corruption>.npy`` per corruption,
uint8 ``[5 * 10000, 32, 32, 3]`` (severity 1 first, each block the 10,000 CIFAR-100 test images in
order), and ``labels.npy``, int ``[5 * 10000]``. Arrays are memory-mapped: one severity block is
read at a time.

* :func:`load_corruption`: one corruption (one severity or all) as an :class:`ImageArray`.
* :func:`corruption_errors`: test error (%) per corruption and severity of a ``predict`` function.
* :func:`error_table`: the Table 4 markdown (one row per corruption, its mean over severities,
  the per-severity errors and the mean over all corruptions).
* the dataset ``cifar100_c`` (``configs/dataset/cifar100_c.yaml``): CIFAR-100's train split and
  one corruption/severity as the val split, so ``linear_eval.py`` and the kNN monitor work on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Dict, Iterable, Optional, Sequence

import numpy as np
import torch

from contrastive.data.base import DatasetSplits, ImageArray
from contrastive.core.errors import DatasetError
from contrastive.core.registry import DATASETS

#: The 19 corruptions of the CIFAR-100-C archive (15 benchmark + 4 extra, as in ImCLR's Table 4).
CORRUPTIONS = (
    "brightness", "contrast", "defocus_blur", "elastic_transform", "fog", "frost", "gaussian_blur",
    "gaussian_noise", "glass_blur", "impulse_noise", "jpeg_compression", "motion_blur", "pixelate",
    "saturate", "shot_noise", "snow", "spatter", "speckle_noise", "zoom_blur",
)
SEVERITIES = (1, 2, 3, 4, 5)


def _folder(root: Path | str) -> Path:
    """``root`` itself when it holds ``labels.npy``, else ``root/CIFAR-100-C``."""
    root = Path(root).expanduser()
    if (root / "labels.npy").is_file():
        return root
    if (root / "CIFAR-100-C" / "labels.npy").is_file():
        return root / "CIFAR-100-C"
    raise DatasetError(f"CIFAR-100-C not found: neither '{root}/labels.npy' nor '{root}/CIFAR-100-C/labels.npy' exists; "
                       "unpack CIFAR-100-C.tar (Hendrycks & Dietterich 2019) there")


def load_corruption(root: Path | str, corruption: str, severity: int = 0) -> ImageArray:
    """Images ``[N, 3, 32, 32]`` uint8 and labels of one corruption.

    Args:
        root: The ``CIFAR-100-C`` folder (or the folder holding it).
        corruption: One of :data:`CORRUPTIONS` (any ``<name>.npy`` of the folder is accepted).
        severity: 1-5 for one severity block, 0 for all five.
    """
    folder = _folder(root)
    path = folder / f"{corruption}.npy"
    if not path.is_file():
        present = sorted(p.stem for p in folder.glob("*.npy") if p.stem != "labels")
        raise DatasetError(f"corruption '{corruption}' not in {folder}; present: {', '.join(present) or 'none'}")
    if severity not in (0, *SEVERITIES):
        raise DatasetError(f"CIFAR-100-C severity must be 0 (all) or one of 1-5, got {severity!r}")
    images = np.load(path, mmap_mode="r")  # [5 * n, 32, 32, 3]
    labels = np.load(folder / "labels.npy", mmap_mode="r")  # [5 * n]
    if images.ndim != 4 or images.shape[-1] != 3 or len(images) != len(labels) or len(images) % 5:
        raise DatasetError(f"{path}: expected uint8 [5*n, H, W, 3] with as many labels, got {images.shape} and {labels.shape}")
    n = len(images) // 5
    rows = slice(0, 5 * n) if severity == 0 else slice((severity - 1) * n, severity * n)
    x = torch.from_numpy(np.array(images[rows], dtype=np.uint8)).permute(0, 3, 1, 2).contiguous()  # [n, 3, H, W]
    return ImageArray(x, torch.from_numpy(np.array(labels[rows], dtype=np.int64)))


@torch.no_grad()
def corruption_errors(predict: Callable[[torch.Tensor], torch.Tensor], root: Path | str,
                      corruptions: Optional[Iterable[str]] = None, batch_size: int = 500) -> Dict[str, Dict[int, float]]:
    """Test error (%) of ``predict`` per corruption and severity.

    Args:
        predict: uint8 ``[B, 3, H, W]`` -> class scores ``[B, C]`` (the caller normalises and builds
            the method's test-time input, e.g. ImCLR's self-concatenation).
        root: The ``CIFAR-100-C`` folder.
        corruptions: Default: every corruption present in the folder.
        batch_size: Images per ``predict`` call.

    Returns:
        ``{corruption: {severity: error %}}``.
    """
    folder = _folder(root)
    names = list(corruptions) if corruptions is not None else sorted(p.stem for p in folder.glob("*.npy") if p.stem != "labels")
    out: Dict[str, Dict[int, float]] = {}
    for name in names:
        out[name] = {}
        for severity in SEVERITIES:
            split = load_corruption(folder, name, severity)
            wrong = 0
            for start in range(0, len(split), batch_size):
                scores = predict(split.images[start:start + batch_size])  # [b, C]
                wrong += int((scores.argmax(1).cpu() != split.labels[start:start + batch_size]).sum())
            out[name][severity] = 100.0 * wrong / len(split)
    return out


def mean_error(errors: Dict[str, Dict[int, float]]) -> float:
    """Mean test error (%) over every corruption and severity (Table 4's last row)."""
    values = [e for per in errors.values() for e in per.values()]
    return float(sum(values) / len(values))


def error_table(columns: Dict[str, Dict[str, Dict[int, float]]]) -> str:
    """Markdown: one row per corruption with each model's mean error over the 5 severities (and
    the per-severity errors), then the mean over all corruptions.

    Args:
        columns: ``{model name: corruption_errors(...)}``, e.g. ``{"base": ..., "ImCLR": ...}``.
    """
    models: Sequence[str] = list(columns)
    names = sorted({c for errs in columns.values() for c in errs})
    lines = ["| corruption | " + " | ".join(f"{m} error % (sev. 1-5)" for m in models) + " |",
             "|---" * (len(models) + 1) + "|"]
    for name in names:
        cells = []
        for m in models:
            per = columns[m].get(name)
            cells.append("-" if per is None else f"{sum(per.values()) / len(per):.2f} ("
                         + " / ".join(f"{per[s]:.1f}" for s in sorted(per)) + ")")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("| **mean** | " + " | ".join(f"**{mean_error(columns[m]):.2f}**" for m in models) + " |")
    return "\n".join(lines)


@DATASETS.register("cifar100_c")
def cifar100_c(cfg) -> DatasetSplits:
    """CIFAR-100's train split (``dataset.root``) with one CIFAR-100-C corruption as the val split
    (``dataset.corruption``, ``dataset.severity``: 1-5 or 0 for all, ``dataset.c_root``)."""
    base = DATASETS.get("cifar100")(cfg)
    corruption = str(cfg.corruption)
    if corruption not in CORRUPTIONS:
        raise DatasetError(f"dataset.corruption='{corruption}' is not valid; choose one of {', '.join(CORRUPTIONS)}")
    base.val = load_corruption(str(cfg.c_root), corruption, int(cfg.severity))
    return base
