"""The shard folder's own files, shared by the writer and the reader.

* ``contrastive_index.npy``: int64 ``[N, 4]`` (shard, byte offset, byte size, label);
* ``contrastive_shards.json``: classes, source, and every shard's samples, bytes and CRC-32.
"""

from __future__ import annotations

import json
import zlib
from pathlib import Path
from typing import Optional

import numpy as np

from contrastive.core.errors import DatasetError

MANIFEST = "contrastive_shards.json"
INDEX = "contrastive_index.npy"
VERIFY_MODES = ("once", "always", "never")


def file_crc32(path: Path, block: int = 16 << 20) -> int:
    """CRC-32 of a file, read in 16 MiB blocks (zlib releases the GIL on them)."""
    crc = 0
    with open(path, "rb") as f:
        while data := f.read(block):
            crc = zlib.crc32(data, crc)
    return crc & 0xFFFFFFFF


def read_manifest(folder: Path) -> dict:
    """``contrastive_shards.json`` of a converted split, checked against its index table."""
    path, index = folder / MANIFEST, folder / INDEX
    if not path.is_file() or not index.is_file():
        raise DatasetError(f"'{folder}' is not a converted shard folder (no {MANIFEST} / {INDEX}); convert an image "
                           f"folder with `python -m contrastive.data.shards.writer <image_root> <out_root>`")
    try:
        manifest = json.loads(path.read_text())
        rows = np.load(index, mmap_mode="r").shape[0]
    except (ValueError, KeyError, OSError) as err:
        raise DatasetError(f"cannot read the shard index of '{folder}' ({err}); re-run the conversion") from None
    if rows != manifest["num_samples"] or rows != sum(s["samples"] for s in manifest["shards"]):
        raise DatasetError(f"'{index}' lists {rows} images, {MANIFEST} {manifest['num_samples']}; re-run the conversion")
    return manifest


def verify_shards(folder: Path, manifest: dict, mode: str, stamp_dir: Optional[Path]) -> None:
    """Check every shard's size (always) and CRC-32 (``once`` per machine, ``always``, ``never``).

    Raises:
        DatasetError: naming the first shard whose size or checksum differs from the
            conversion's record.
    """
    if mode not in VERIFY_MODES:
        raise DatasetError(f"dataset.verify_shards='{mode}' is not valid; choose one of {', '.join(VERIFY_MODES)}")
    for shard in manifest["shards"]:
        path = folder / shard["filename"]
        size = path.stat().st_size if path.is_file() else -1
        if size != shard["bytes"]:
            raise DatasetError(f"shard '{path}' is damaged or missing: {size} bytes, {shard['bytes']} recorded at "
                               f"conversion; re-run the conversion or restore the file")
    stamp = _stamp(folder, manifest, stamp_dir) if mode == "once" else None
    if mode == "never" or (stamp is not None and stamp.is_file()):
        return
    from concurrent.futures import ThreadPoolExecutor

    paths = [folder / s["filename"] for s in manifest["shards"]]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for shard, crc in zip(manifest["shards"], pool.map(file_crc32, paths)):
            if crc != shard["crc32"]:
                raise DatasetError(f"shard '{folder / shard['filename']}' has a bad checksum (CRC-32 {crc:08x}, "
                                   f"{shard['crc32']:08x} recorded at conversion); re-run the conversion or restore the file")
    if stamp is not None:
        try:
            stamp.parent.mkdir(parents=True, exist_ok=True)
            stamp.write_text("verified\n")
        except OSError:
            pass  # an unwritable cache folder only means verifying again next time


def _stamp(folder: Path, manifest: dict, stamp_dir: Optional[Path]) -> Optional[Path]:
    if stamp_dir is None:
        return None
    import hashlib

    digest = hashlib.sha1(str(folder.resolve()).encode())
    for shard in manifest["shards"]:
        stat = (folder / shard["filename"]).stat()
        digest.update(f"{shard['filename']}|{shard['crc32']}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    return stamp_dir / "shards" / f"{digest.hexdigest()[:20]}.verified"
