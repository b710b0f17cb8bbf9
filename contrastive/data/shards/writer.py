"""Convert a class-per-folder image tree into WebDataset shards (``dataset=shards``).

    python -m contrastive.data.shards.writer <image_root> <out_root> [--splits train val]
        [--shard-mb 64] [--threads 8]

``<image_root>/<split>/<class>/<image>`` becomes ``<out_root>/<split>/``:

* ``shard-000000.tar`` ...: standard WebDataset tar shards (``webdataset.ShardWriter``),
  one sample per image: ``<key>.jpg`` (or the file's own extension; the file's bytes as
  they were, no re-encode) and ``<key>.cls`` (the label), key = the 9-digit index.
  Any WebDataset tool reads them.
* ``contrastive_index.npy``: int64 ``[N, 4]`` (shard, byte offset, byte size, label) of
  every image, read from the finished tars, so a sample is one ``pread`` (random access
  for our sampler, without scanning tar headers in every process).
* ``contrastive_shards.json`` (written last, atomically): classes, source, and every
  shard's file name, samples, bytes and CRC-32.

Object storage: ``dataset=shards`` reads local folders; sync the output to each node's
disk (``aws s3 sync``, ``gsutil rsync``), as the README says.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import List, Sequence, Tuple

import numpy as np

from contrastive.data.shards.format import INDEX, MANIFEST, file_crc32
from contrastive.core.errors import ContrastiveError, DatasetError

log = logging.getLogger(__name__)
Entry = Tuple[str, int]  # (path, label)


def _suffix(path: str) -> str:
    suffix = Path(path).suffix.lower().lstrip(".")
    return "jpg" if suffix in ("jpg", "jpeg") else suffix or "img"


def write_shards(entries: Sequence[Entry], out: Path, shard_bytes: int = 64 << 20, threads: int = 8) -> List[str]:
    """Write ``entries`` in order into ``out/shard-%06d.tar``; returns the shard file names."""
    try:
        import webdataset as wds
    except ImportError:
        raise DatasetError("writing shards needs the webdataset package: pip install 'contrastive[shards]'") from None

    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("shard-*.tar"):
        stale.unlink()
    with ThreadPoolExecutor(max_workers=threads) as pool, \
            wds.ShardWriter(str(out / "shard-%06d.tar"), maxsize=shard_bytes, maxcount=10**9, verbose=0) as sink:
        # pool.map keeps the order; reading files is the slow part and runs ahead in the threads
        for i, data in enumerate(pool.map(lambda e: Path(e[0]).read_bytes(), entries)):
            path, label = entries[i]
            sink.write({"__key__": f"{i:09d}", _suffix(path): data, "cls": str(int(label)).encode()})
    return sorted(p.name for p in out.glob("shard-*.tar"))


def index_shards(out: Path, names: Sequence[str], labels: Sequence[int]) -> np.ndarray:
    """int64 ``[N, 4]`` (shard, offset, size, label) read back from the tars' headers.

    Raises:
        DatasetError: a tar holds another number of images or keys out of order.
    """
    rows = []
    for s, name in enumerate(names):
        with tarfile.open(out / name) as tar:
            for member in tar:
                if member.isfile() and not member.name.endswith(".cls"):
                    key = int(member.name.split(".", 1)[0])
                    if key != len(rows):
                        raise DatasetError(f"shard '{out / name}' holds key {key} where {len(rows)} was expected")
                    rows.append((s, member.offset_data, member.size, int(labels[key])))
    if len(rows) != len(labels):
        raise DatasetError(f"the shards of '{out}' hold {len(rows)} of {len(labels)} images")
    return np.asarray(rows, dtype=np.int64).reshape(-1, 4)


def convert_split(entries: Sequence[Entry], out: Path, classes: List[str], source: str, shard_bytes: int = 64 << 20,
                  threads: int = 8) -> dict:
    """Shards + index + manifest of one split; returns the manifest."""
    (out / MANIFEST).unlink(missing_ok=True)  # no manifest while the folder is incomplete
    names = write_shards(entries, out, shard_bytes, threads)
    table = index_shards(out, names, [label for _, label in entries])
    np.save(out / INDEX, table)
    counts = np.bincount(table[:, 0], minlength=len(names)).tolist()
    with ThreadPoolExecutor(max_workers=4) as pool:
        crcs = list(pool.map(file_crc32, [out / n for n in names]))
    manifest = {"format": 1, "source": source, "classes": classes, "num_samples": len(entries),
                "shards": [{"filename": n, "samples": c, "bytes": (out / n).stat().st_size, "crc32": crc}
                           for n, c, crc in zip(names, counts, crcs)]}
    tmp = out / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1))
    tmp.replace(out / MANIFEST)  # last and atomic: its presence means the split is complete
    return manifest


def convert_folder(root: Path, out_root: Path, splits: Sequence[str] = ("train", "val"), shard_bytes: int = 64 << 20,
                   threads: int = 8) -> dict:
    """Convert ``root/<split>/<class>/<image>`` for every split; class names come from the first split."""
    from contrastive.data.io.folders import list_class_folders

    classes, summary = None, {}
    for split in splits:
        split_classes, samples = list_class_folders(root / split)
        if classes is None:
            classes = split_classes
        elif split_classes != classes:
            raise DatasetError(f"the classes of '{root / split}' differ from '{root / splits[0]}': missing "
                               f"{sorted(set(classes) - set(split_classes))[:10]}, extra {sorted(set(split_classes) - set(classes))[:10]}")
        manifest = convert_split([(str(p), label) for p, label in samples], out_root / split, classes,
                                 str((root / split).resolve()), shard_bytes, threads)
        size = sum(s["bytes"] for s in manifest["shards"])
        summary[split] = {"images": manifest["num_samples"], "shards": len(manifest["shards"]), "bytes": size}
        log.info("%s: %d images in %d shards (%.1f MiB) -> %s", split, manifest["num_samples"], len(manifest["shards"]),
                 size / 2**20, out_root / split)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m contrastive.data.shards.writer", description=__doc__.splitlines()[0])
    parser.add_argument("image_root", type=Path, help="folder holding <split>/<class>/<image>")
    parser.add_argument("out_root", type=Path, help="output folder (one shard folder per split)")
    parser.add_argument("--splits", nargs="+", default=["train", "val"])
    parser.add_argument("--shard-mb", type=int, default=64, help="shard size in MiB (default 64)")
    parser.add_argument("--threads", type=int, default=8, help="file-reading threads (default 8)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.shard_mb < 1 or args.threads < 1:
        parser.error(f"--shard-mb and --threads must be >= 1, got {args.shard_mb}, {args.threads}")
    try:
        print(json.dumps(convert_folder(args.image_root, args.out_root, args.splits, args.shard_mb << 20, args.threads)))
    except ContrastiveError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
