"""Image files: the memory-mapped decode cache, mixed image modes, ImageNet folders."""

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive.data.io.cache import HEADER_BYTES
from contrastive.data.io.decode import load_rgb
from contrastive.data.io.folders import decode_files, list_class_folders
from contrastive.core.errors import DatasetError


def _folder(root, n=6, size=(20, 14)):
    rng = np.random.default_rng(0)
    for c in ("a", "b"):
        (root / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(root / c / f"{i}.png")
    return list_class_folders(root)[1]


def test_cache_is_one_mapped_file_reused_and_a_corrupt_one_is_rebuilt(tmp_path, caplog):
    samples = _folder(tmp_path / "imgs")
    (tmp_path / "imgs" / "a" / "bad.png").write_bytes(b"not an image")
    samples = list_class_folders(tmp_path / "imgs")[1]
    cache = tmp_path / "cache"
    first, skipped = decode_files(samples, 8, "skip", cache)
    reference = first.images.clone()
    assert skipped == [str(tmp_path / "imgs" / "a" / "bad.png")] and len(reference) == 12
    (path,) = cache.glob("*.u8")
    assert first.images.untyped_storage().nbytes() < path.stat().st_size + 1  # a view of the mapped file, no copy
    del first
    again, skipped_again = decode_files(samples, 8, "skip", cache)
    assert torch.equal(again.images, reference) and skipped_again == skipped
    del again
    for damage in ("flip a pixel byte", "truncate after the header", "garbage header"):
        data = bytearray(path.read_bytes())
        if damage == "flip a pixel byte":
            data[HEADER_BYTES + 100] ^= 0xFF
        elif damage == "truncate after the header":
            data = data[: HEADER_BYTES + 50]
        else:
            data[:20] = b"x" * 20
        path.write_bytes(bytes(data))
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="contrastive.data.io.cache"):
            rebuilt, _ = decode_files(samples, 8, "skip", cache)
        warnings = [r.getMessage() for r in caplog.records if r.name == "contrastive.data.io.cache"]
        assert len(warnings) == 1 and str(path) in warnings[0] and "rebuilding" in warnings[0], (damage, warnings)
        assert torch.equal(rebuilt.images, reference)
        del rebuilt
    assert sorted(p.suffix for p in cache.iterdir()) == [".lock", ".u8"]  # no temporary file left


def test_unwritable_cache_folder_gives_one_warning_and_no_cache(tmp_path, caplog):
    samples = _folder(tmp_path / "imgs")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    with caplog.at_level(logging.WARNING, logger="contrastive.data.io.cache"):
        a, _ = decode_files(samples, 8, "error", blocker / "cache")
        b, _ = decode_files(samples, 8, "error", blocker / "cache")
    assert torch.equal(a.images, b.images) and len(a.images) == 12
    warnings = [r.getMessage() for r in caplog.records if r.name == "contrastive.data.io.cache"]
    assert len(warnings) == 1 and "cannot be written" in warnings[0]


@pytest.mark.parametrize("decoder", ["pil", "torchvision"])
def test_mixed_image_modes_load_as_rgb(tmp_path, decoder):
    rgb = np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    files = {
        "gray.png": base.convert("L"), "rgba.png": base.convert("RGBA"), "la.png": base.convert("LA"),
        "palette.png": base.convert("P"), "cmyk.jpg": base.convert("CMYK"), "gray.jpg": base.convert("L"),
        "rgb.jpg": base,
    }
    for name, image in files.items():
        image.save(tmp_path / name)
    wide = (np.arange(120, dtype=np.uint16).reshape(12, 10) * 500).astype(np.uint16)  # 0 .. 59500
    Image.fromarray(wide).save(tmp_path / "deep16.png")  # 16-bit grayscale PNG (mode I;16)
    for name in [*files, "deep16.png"]:
        out = load_rgb(tmp_path / name, decoder)
        assert out.dtype == torch.uint8 and out.shape == (3, 12, 10), name
    assert torch.equal(load_rgb(tmp_path / "rgba.png", decoder), torch.from_numpy(rgb).permute(2, 0, 1))
    deep = load_rgb(tmp_path / "deep16.png", decoder)
    assert torch.equal(deep[0], torch.from_numpy((wide >> 8).astype(np.uint8)))  # scaled by bit depth, not clipped
    gray = load_rgb(tmp_path / "gray.png", decoder)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])


def _imagenet(root, train=("n01", "n02", "n03"), val=("n01", "n02", "n03")):
    for split, classes in (("train", train), ("val", val)):
        for c in classes:
            (root / split / c).mkdir(parents=True, exist_ok=True)
            for i in range(2):
                Image.new("RGB", (24, 18), (i * 60, 20, 90)).save(root / split / c / f"{c}_{i}.JPEG")
    return root


def _cfg(root, *extra):
    from contrastive.config.compose import load_config

    return load_config([f"dataset.root={root}", "dataset.image_size=16", "dataset.storage=stream", *extra]).dataset


def test_imagenet_folders_and_a_class_missing_from_val(tmp_path):
    from contrastive.data import build_dataset

    splits = build_dataset(_cfg(_imagenet(tmp_path / "ok"), "dataset=imagenet"))
    assert splits.classes == ["n01", "n02", "n03"] and len(splits.train) == 6 and splits.train.streamed
    assert splits.val.images[:].shape == (6, 3, 16, 16)
    with pytest.raises(DatasetError, match=r"1 of 3 classes are missing from .*val': n03"):
        build_dataset(_cfg(_imagenet(tmp_path / "bad", val=("n01", "n02")), "dataset=imagenet"))
    flat = _imagenet(tmp_path / "flat", val=())
    (flat / "val").mkdir()
    Image.new("RGB", (8, 8)).save(flat / "val" / "ILSVRC2012_val_00000001.JPEG")
    with pytest.raises(DatasetError, match="prepare-val"):
        build_dataset(_cfg(flat, "dataset=imagenet"))


def test_imagenet100_is_cmcs_class_list(tmp_path):
    from contrastive.config.compose import load_config

    classes = list(load_config(["dataset=imagenet100"]).dataset.classes)
    assert len(classes) == len(set(classes)) == 100 and classes[:2] == ["n02869837", "n01749939"] and classes[-1] == "n02090622"


def test_prepare_val_sorts_the_flat_folder_from_the_devkit(tmp_path):
    import scipy.io

    from contrastive.data.sources.imagenet import main

    devkit = tmp_path / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    synsets = np.zeros((3,), dtype=[("ILSVRC2012_ID", "O"), ("WNID", "O"), ("num_children", "O")])
    for k, (i, w, c) in enumerate([(1, "n01", 0), (2, "n02", 0), (1001, "n00parent", 2)]):
        synsets[k] = (i, w, c)
    scipy.io.savemat(devkit / "meta.mat", {"synsets": synsets})
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("2\n1\n2\n")
    val = tmp_path / "val"
    val.mkdir()
    for k in range(1, 4):
        Image.new("RGB", (8, 8)).save(val / f"ILSVRC2012_val_{k:08d}.JPEG")
    assert main(["prepare-val", str(val), str(tmp_path / "ILSVRC2012_devkit_t12")]) == 0
    assert sorted(p.name for p in (val / "n02").iterdir()) == ["ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000003.JPEG"]
    assert [p.name for p in (val / "n01").iterdir()] == ["ILSVRC2012_val_00000002.JPEG"]
    assert main(["prepare-val", str(val), str(tmp_path / "ILSVRC2012_devkit_t12")]) == 0  # re-run: nothing to move


def test_stream_storage_on_an_in_memory_dataset_is_one_clear_error():
    from contrastive.config.compose import load_config
    from contrastive.data import build_dataset

    with pytest.raises(DatasetError, match="dataset.storage=stream needs image files"):
        build_dataset(load_config(["dataset.storage=stream", "dataset.num_train=64", "dataset.num_val=16"]).dataset)
    with pytest.raises(Exception, match="dataset.storage='disk' is not valid; choose one of memory, stream, auto"):
        build_dataset(_cfg("/nonexistent", "dataset=imagenet", "dataset.storage=disk"))
