"""ImageNet (ILSVRC-2012) and ImageNet-100, and the command that prepares the val folder.

Layout (the standard one of ``torchvision.datasets.ImageFolder`` users)::

    <root>/train/<wnid>/*.JPEG     1,281,167 images in 1000 class folders
    <root>/val/<wnid>/*.JPEG       50,000 images, 50 per class

The official val archive is flat (``ILSVRC2012_val_00000001.JPEG`` ...). Sort it into
class folders with the devkit's ground truth::

    python -m contrastive.data.sources.imagenet prepare-val <root>/val ILSVRC2012_devkit_t12.tar.gz

(the devkit archive or its unpacked folder; its ``data/meta.mat`` maps the
``ILSVRC2012_ID`` of ``data/ILSVRC2012_validation_ground_truth.txt`` to WordNet ids).

``imagenet100`` is the 100-class subset of CMC (Tian et al., "Contrastive Multiview
Coding", 2019), whose class list ``imagenet100.txt`` (HobbitLong/CMC) is
``dataset.classes`` in ``configs/dataset/imagenet100.yaml``; it reads the same folders.
"""

from __future__ import annotations

import argparse
import io
import sys
import tarfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from contrastive.data.base import DatasetSplits
from contrastive.data.sources.standard import _root, file_splits
from contrastive.data.io.folders import IMAGE_EXTENSIONS
from contrastive.core.errors import DatasetError
from contrastive.core.registry import DATASETS

_GROUND_TRUTH = "data/ILSVRC2012_validation_ground_truth.txt"
_META = "data/meta.mat"


def _images(folder: Path) -> List[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)


def class_files(split_dir: Path, classes: Sequence[str], split: str) -> List[Tuple[Path, int]]:
    """``[(path, label)]`` of ``split_dir/<class>/*`` for the given classes, in class order.

    Raises:
        DatasetError: The folder or a class folder is missing or empty (named, with how to fix it).
    """
    if not split_dir.is_dir():
        raise DatasetError(f"ImageNet {split} folder '{split_dir}' does not exist (expected {split_dir}/<wnid>/*.JPEG)")
    missing = [c for c in classes if not (split_dir / c).is_dir()]
    if missing and split == "val" and not any(d.is_dir() for d in split_dir.iterdir()):
        raise DatasetError(f"'{split_dir}' holds no class folders: it looks like the flat official val folder; sort it with "
                           f"`python -m contrastive.data.sources.imagenet prepare-val {split_dir} <ILSVRC2012_devkit_t12.tar.gz>`")
    if missing:
        raise DatasetError(f"{len(missing)} of {len(classes)} classes are missing from '{split_dir}': "
                           f"{', '.join(missing[:10])}{' ...' if len(missing) > 10 else ''}")
    samples: List[Tuple[Path, int]] = []
    for label, name in enumerate(classes):
        files = _images(split_dir / name)
        if not files:
            raise DatasetError(f"class folder '{split_dir / name}' of the {split} split holds no images")
        samples.extend((p, label) for p in files)
    return samples


def _imagenet_splits(cfg: Any, classes: Optional[Sequence[str]], label: str) -> DatasetSplits:
    root = _root(cfg)
    train_dir, val_dir = root / str(cfg.train_dir), root / str(cfg.val_dir)
    if classes is None:
        if not train_dir.is_dir():
            raise DatasetError(f"dataset '{label}' not found at '{train_dir}'; set dataset.root to the folder holding train/ and val/")
        classes = sorted(d.name for d in train_dir.iterdir() if d.is_dir())
        if not classes:
            raise DatasetError(f"'{train_dir}' holds no class folders (expected {train_dir}/<wnid>/*.JPEG)")
    classes = [str(c) for c in classes]
    return file_splits(cfg, classes, class_files(train_dir, classes, "train"), class_files(val_dir, classes, "val"), label)


@DATASETS.register("imagenet")
def imagenet(cfg: Any) -> DatasetSplits:
    """ILSVRC-2012: every class folder of ``train/``; ``val/`` must hold the same classes."""
    return _imagenet_splits(cfg, None, "imagenet")


@DATASETS.register("imagenet100")
def imagenet100(cfg: Any) -> DatasetSplits:
    """CMC's ImageNet-100: the classes of ``dataset.classes`` read from the ImageNet folders."""
    classes = list(cfg.classes)
    if len(classes) != len(set(classes)):
        raise DatasetError("dataset.classes lists a class twice")
    return _imagenet_splits(cfg, classes, "imagenet100")


# ------------------------------------------------------------------ prepare-val
def _devkit_files(devkit: Path) -> Tuple[bytes, bytes]:
    """``(meta.mat, ground truth txt)`` bytes from the devkit archive or its unpacked folder."""
    if devkit.is_dir():
        base = devkit / "ILSVRC2012_devkit_t12" if (devkit / "ILSVRC2012_devkit_t12").is_dir() else devkit
        meta, truth = base / _META, base / _GROUND_TRUTH
        if not meta.is_file() or not truth.is_file():
            raise DatasetError(f"devkit folder '{base}' lacks {_META} or {_GROUND_TRUTH}")
        return meta.read_bytes(), truth.read_bytes()
    if not devkit.is_file():
        raise DatasetError(f"devkit '{devkit}' does not exist (ILSVRC2012_devkit_t12.tar.gz or its unpacked folder)")
    found: Dict[str, bytes] = {}
    with tarfile.open(devkit) as tar:
        for member in tar.getmembers():
            for want in (_META, _GROUND_TRUTH):
                if member.isfile() and member.name.endswith(want):
                    found[want] = tar.extractfile(member).read()
    if len(found) != 2:
        raise DatasetError(f"devkit archive '{devkit}' lacks {_META} or {_GROUND_TRUTH}")
    return found[_META], found[_GROUND_TRUTH]


def val_wnids(meta_mat: bytes, ground_truth: bytes) -> List[str]:
    """WordNet id of every val image, in file-name order (image k is line k of the ground truth)."""
    import scipy.io

    synsets = scipy.io.loadmat(io.BytesIO(meta_mat), squeeze_me=True)["synsets"]
    wnid_of = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    ids = [int(line) for line in ground_truth.decode().split()]
    unknown = sorted(set(ids) - set(wnid_of))
    if unknown:
        raise DatasetError(f"the ground truth names ILSVRC2012_IDs the devkit's meta.mat does not define: {unknown[:5]}")
    return [wnid_of[i] for i in ids]


def prepare_val(val_dir: Path, wnids: Sequence[str]) -> int:
    """Move the flat ``val_dir/*.JPEG`` into ``val_dir/<wnid>/``; returns how many moved.

    Already sorted images are left alone, so the command can be re-run after an interruption.
    """
    flat = sorted(p for p in val_dir.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    sorted_already = sum(1 for d in val_dir.iterdir() if d.is_dir() for _ in d.iterdir())
    if len(flat) + sorted_already != len(wnids):
        raise DatasetError(f"'{val_dir}' holds {len(flat)} unsorted + {sorted_already} sorted images, but the ground truth "
                           f"lists {len(wnids)}")
    wnid_of_name = {f"ILSVRC2012_val_{k + 1:08d}": w for k, w in enumerate(wnids)}
    for path in flat:
        if path.stem not in wnid_of_name:
            raise DatasetError(f"'{path.name}' is not an ILSVRC2012 val file name (ILSVRC2012_val_<8 digits>.JPEG)")
    for path in flat:
        target = val_dir / wnid_of_name[path.stem]
        target.mkdir(exist_ok=True)
        path.rename(target / path.name)
    return len(flat)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contrastive.data.sources.imagenet")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare-val", help="sort the flat ILSVRC-2012 val folder into <wnid>/ folders")
    p.add_argument("val_dir", type=Path)
    p.add_argument("devkit", type=Path, help="ILSVRC2012_devkit_t12.tar.gz or its unpacked folder")
    args = parser.parse_args(argv)
    try:
        moved = prepare_val(args.val_dir, val_wnids(*_devkit_files(args.devkit)))
    except DatasetError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"moved {moved} images into class folders under {args.val_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
