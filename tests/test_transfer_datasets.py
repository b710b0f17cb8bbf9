"""The 12 transfer datasets read generated tiny layouts in their real on-disk formats
(CIFAR pickles, Food-101 JSON, VOC XML, Flowers/Cars .mat, text split files)."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

from contrastive.core.errors import ConfigError
from contrastive.evaluation.transfer.datasets import DATASETS, load_transfer_dataset

CFG = OmegaConf.create({"val_fraction": 0.25, "val_seed": 0, "caltech_train_per_class": 3})
CLASSES = ("alpha", "beta", "gamma")
PER_CLASS = 6


def _img(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(path)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _items():
    return [(c, i, ci * PER_CLASS + i) for ci, c in enumerate(CLASSES) for i in range(PER_CLASS)]


def _food101(root: Path) -> None:
    base = root / "food-101"
    meta = {"train": {}, "test": {}}
    for c, i, k in _items():
        _img(base / "images" / c / f"{k}.jpg", k)
        meta["test" if i >= 4 else "train"].setdefault(c, []).append(f"{c}/{k}")
    for split, m in meta.items():
        _write(base / "meta" / f"{split}.json", json.dumps(m))


def _cifar(root: Path, folder: str, files, key: str, label_key: str) -> None:
    base = root / folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for f in files:
        labels = [k % len(CLASSES) for k in range(8)]
        data = {"data": rng.integers(0, 256, (8, 3072), dtype=np.uint8), label_key: labels}
        (base / f).write_bytes(pickle.dumps(data))
    meta_name = "batches.meta" if folder.startswith("cifar-10-") else "meta"
    (base / meta_name).write_bytes(pickle.dumps({key: list(CLASSES)}))


def _birdsnap(root: Path) -> None:
    base = root / "birdsnap"
    test = []
    for c, i, k in _items():
        _img(base / "images" / c / f"{k}.jpg", k)
        if i >= 4:
            test.append(f"{c}/{k}.jpg")
    _write(base / "test_images.txt", "path\n" + "\n".join(test) + "\n")


def _sun397(root: Path) -> None:
    base = root / "SUN397"
    names = [f"/{c[0]}/{c}" for c in CLASSES]
    _write(base / "ClassName.txt", "\n".join(names) + "\n")
    train, test = [], []
    for c, i, k in _items():
        rel = f"/{c[0]}/{c}/sun_{k:04d}.jpg"
        _img(base / rel[1:], k)
        (test if i >= 4 else train).append(rel)
    _write(base / "Training_01.txt", "\n".join(train) + "\n")
    _write(base / "Testing_01.txt", "\n".join(test) + "\n")


def _cars(root: Path) -> None:
    import scipy.io

    base = root / "stanford_cars"
    annos = {"train": [], "test": []}
    for c, i, k in _items():
        split = "test" if i >= 4 else "train"
        _img(base / f"cars_{split}" / f"{k:05d}.jpg", k)
        annos[split].append((f"{k:05d}.jpg", CLASSES.index(c) + 1))
    dtype = [("fname", object), ("class", np.int64)]
    (base / "devkit").mkdir(parents=True)
    for split, path in (("train", base / "devkit" / "cars_train_annos.mat"),
                        ("test", base / "cars_test_annos_withlabels.mat")):
        scipy.io.savemat(path, {"annotations": np.array(annos[split], dtype=dtype)})
    scipy.io.savemat(base / "devkit" / "cars_meta.mat", {"class_names": np.array(list(CLASSES), dtype=object)})


def _aircraft(root: Path) -> None:
    data = root / "fgvc-aircraft-2013b" / "data"
    _write(data / "variants.txt", "\n".join(CLASSES) + "\n")
    lines = {"train": [], "val": [], "test": []}
    for c, i, k in _items():
        _img(data / "images" / f"{k:07d}.jpg", k)
        lines["train" if i < 3 else "val" if i < 4 else "test"].append(f"{k:07d} {c}")
    for split, ls in lines.items():
        _write(data / f"images_variant_{split}.txt", "\n".join(ls) + "\n")
    _write(data / "images_variant_trainval.txt", "\n".join(lines["train"] + lines["val"]) + "\n")


def _voc2007(root: Path) -> None:
    base = root / "VOCdevkit" / "VOC2007"
    sets = {"train": [], "val": [], "test": []}
    for k in range(18):
        name = f"{k:06d}"
        _img(base / "JPEGImages" / f"{name}.jpg", k)
        objects = ["cat", "dog"] if k % 3 == 0 else ["person"] if k % 3 == 1 else ["car", "person"]
        obj_xml = "".join(f"<object><name>{o}</name><difficult>0</difficult></object>" for o in objects)
        _write(base / "Annotations" / f"{name}.xml",
               f"<annotation><filename>{name}.jpg</filename>{obj_xml}</annotation>")
        sets["train" if k < 9 else "val" if k < 12 else "test"].append(name)
    for split, names in sets.items():
        _write(base / "ImageSets" / "Main" / f"{split}.txt", "\n".join(names) + "\n")


def _dtd(root: Path) -> None:
    data = root / "dtd" / "dtd"
    lines = {"train": [], "val": [], "test": []}
    for c, i, k in _items():
        _img(data / "images" / c / f"{c}_{k:04d}.jpg", k)
        lines["train" if i < 3 else "val" if i < 4 else "test"].append(f"{c}/{c}_{k:04d}.jpg")
    for split, ls in lines.items():
        _write(data / "labels" / f"{split}1.txt", "\n".join(ls) + "\n")


def _pets(root: Path) -> None:
    base = root / "oxford-iiit-pet"
    lines = {"trainval": [], "test": []}
    for c, i, k in _items():
        name = f"{c.title()}_{k}"
        _img(base / "images" / f"{name}.jpg", k)
        lines["test" if i >= 4 else "trainval"].append(f"{name} {CLASSES.index(c) + 1} 1 1")
    (base / "annotations" / "trimaps").mkdir(parents=True)
    for split, ls in lines.items():
        _write(base / "annotations" / f"{split}.txt", "\n".join(ls) + "\n")


def _caltech101(root: Path) -> None:
    base = root / "caltech101" / "101_ObjectCategories"
    for c, i, k in _items():
        _img(base / c / f"image_{i + 1:04d}.jpg", k)
    _img(base / "BACKGROUND_Google" / "image_0001.jpg", 99)


def _flowers(root: Path) -> None:
    import scipy.io

    base = root / "flowers-102"
    labels = []
    for c, i, k in _items():
        _img(base / "jpg" / f"image_{k + 1:05d}.jpg", k)
        labels.append(CLASSES.index(c) + 1)
    ids = np.arange(1, len(labels) + 1)
    part = np.array([i for _, i, _ in _items()])
    scipy.io.savemat(base / "imagelabels.mat", {"labels": np.array(labels)})
    scipy.io.savemat(base / "setid.mat", {"trnid": ids[part < 3], "valid": ids[part == 3], "tstid": ids[part > 3]})


MAKERS = {
    "food101": _food101,
    "cifar10": lambda r: _cifar(r, "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"],
                                "label_names", "labels"),
    "cifar100": lambda r: _cifar(r, "cifar-100-python", ["train", "test"], "fine_label_names", "fine_labels"),
    "birdsnap": _birdsnap, "sun397": _sun397, "cars": _cars, "aircraft": _aircraft, "voc2007": _voc2007,
    "dtd": _dtd, "pets": _pets, "caltech101": _caltech101, "flowers": _flowers,
}


def make_layout(name: str, root: Path) -> Path:
    """Write a tiny ``name`` dataset under ``root`` in its real layout; returns ``root``."""
    MAKERS[name](Path(root))
    return Path(root)


def test_every_dataset_has_a_maker():
    assert set(MAKERS) == set(DATASETS)


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_reads_generated_layout(name, tmp_path):
    pytest.importorskip("scipy")
    data = load_transfer_dataset(name, make_layout(name, tmp_path), CFG)
    assert set(data.splits) == {"train", "val", "test"}
    sizes = {s: len(d) for s, d in data.splits.items()}
    assert all(n > 0 for n in sizes.values()), sizes
    img, label = data.splits["test"][0]
    assert img.mode == "RGB"
    if name == "voc2007":
        assert data.num_classes == 20 and label.shape == (20,) and label.sum() >= 1
    else:
        assert data.num_classes == len(CLASSES) and 0 <= int(label) < len(CLASSES)


def test_caltech_takes_per_class_for_train(tmp_path):
    data = load_transfer_dataset("caltech101", make_layout("caltech101", tmp_path), CFG)
    train_val = len(data.splits["train"]) + len(data.splits["val"])
    assert train_val == 3 * len(CLASSES) and len(data.splits["test"]) == (PER_CLASS - 3) * len(CLASSES)


def test_missing_folder_and_unknown_name(tmp_path):
    with pytest.raises(ConfigError, match="oxford-iiit-pet/"):
        load_transfer_dataset("pets", tmp_path, CFG)
    with pytest.raises(ConfigError, match="choose from food101"):
        load_transfer_dataset("imagenet", tmp_path, CFG)
