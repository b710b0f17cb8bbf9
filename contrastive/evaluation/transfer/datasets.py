"""The 12 transfer datasets of SimCLR Table 8 / SimCLIC Table 2, read from their on-disk layouts.

Everything lives under one root (``eval.transfer.root``), each dataset in the folder its
archive unpacks to, as torchvision names it (nothing is ever downloaded)::

    food-101/{images,meta/{train,test}.json}          cifar-10-batches-py/   cifar-100-python/
    birdsnap/{images/<species>/*.jpg,test_images.txt}  SUN397/{<letter>/<class>/sun_*.jpg,ClassName.txt,
    stanford_cars/{devkit,cars_train,cars_test,...}      Training_01.txt,Testing_01.txt}
    fgvc-aircraft-2013b/data/...                       VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets}
    dtd/dtd/{images,labels}                            oxford-iiit-pet/{images,annotations}
    caltech101/101_ObjectCategories/                   flowers-102/{jpg,imagelabels.mat,setid.mat}

Splits and metrics follow Kornblith, Shlens and Le 2019 as the protocol is summarised from it (the paper
is not in shared/papers): mean per-class accuracy for Aircraft, Pets, Caltech-101 and
Flowers, 11-point mAP for VOC2007, top-1 for the rest; Caltech-101: 30 random images per
class for training, the rest for test; SUN397: the first split; DTD: split 1; Aircraft:
train / val / test (trainval to refit). Where a dataset has no validation split
(Food-101, CIFAR, Birdsnap, SUN397, Cars, Pets, Caltech-101) a fraction
``val_fraction`` of train is carved out with the fixed ``val_seed``; not stated in the
paper: our choice of 0.2 because it keeps every class in train on the small datasets.
VOC2007: an image is positive for every class with an object in its XML (``difficult``
objects included); not stated in the paper: our choice because it is the classification
ground truth of the devkit (which marks difficult-only classes 0, "ignore", not negative).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import torch
from torch.utils.data import Dataset, Subset

from contrastive.core.errors import ConfigError
from contrastive.metrics.transfer import mean_average_precision_11point, mean_per_class_accuracy, top1_accuracy

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa",
               "train", "tvmonitor")

METRICS: Dict[str, Callable[[torch.Tensor, torch.Tensor], float]] = {
    "top1": top1_accuracy, "mean_per_class": mean_per_class_accuracy, "map11": mean_average_precision_11point}


@dataclass
class TransferData:
    """One dataset's splits and how it is scored.

    Attributes:
        name: the dataset name (``pets``).
        splits: ``{"train", "val", "test"}`` -> a dataset of ``(PIL image, label)``; the label
            is an int, or a float multi-hot ``[C]`` tensor for a multi-label dataset.
        num_classes: C.
        metric: a key of :data:`METRICS`.
    """

    name: str
    splits: Dict[str, Dataset]
    num_classes: int
    metric: str

    @property
    def multilabel(self) -> bool:
        return self.metric == "map11"


def carve_val(dataset: Dataset, fraction: float, seed: int) -> Tuple[Subset, Subset]:
    """``(train, val)``: a random ``fraction`` of ``dataset`` (at least one image) as validation."""
    n = len(dataset)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, int(round(fraction * n)))
    return Subset(dataset, sorted(order[n_val:])), Subset(dataset, sorted(order[:n_val]))


def per_class_split(labels: Sequence[int], per_class: int, seed: int) -> Tuple[List[int], List[int]]:
    """``(train, rest)`` indices: ``per_class`` random images of each class, and the others."""
    gen = torch.Generator().manual_seed(seed)
    by_class: Dict[int, List[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(int(y), []).append(i)
    train: List[int] = []
    for idx in by_class.values():
        perm = torch.randperm(len(idx), generator=gen).tolist()
        train += [idx[p] for p in perm[:per_class]]
    chosen = set(train)
    return sorted(train), [i for i in range(len(labels)) if i not in chosen]


class _Labelled(Dataset):
    """``(PIL image, label)`` from a list of ``(path, label)``."""

    def __init__(self, samples: List[Tuple[Path, object]]) -> None:
        self.samples = samples

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int):
        from PIL import Image

        path, label = self.samples[index]
        with Image.open(path) as img:
            return img.convert("RGB"), label


def _tv():
    import torchvision.datasets as tvd

    return tvd


def _with_val(train: Dataset, test: Dataset, cfg) -> Dict[str, Dataset]:
    tr, va = carve_val(train, float(cfg.val_fraction), int(cfg.val_seed))
    return {"train": tr, "val": va, "test": test}


def _food101(root: Path, cfg) -> Tuple[Dict[str, Dataset], int]:
    tvd = _tv()
    train = tvd.Food101(str(root), split="train")
    return _with_val(train, tvd.Food101(str(root), split="test"), cfg), len(train.classes)


def _cifar(cls_name: str):
    def load(root: Path, cfg) -> Tuple[Dict[str, Dataset], int]:
        base = getattr(_tv(), cls_name)

        class Local(base):  # the archive's md5 is checked on download only: generated files pass
            def _check_integrity(self) -> bool:
                return all((Path(self.root) / self.base_folder / f).is_file()
                           for f, _ in self.train_list + self.test_list)

            def _load_meta(self) -> None:
                import pickle

                with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as fh:
                    data = pickle.load(fh, encoding="latin1")
                self.classes = data[self.meta["key"]]
                self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

        train = Local(str(root), train=True)
        return _with_val(train, Local(str(root), train=False), cfg), len(train.classes)
    return load


def _birdsnap(root: Path, cfg) -> Tuple[Dict[str, Dataset], int]:
    """``birdsnap/images/<species>/<file>.jpg``; ``test_images.txt`` lists the test images as
    ``<species>/<file>.jpg`` (one a line; a header line and extra columns are skipped)."""
    base = root / "birdsnap"
    classes = sorted(p.name for p in (base / "images").iterdir() if p.is_dir())
    index = {c: i for i, c in enumerate(classes)}
    test = set()
    for line in (base / "test_images.txt").read_text().splitlines():
        test.update(f for f in line.split() if "/" in f and f.lower().endswith((".jpg", ".jpeg", ".png")))
    samples = {"train": [], "test": []}
    for c in classes:
        for path in sorted((base / "images" / c).iterdir()):
            samples["test" if f"{c}/{path.name}" in test else "train"].append((path, index[c]))
    return _with_val(_Labelled(samples["train"]), _Labelled(samples["test"]), cfg), len(classes)


def _sun397(root: Path, cfg) -> Tuple[Dict[str, Dataset], int]:
    """torchvision's SUN397 images and classes, split by ``Training_01.txt`` / ``Testing_01.txt``."""
    full = _tv().SUN397(str(root))
    data_dir = root / "SUN397"
    position = {"/" + p.relative_to(data_dir).as_posix(): i for i, p in enumerate(full._image_files)}
    parts = {}
    for split, fname in (("train", "Training_01.txt"), ("test", "Testing_01.txt")):
        lines = [ln.strip() for ln in (data_dir / fname).read_text().splitlines() if ln.strip()]
        parts[split] = Subset(full, [position[ln] for ln in lines if ln in position])
    return _with_val(parts["train"], parts["test"], cfg), len(full.classes)


def _cars(root: Path, cfg) -> Tuple[Dict[str, Dataset], int]:
    tvd = _tv()
    train = tvd.StanfordCars(str(root), split="train")
    return _with_val(train, tvd.StanfordCars(str(root), split="test"), cfg), len(train.classes)


def _aircraft(root: Path, cfg) -> Tuple[Dict[str, Dataset], int]:
    tvd = _tv()
    splits = {s: tvd.FGVCAircraft(str(root), split=s) for s in ("train", "val", "test")}
    return splits, len(splits["train"].classes)


def _voc_target(target: dict) -> torch.Tensor:
    """VOCDetection's parsed XML -> float multi-hot ``[20]``."""
    objects = target["annotation"].get("object", [])
    objects = objects if isinstance(objects, list) else [objects]
    hot = torch.zeros(len(VOC_CLASSES))
    for obj in objects:
        hot[VOC_CLASSES.index(obj["name"])] = 1.0
    return hot


def _voc2007(root: Path, cfg) -> Tuple[Dict[str, Dataset], int]:
    tvd = _tv()
    splits = {s: tvd.VOCDetection(str(root), year="2007", image_set=s, target_transform=_voc_target)
              for s in ("train", "val", "test")}
    return splits, len(VOC_CLASSES)


def _dtd(root: Path, cfg) -> Tuple[Dict[str, Dataset], int]:
    splits = {s: _tv().DTD(str(root), split=s, partition=1) for s in ("train", "val", "test")}
    return splits, len(splits["train"].classes)


def _pets(root: Path, cfg) -> Tuple[Dict[str, Dataset], int]:
    tvd = _tv()
    train = tvd.OxfordIIITPet(str(root), split="trainval")
    return _with_val(train, tvd.OxfordIIITPet(str(root), split="test"), cfg), len(train.classes)


def _caltech101(root: Path, cfg) -> Tuple[Dict[str, Dataset], int]:
    full = _tv().Caltech101(str(root), target_type="category")
    train_idx, test_idx = per_class_split(full.y, int(cfg.caltech_train_per_class), int(cfg.val_seed))
    return _with_val(Subset(full, train_idx), Subset(full, test_idx), cfg), len(full.categories)


def _flowers(root: Path, cfg) -> Tuple[Dict[str, Dataset], int]:
    base = _tv().Flowers102

    class Local(base):  # the .mat md5s are checked on download only: generated files pass
        def _check_integrity(self) -> bool:
            return self._images_folder.is_dir() and all(
                (self._base_folder / self._file_dict[k][0]).is_file() for k in ("label", "setid"))

    splits = {s: Local(str(root), split=s) for s in ("train", "val", "test")}
    labels = {int(y) for s in splits.values() for y in s._labels}
    return splits, max(labels) + 1


#: name -> (folder under the root, expected layout, loader, metric)
DATASETS: Dict[str, Tuple[str, str, Callable, str]] = {
    "food101": ("food-101", "food-101/{images,meta/train.json,meta/test.json}", _food101, "top1"),
    "cifar10": ("cifar-10-batches-py", "cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}",
                _cifar("CIFAR10"), "top1"),
    "cifar100": ("cifar-100-python", "cifar-100-python/{train,test,meta}", _cifar("CIFAR100"), "top1"),
    "birdsnap": ("birdsnap", "birdsnap/{images/<species>/*.jpg,test_images.txt}", _birdsnap, "top1"),
    "sun397": ("SUN397", "SUN397/{ClassName.txt,Training_01.txt,Testing_01.txt,<l>/<class>/sun_*.jpg}",
               _sun397, "top1"),
    "cars": ("stanford_cars", "stanford_cars/{devkit/{cars_meta,cars_train_annos}.mat,cars_train,cars_test,"
             "cars_test_annos_withlabels.mat}", _cars, "top1"),
    "aircraft": ("fgvc-aircraft-2013b", "fgvc-aircraft-2013b/data/{images,variants.txt,"
                 "images_variant_{train,val,test}.txt}", _aircraft, "mean_per_class"),
    "voc2007": ("VOCdevkit/VOC2007", "VOCdevkit/VOC2007/{JPEGImages,Annotations,ImageSets/Main/"
                "{train,val,test}.txt}", _voc2007, "map11"),
    "dtd": ("dtd/dtd", "dtd/dtd/{images/<class>/*.jpg,labels/{train,val,test}1.txt}", _dtd, "top1"),
    "pets": ("oxford-iiit-pet", "oxford-iiit-pet/{images,annotations/{trainval,test}.txt}", _pets,
             "mean_per_class"),
    "caltech101": ("caltech101/101_ObjectCategories", "caltech101/101_ObjectCategories/<class>/image_0001.jpg",
                   _caltech101, "mean_per_class"),
    "flowers": ("flowers-102", "flowers-102/{jpg/image_00001.jpg,imagelabels.mat,setid.mat}", _flowers,
                "mean_per_class"),
}


def check_names(names: Sequence[str]) -> None:
    """Raises ConfigError on a name not in :data:`DATASETS`."""
    for name in names:
        if name not in DATASETS:
            raise ConfigError(f"eval.transfer.datasets: unknown dataset '{name}'; choose from {', '.join(DATASETS)}")


def load_transfer_dataset(name: str, root: Path | str, cfg) -> TransferData:
    """The splits of ``name`` under ``root``.

    Args:
        name: a key of :data:`DATASETS`.
        root: the folder holding every dataset.
        cfg: ``eval.transfer`` (``val_fraction``, ``val_seed``, ``caltech_train_per_class``).

    Raises:
        ConfigError: unknown name, or the dataset's folder missing / unreadable (one line naming
            the expected layout).
    """
    check_names([name])
    folder, layout, loader, metric = DATASETS[name]
    root = Path(str(root)).expanduser()
    if not (root / folder).is_dir():
        raise ConfigError(f"dataset '{name}' not found: expected {root}/{layout}")
    try:
        splits, num_classes = loader(root, cfg)
    except (RuntimeError, OSError, KeyError, ValueError) as err:
        raise ConfigError(f"dataset '{name}' under {root} is unreadable ({str(err).splitlines()[0][:120]}); "
                          f"expected {root}/{layout}") from None
    return TransferData(name, splits, num_classes, metric)
