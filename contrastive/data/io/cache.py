"""The decode cache: one memory-mapped file per split, shared by every process of a node.

Layout of ``<cache_dir>/<key>.u8`` (``key`` = checksum of the source listing - paths,
labels, sizes, modification times - and of the decode settings)::

    [0, 4096)          header: MAGIC, then JSON {key, num, shape, labels_offset,
                       trailer_offset, trailer_bytes, crc32, info}
    [4096, ...)        images, uint8 [N, 3, S, S], C order
    labels_offset      labels, int64 [N]
    trailer_offset     JSON list of the files skipped as unreadable

The file is written once: a temporary file in the same folder is sized up front and
memory-mapped, every image is decoded straight into its slot (so building it never
holds a second copy - no list of tensors and ``torch.stack``), unreadable files are
compacted away, the CRC-32 of images and labels goes into the header, and the file is
renamed into place (atomic). A file lock makes the other processes of a node wait for
the one that builds it. Readers map it copy-on-write: the pages are the kernel's page
cache, shared by all processes, so a second DDP rank adds almost no private memory
(measured in BENCHMARKS.md).

A cache that is truncated, has a bad header, was made with other settings (``info``, e.g.
another decoder) or (``verify``) has a wrong CRC is named in one warning and rebuilt: a
damaged cache is never fatal. A cache folder that cannot be written gives one warning
and a plain in-memory decode (still without the 2x peak).
"""

from __future__ import annotations

import json
import logging
import os
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
from tqdm.auto import tqdm

log = logging.getLogger(__name__)

MAGIC = b"CONTRASTIVE-CACHE-1\n"
HEADER_BYTES = 4096
_CHUNK = 64 << 20
_warned_unwritable: set = set()

Decode = Callable[[int], Optional[torch.Tensor]]  # sample index -> uint8 [3, S, S], None = skipped


class CacheCorrupt(Exception):
    """The cache file is unusable (the message says why)."""


def _crc(mm: np.ndarray, end: int) -> int:
    """CRC-32 of bytes ``[HEADER_BYTES, end)`` of a uint8 map, in 64 MiB chunks."""
    crc = 0
    for start in range(HEADER_BYTES, end, _CHUNK):
        crc = zlib.crc32(mm[start : min(end, start + _CHUNK)], crc)
    return crc


def _read_header(path: Path) -> dict:
    with open(path, "rb") as f:
        raw = f.read(HEADER_BYTES)
    if len(raw) < HEADER_BYTES or not raw.startswith(MAGIC):
        raise CacheCorrupt("bad or missing header")
    try:
        header = json.loads(raw[len(MAGIC):].rstrip(b"\0 ").decode())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise CacheCorrupt("unreadable header") from None
    if not isinstance(header, dict):
        raise CacheCorrupt("unreadable header")
    return header


def open_cache(path: Path, key: str, verify: bool, info: Optional[dict] = None) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """Map a finished cache file: ``(images uint8 [N,3,S,S] backed by the file, labels [N], skipped)``.

    Args:
        path: The cache file.
        key: The expected key.
        verify: Check the CRC-32.
        info: Settings the header must record (e.g. ``{"decoder": "pil"}``).

    Raises:
        CacheCorrupt: Wrong key or settings, truncated, or (with ``verify``) wrong CRC-32.
    """
    header = _read_header(path)
    if header.get("key") != key:
        raise CacheCorrupt(f"key {header.get('key')} != {key}")
    made_with = header.get("info") or {}
    for name, value in (info or {}).items():
        if made_with.get(name) != value:
            raise CacheCorrupt(f"made with {name}={made_with.get(name)}, this run uses {name}={value}")
    num, shape = int(header["num"]), tuple(int(s) for s in header["shape"])
    end = int(header["trailer_offset"]) + int(header["trailer_bytes"])
    if path.stat().st_size != end:
        raise CacheCorrupt(f"truncated: {path.stat().st_size} bytes, expected {end}")
    raw = np.memmap(path, dtype=np.uint8, mode="c")  # copy-on-write: shared page cache, never written back
    if verify and _crc(raw, int(header["trailer_offset"])) != int(header["crc32"]):
        raise CacheCorrupt("CRC-32 mismatch")
    images = torch.from_numpy(raw[HEADER_BYTES : HEADER_BYTES + num * int(np.prod(shape))]).view(num, *shape)
    lo = int(header["labels_offset"])
    labels = torch.from_numpy(np.frombuffer(raw[lo : lo + 8 * num].tobytes(), dtype=np.int64).copy())
    skipped = json.loads(bytes(raw[int(header["trailer_offset"]) : end]).decode())
    return images, labels, skipped


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl

    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)  # the other ranks of the node wait here while one builds
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def decode_into(buffer: torch.Tensor, decode: Decode, desc: str) -> List[int]:
    """Decode sample ``i`` into ``buffer[i]`` for all ``i`` (threads; the decoders release
    the GIL). Returns the indices that decoded (the others are left as they are)."""
    def work(i: int) -> bool:
        image = decode(i)
        if image is None:
            return False
        buffer[i].copy_(image)
        return True

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        ok = list(tqdm(pool.map(work, range(len(buffer))), total=len(buffer), desc=desc, leave=False, mininterval=1.0,
                       disable=None))  # None: shown on a terminal, silent in logs and pipes
    return [i for i, good in enumerate(ok) if good]


def _compact(buffer: torch.Tensor, keep: Sequence[int]) -> None:
    """Move the kept images to the front, in order (in place, one image at a time)."""
    for j, i in enumerate(keep):
        if i != j:
            buffer[j].copy_(buffer[i])


def _build(path: Path, key: str, labels: torch.Tensor, shape: Tuple[int, ...], decode: Decode, names: Sequence[str],
           desc: str, info: dict) -> None:
    n, per_image = len(labels), int(np.prod(shape))
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.truncate(HEADER_BYTES + n * per_image + 8 * n + (1 << 16))
        raw = np.memmap(tmp, dtype=np.uint8, mode="r+")
        images = torch.from_numpy(raw[HEADER_BYTES : HEADER_BYTES + n * per_image]).view(n, *shape)
        keep = decode_into(images, decode, desc)
        _compact(images, keep)
        kept, skipped = len(keep), [names[i] for i in sorted(set(range(n)) - set(keep))]
        labels_offset = HEADER_BYTES + kept * per_image
        raw[labels_offset : labels_offset + 8 * kept] = np.frombuffer(labels[keep].numpy().astype(np.int64).tobytes(), np.uint8)
        trailer = json.dumps(skipped).encode()
        trailer_offset = labels_offset + 8 * kept
        end = trailer_offset + len(trailer)
        if end > len(raw):  # only a very long skipped list outgrows the 64 KiB reserve
            raw.flush()
            del raw
            with open(tmp, "r+b") as f:
                f.truncate(end)
            raw = np.memmap(tmp, dtype=np.uint8, mode="r+")
        raw[trailer_offset:end] = np.frombuffer(trailer, np.uint8)
        header = {"key": key, "num": kept, "shape": list(shape), "labels_offset": labels_offset,
                  "trailer_offset": trailer_offset, "trailer_bytes": len(trailer), "crc32": _crc(raw, trailer_offset),
                  "info": info}
        blob = MAGIC + json.dumps(header).encode()
        raw[: len(blob)] = np.frombuffer(blob, np.uint8)
        raw.flush()
        del raw, images
        with open(tmp, "r+b") as f:
            f.truncate(end)
            os.fsync(f.fileno())
        os.replace(tmp, path)  # readers see the old state or the finished file, never a partial one
    finally:
        tmp.unlink(missing_ok=True)


def writable_dir(cache_dir: Path) -> bool:
    """Whether the cache folder can be created and written; warns once per folder if not."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
        probe = cache_dir / f".write-test-{os.getpid()}"
        probe.write_bytes(b"ok")
        probe.unlink()
        return True
    except OSError as err:
        if str(cache_dir) not in _warned_unwritable:
            _warned_unwritable.add(str(cache_dir))
            log.warning("cache folder '%s' cannot be written (%s); decoding without a cache (set dataset.cache_dir)",
                        cache_dir, err.strerror or err)
        return False


def cached_decode(cache_dir: Optional[Path], key: str, labels: torch.Tensor, shape: Tuple[int, ...], decode: Decode,
                  names: Sequence[str], desc: str, verify: bool = True,
                  info: Optional[dict] = None) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
    """``(images [N', 3, S, S], labels [N'], skipped names)`` from the cache, building it if needed.

    Args:
        cache_dir: The cache folder; ``None`` or not writable: decode into memory.
        key: Checksum of the source listing and the decode settings.
        labels: int64 ``[N]`` of all samples.
        shape: ``(3, S, S)``.
        decode: ``i -> uint8 [3, S, S]`` or ``None`` for a skipped file.
        names: File names, for the skipped list.
        desc: Progress-bar label.
        verify: Check the CRC-32 of a cache before using it (a full read of the file).
        info: Settings recorded in the header and checked when it is opened (a cache made
            with others is rebuilt), e.g. ``{"decoder": "torchcodec"}``.
    """
    if cache_dir is None or not writable_dir(Path(cache_dir)):
        images = torch.empty((len(labels), *shape), dtype=torch.uint8)
        keep = decode_into(images, decode, desc)
        _compact(images, keep)
        skipped = [names[i] for i in sorted(set(range(len(labels))) - set(keep))]
        return images[: len(keep)], labels[keep], skipped
    path = Path(cache_dir) / f"{key}.u8"
    with _locked(path.with_suffix(".lock")):
        if path.is_file():
            try:
                return open_cache(path, key, verify, info)
            except (CacheCorrupt, OSError, ValueError, KeyError, TypeError, AttributeError) as err:
                log.warning("decode cache %s is unusable (%s); rebuilding it", path, err)
                path.unlink(missing_ok=True)
        _build(path, key, labels, shape, decode, names, desc, dict(info or {}))
    return open_cache(path, key, False, info)
