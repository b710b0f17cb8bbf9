"""Image files: the memory-mapped decode cache, one decode function for every decoder
(same tensors, EXIF orientation, mixed image modes), the dataset keys, ImageNet folders."""

import io
import json
import logging
import sys
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from contrastive.data.io import decode as decode_module
from contrastive.data.io.cache import HEADER_BYTES, MAGIC
from contrastive.data.io.decode import decode_rgb, resolve_decoder
from contrastive.data.io.folders import decode_files, list_class_folders
from contrastive.core.errors import ConfigError, DatasetError


def _works(decoder):
    try:
        return resolve_decoder(decoder) == decoder
    except ConfigError:
        return False


#: The decoders that work on this machine (pil always; torchvision and torchcodec when their libraries load).
DECODERS = [d for d in ("pil", "torchvision", "torchcodec") if _works(d)]


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
    for damage in ("flip a pixel byte", "truncate after the header", "garbage header", "header not an object"):
        data = bytearray(path.read_bytes())
        if damage == "flip a pixel byte":
            data[HEADER_BYTES + 100] ^= 0xFF
        elif damage == "truncate after the header":
            data = data[: HEADER_BYTES + 50]
        elif damage == "garbage header":
            data[:20] = b"x" * 20
        else:
            data[:HEADER_BYTES] = (MAGIC + b'["key", 12]').ljust(HEADER_BYTES, b"\0")
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


def _header(path):
    return json.loads(path.read_bytes()[len(MAGIC):HEADER_BYTES].rstrip(b"\0 ").decode())


@pytest.mark.skipif(len(DECODERS) < 2, reason="needs a second decoder besides Pillow")
def test_the_decoder_is_part_of_the_cache_key_and_a_cache_made_with_another_is_rebuilt(tmp_path, caplog):
    samples, cache, other = _folder(tmp_path / "imgs"), tmp_path / "cache", DECODERS[1]
    reference = decode_files(samples, 8, "error", cache, decoder="pil")[0].images.clone()
    (pil_file,) = cache.glob("*.u8")
    assert _header(pil_file)["info"] == {"decoder": "pil"}
    again = decode_files(samples, 8, "error", cache, decoder=other)[0]
    assert torch.equal(again.images, reference)  # the same tensors, from a cache of its own
    del again
    (other_file,) = set(cache.glob("*.u8")) - {pil_file}
    assert _header(other_file)["info"] == {"decoder": other}
    header = _header(other_file)  # an old cache under this key, made with another decoder
    header["info"]["decoder"] = "pil"
    data = bytearray(other_file.read_bytes())
    data[:HEADER_BYTES] = (MAGIC + json.dumps(header).encode()).ljust(HEADER_BYTES, b"\0")
    other_file.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING, logger="contrastive.data.io.cache"):
        rebuilt = decode_files(samples, 8, "error", cache, decoder=other)[0]
    warned = [r.getMessage() for r in caplog.records if r.name == "contrastive.data.io.cache"]
    assert len(warned) == 1 and f"made with decoder=pil, this run uses decoder={other}" in warned[0] and "rebuilding" in warned[0]
    assert torch.equal(rebuilt.images, reference) and _header(other_file)["info"] == {"decoder": other}


def _encoded(image, fmt, orientation=None):
    out = io.BytesIO()
    kwargs = {"quality": 90} if fmt == "JPEG" else {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif.tobytes()
    image.save(out, format=fmt, **kwargs)
    return out.getvalue()


def _chw(array):
    return torch.from_numpy(np.ascontiguousarray(array)).permute(2, 0, 1)


def test_every_decoder_gives_the_same_tensor_with_the_exif_orientation_applied(tmp_path):
    y, x = np.mgrid[0:18, 0:28]
    rgb = np.stack([x * 9 % 256, y * 13 % 256, (x * y) % 256], axis=2).astype(np.uint8)  # [18, 28, 3], no symmetry
    base = Image.fromarray(rgb)
    rgba = Image.fromarray(np.concatenate([rgb, (x * 7 % 256).astype(np.uint8)[..., None]], axis=2))
    plain_jpeg = _encoded(base, "JPEG")
    (tmp_path / "rot90.jpg").write_bytes(_encoded(base, "JPEG", orientation=6))  # EXIF 6: rotate 90 degrees clockwise
    (tmp_path / "alpha.png").write_bytes(_encoded(rgba, "PNG", orientation=3))  # EXIF 3: rotate 180 degrees
    base.convert("L").save(tmp_path / "gray.png")
    expected = {  # what a viewer shows: JPEG pixels as Pillow decodes the untagged file, turned
        "rot90.jpg": torch.rot90(decode_rgb(plain_jpeg, "pil"), k=-1, dims=(1, 2)),
        "alpha.png": _chw(rgb[::-1, ::-1]),  # alpha dropped, not composited
        "gray.png": _chw(np.repeat(np.asarray(base.convert("L"))[..., None], 3, axis=2)),
    }
    for decoder in DECODERS:
        for name, want in expected.items():
            from_file, from_bytes = decode_rgb(tmp_path / name, decoder), decode_rgb((tmp_path / name).read_bytes(), decoder)
            assert from_file.dtype == torch.uint8 and from_file.shape == want.shape, (decoder, name, from_file.shape)
            assert torch.equal(from_file, from_bytes), (decoder, name)
            diff = (from_file.int() - want.int()).abs()
            if name.endswith(".jpg"):  # libjpeg builds may differ in IDCT/upsampling rounding: within 2 levels, 0.1 on average
                assert diff.max() <= 2 and diff.float().mean() <= 0.1, (decoder, name, diff.max())
            else:
                assert diff.max() == 0, (decoder, name, diff.max())


@pytest.mark.parametrize("decoder", DECODERS)
def test_mixed_image_modes_load_as_rgb(tmp_path, decoder):
    rgb = np.random.default_rng(1).integers(0, 256, (12, 10, 3), dtype=np.uint8)
    base = Image.fromarray(rgb)
    files = {
        "gray.png": base.convert("L"), "rgba.png": base.convert("RGBA"), "la.png": base.convert("LA"),
        "palette.png": base.convert("P"), "cmyk.jpg": base.convert("CMYK"), "gray.jpg": base.convert("L"),
        "rgb.jpg": base, "rgb.bmp": base, "rgb.webp": base,
    }
    for name, image in files.items():
        image.save(tmp_path / name)
    wide = (np.arange(120, dtype=np.uint16).reshape(12, 10) * 500).astype(np.uint16)  # 0 .. 59500
    Image.fromarray(wide).save(tmp_path / "deep16.png")  # 16-bit grayscale PNG (mode I;16)
    for name in [*files, "deep16.png"]:
        out = decode_rgb(tmp_path / name, decoder)
        assert out.dtype == torch.uint8 and out.shape == (3, 12, 10), name
        assert torch.equal(out, decode_rgb(tmp_path / name, "pil")), name  # the same tensor as Pillow's, every mode
    assert torch.equal(decode_rgb(tmp_path / "rgba.png", decoder), torch.from_numpy(rgb).permute(2, 0, 1))
    deep = decode_rgb(tmp_path / "deep16.png", decoder)
    assert torch.equal(deep[0], torch.from_numpy((wide >> 8).astype(np.uint8)))  # scaled by bit depth, not clipped
    gray = decode_rgb(tmp_path / "gray.png", decoder)
    assert torch.equal(gray[0], gray[1]) and torch.equal(gray[1], gray[2])
    assert torch.equal(decode_rgb(tmp_path / "rgb.jpg", decoder, 6, 8), decode_rgb(tmp_path / "rgb.jpg", "pil", 6, 8))
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "rgb.jpg").read_bytes()[:200])
    with pytest.raises(OSError) as failed:  # a damaged file: Pillow's reason, whichever decoder was asked for
        decode_rgb(tmp_path / "cut.jpg", decoder)
    with pytest.raises(OSError) as failed_pil:
        decode_rgb(tmp_path / "cut.jpg", "pil")
    assert str(failed.value) == str(failed_pil.value)


def test_resolve_decoder_names_the_library_auto_uses_and_rejects_bad_names(monkeypatch):
    assert resolve_decoder("auto") == DECODERS[-1]  # torchcodec, else torchvision, else Pillow: the first that works
    assert resolve_decoder("pil") == "pil"
    with pytest.raises(ConfigError, match="dataset.decoder='fast' is not valid; choose one of auto, torchcodec, torchvision, pil"):
        resolve_decoder("fast")
    monkeypatch.setitem(sys.modules, "torchcodec", None)  # as if torchcodec were not installed
    monkeypatch.setitem(sys.modules, "torchcodec.decoders", None)
    decode_module._unavailable.cache_clear()
    try:
        assert resolve_decoder("auto") == ("torchvision" if "torchvision" in DECODERS else "pil")
        with pytest.raises(ConfigError, match=r"dataset.decoder=torchcodec cannot decode on this machine \(torchcodec is not "
                                              r"installed: pip install 'contrastive\[torchcodec\]'\)"):
            resolve_decoder("torchcodec")
    finally:
        monkeypatch.undo()
        decode_module._unavailable.cache_clear()


@pytest.mark.skipif("torchvision" not in DECODERS, reason="torchvision's image decoders do not load here")
def test_the_torchvision_decoder_is_quiet_and_leaves_the_warning_filters_as_they_were(tmp_path):
    Image.new("RGB", (9, 7), (10, 200, 30)).save(tmp_path / "a.jpg")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        before = list(warnings.filters)
        with ThreadPoolExecutor(max_workers=4) as pool:  # threads decoding at once, as the cache and the lazy arrays do
            list(pool.map(lambda _: decode_rgb(tmp_path / "a.jpg", "torchvision"), range(64)))
        assert warnings.filters == before
    assert not [w for w in caught if issubclass(w.category, DeprecationWarning)], [str(w.message)[:80] for w in caught]


def test_every_dataset_declares_its_keys_in_yaml_with_one_decoder_default():
    from contrastive.config.compose import load_config
    from contrastive.data.sources.standard import decode_settings

    names = sorted(p.stem for p in (Path(__file__).resolve().parent.parent / "configs" / "dataset").glob("*.yaml"))
    assert {"imagefolder", "imagenet", "shards", "synthetic"} <= set(names)
    for name in names:
        cfg = load_config([f"dataset={name}"]).dataset
        assert cfg.decoder == "auto", name  # one default, in train.yaml, for every dataset
        for key in ("storage", "on_bad_image", "cache_dir", "cache_verify", "auto_ram_share", "num_workers", "crop_ratio",
                    "eval_crop_fraction", "label_fraction", "subset_seed", "download"):
            assert key in cfg, (name, key)
        assert decode_settings(cfg).decoder == resolve_decoder("auto"), name
    assert load_config(["dataset=shards"]).dataset.storage == "stream"
    assert load_config(["dataset=imagefolder"]).dataset.storage == "auto"


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
