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
from contrastive.evaluation.transfer.datasets import DATASETS, VOC_CLASSES, load_transfer_dataset

CFG = OmegaConf.create({"val_fraction": 0.25, "val_seed": 0, "caltech_train_per_class": 3})
CLASSES = ("alpha", "beta", "gamma")
PER_CLASS = 6


def _img(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    # best JPEG quality, no chroma subsampling: the decoded pixels stay close enough to tell images apart
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(path, quality=100, subsampling=0)


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


def _file_images():
    """Generated image id -> its pixels before JPEG (``_img`` draws image ``k`` from seed ``k``)."""
    return {k: np.random.default_rng(k).integers(0, 256, (10, 12, 3), dtype=np.uint8).astype(np.float64)
            for k in [*range(len(CLASSES) * PER_CLASS), 99]}


def _identify(img, refs) -> int:
    """The id of the reference nearest ``img`` (JPEG moves noise far less than two images differ)."""
    x = np.asarray(img, dtype=np.float64)
    dist = {k: float(((x - r) ** 2).mean()) if r.shape == x.shape else float("inf") for k, r in refs.items()}
    best, second = sorted(dist.values())[:2]
    assert best < 0.25 * second, (best, second)
    return min(dist, key=dist.get)


def _cifar_images(root: Path, name: str):
    """Image id -> pixels for the generated CIFAR pickles: ``<file>:<row>``."""
    folder = root / ("cifar-10-batches-py" if name == "cifar10" else "cifar-100-python")
    refs = {}
    for f in sorted(folder.iterdir()):
        if "meta" not in f.name:
            rows = pickle.loads(f.read_bytes())["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            refs.update({f"{f.name}:{r}": rows[r].astype(np.float64) for r in range(len(rows))})
    return refs


def _expected_splits(name: str, refs) -> dict:
    """What the generated layout puts where: ids of {"train", "val", "test"}, or of "trainval"
    (train + validation carved from it) where the dataset has no validation split."""
    ids = {k: i for _, i, k in _items()}
    if name in ("aircraft", "dtd", "flowers"):  # train: i < 3, val: i == 3, test: i >= 4
        return {"train": {k for k, i in ids.items() if i < 3}, "val": {k for k, i in ids.items() if i == 3},
                "test": {k for k, i in ids.items() if i >= 4}}
    if name == "voc2007":  # ImageSets/Main: 0-8 train, 9-11 val, 12-17 test
        return {"train": set(range(9)), "val": set(range(9, 12)), "test": set(range(12, 18))}
    if name.startswith("cifar"):
        test = {k for k in refs if k.startswith("test")}
        return {"trainval": set(refs) - test, "test": test}
    return {"trainval": {k for k, i in ids.items() if i < 4}, "test": {k for k, i in ids.items() if i >= 4}}


@pytest.mark.parametrize("name", sorted(set(DATASETS) - {"caltech101"}))
def test_each_generated_image_lands_in_its_split(name, tmp_path):
    pytest.importorskip("scipy")
    data = load_transfer_dataset(name, make_layout(name, tmp_path), CFG)
    refs = _cifar_images(tmp_path, name) if name.startswith("cifar") else _file_images()
    got = {}
    for split, dataset in data.splits.items():
        got[split] = [_identify(dataset[i][0], refs) for i in range(len(dataset))]
        assert len(set(got[split])) == len(got[split]), (split, got[split])  # no image twice
        if not name.startswith("cifar"):  # the label is the image's class (VOC: its objects)
            for i, k in enumerate(got[split]):
                label = dataset[i][1]
                if name == "voc2007":
                    hot = {0: {"cat", "dog"}, 1: {"person"}, 2: {"car", "person"}}[k % 3]
                    assert {VOC_CLASSES[j] for j in label.nonzero().flatten().tolist()} == hot
                else:
                    assert int(label) == k // PER_CLASS, (split, k, label)
    want = _expected_splits(name, refs)
    assert set(got["test"]) == want["test"]
    if "trainval" in want:  # validation is carved out of train: a val_fraction share, no overlap
        assert set(got["train"]) | set(got["val"]) == want["trainval"]
        assert not set(got["train"]) & set(got["val"])
        assert len(got["val"]) == max(1, round(CFG.val_fraction * len(want["trainval"])))
    else:
        assert set(got["train"]) == want["train"] and set(got["val"]) == want["val"]


def test_caltech_splits_by_class_and_leaves_the_background_out(tmp_path):
    cfg = OmegaConf.merge(CFG, {"caltech_train_per_class": 2})  # 2 of 6: swapped train and test differ
    data = load_transfer_dataset("caltech101", make_layout("caltech101", tmp_path), cfg)
    refs = _file_images()
    got = {s: [_identify(d[i][0], refs) for i in range(len(d))] for s, d in data.splits.items()}
    trainval = got["train"] + got["val"]
    assert sorted(trainval + got["test"]) == list(range(len(CLASSES) * PER_CLASS))  # BACKGROUND_Google (99) left out
    for c in range(len(CLASSES)):
        assert sum(k // PER_CLASS == c for k in trainval) == cfg.caltech_train_per_class
    assert len(got["val"]) == round(cfg.val_fraction * len(trainval))


def test_caltech_takes_per_class_for_train(tmp_path):
    data = load_transfer_dataset("caltech101", make_layout("caltech101", tmp_path), CFG)
    train_val = len(data.splits["train"]) + len(data.splits["val"])
    assert train_val == 3 * len(CLASSES) and len(data.splits["test"]) == (PER_CLASS - 3) * len(CLASSES)


def test_missing_folder_and_unknown_name(tmp_path):
    with pytest.raises(ConfigError, match="oxford-iiit-pet/"):
        load_transfer_dataset("pets", tmp_path, CFG)
    with pytest.raises(ConfigError, match="choose from food101"):
        load_transfer_dataset("imagenet", tmp_path, CFG)
