"""Which sharded format for ``dataset=shards``: litdata or WebDataset.

Both libraries are run on the same generated JPEG folder (``bench_data.py generate``);
``pip install litdata wids`` first (benchmark only: the project needs neither):

- **convert**: image folder -> shards (file bytes stored as they are, label, index).
  litdata: ``litdata.optimize`` (1 worker); WebDataset: ours,
  ``contrastive.data.shards.writer`` (``webdataset.ShardWriter`` + the index table).
- **indexed**: the access pattern of our sampler (``contrastive.data.shards.reader``): the
  batches of one rank in a shard-window shuffle, each sample read by its index
  (litdata ``StreamingDataset[i]``; WebDataset tars through ``wids.ShardListDataset[i]``,
  and through ours: one ``os.pread`` from the index table, ``ShardImages.raw``).
- **native**: each library's own shuffled streaming loop (litdata ``StreamingDataset``
  with ``shuffle=True``; ``webdataset.WebDataset`` with ``shardshuffle`` + ``shuffle``),
  single process, bytes only.

Reading is measured as samples/s of raw bytes (no decode: the decoder is the same for
both), median of ``--repeats`` interleaved repeats, after one warm pass (page cache hot,
as on a node that has read its shards once).

    python benchmarks/speed/components/bench_shards.py --folder /tmp/bench_jpegs --num-images 5000
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))
SHARD_BYTES = 16 << 20  # ~1,200 of these 13 KiB JPEGs a shard: several shards even for 5,000 images


def _inputs(folder: Path, n: int):
    from contrastive.data.io.folders import list_class_folders

    _, samples = list_class_folders(folder / "train")
    return [(str(p), label, i) for i, (p, label) in enumerate(samples[:n])]


def _litdata_entry(item):
    path, label, index = item
    return {"index": index, "label": label, "image": Path(path).read_bytes()}


def convert_litdata(inputs, out: Path) -> float:
    import litdata

    start = time.perf_counter()
    litdata.optimize(fn=_litdata_entry, inputs=inputs, output_dir=str(out), chunk_bytes=SHARD_BYTES, num_workers=1,
                     mode="overwrite", reorder_files=False, keep_data_ordered=True, verbose=False, start_method="fork")
    return time.perf_counter() - start


def convert_wds(inputs, out: Path) -> float:
    from contrastive.data.shards.writer import convert_split

    start = time.perf_counter()
    convert_split([(p, label) for p, label, _ in inputs], out, ["c"], "bench", shard_bytes=SHARD_BYTES)
    return time.perf_counter() - start


def read_ours_indexed(out: Path, order) -> float:
    from contrastive.data.shards.reader import ShardImages
    from contrastive.data.shards.format import read_manifest

    manifest = read_manifest(out)
    images = ShardImages(str(out), 32, [s["filename"] for s in manifest["shards"]], [s["samples"] for s in manifest["shards"]])
    start = time.perf_counter()
    total = sum(len(images.raw(i)) for i in order)
    assert total > 0
    return len(order) / (time.perf_counter() - start)


def _order(sizes, seed: int = 0):
    from contrastive.data.shards.reader import ShardShuffleBatchSampler

    sampler = ShardShuffleBatchSampler(sizes, batch_size=64, seed=seed, rank=0, world_size=1)
    return [i for batch in sampler for i in batch]


def read_litdata_indexed(out: Path, order) -> float:
    import litdata

    ds = litdata.StreamingDataset(str(out))
    start = time.perf_counter()
    total = sum(len(ds[i]["image"]) for i in order)
    assert total > 0
    return len(order) / (time.perf_counter() - start)


def read_wids_indexed(out: Path, order) -> float:
    import wids

    shards = [{"url": str(p), "nsamples": _tar_count(p)} for p in sorted(out.glob("shard-*.tar"))]
    ds = wids.ShardListDataset(shards, transformations=[], localname=lambda url: url, lru_size=64)  # read in place
    start = time.perf_counter()
    total = sum(len(_bytes(ds[i][".jpg"])) for i in order)
    assert total > 0
    return len(order) / (time.perf_counter() - start)


def _bytes(value):
    return value.getvalue() if hasattr(value, "getvalue") else value


def _tar_count(path: Path) -> int:
    import tarfile

    with tarfile.open(path) as tar:
        return sum(1 for m in tar.getmembers() if m.name.endswith(".jpg"))


def read_litdata_native(out: Path) -> float:
    import litdata

    ds = litdata.StreamingDataset(str(out), shuffle=True, seed=0)
    start = time.perf_counter()
    n = sum(1 for item in ds if len(item["image"]))
    return n / (time.perf_counter() - start)


def read_wds_native(out: Path) -> float:
    import webdataset as wds

    urls = [str(p) for p in sorted(out.glob("shard-*.tar"))]
    ds = wds.WebDataset(urls, shardshuffle=len(urls), seed=0, empty_check=False).shuffle(1000)
    start = time.perf_counter()
    n = sum(1 for item in ds if len(item["jpg"]))
    return n / (time.perf_counter() - start)


def _median(fn, repeats: int) -> float:
    fn()  # warm pass: page cache, imports
    return round(statistics.median(fn() for _ in range(repeats)), 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_jpegs"))
    parser.add_argument("--num-images", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_shards"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "bench_shards-cpu.jsonl")
    args = parser.parse_args()
    inputs = _inputs(args.folder, args.num_images)
    shutil.rmtree(args.work, ignore_errors=True)
    lit, tar = args.work / "litdata", args.work / "wds"
    record = {"images": len(inputs), "load_before": open("/proc/loadavg").read().split()[0]}
    record["convert_s"] = {"litdata": round(convert_litdata(inputs, lit), 1), "webdataset": round(convert_wds(inputs, tar), 1)}
    order = _order([s["samples"] for s in json.loads((tar / "contrastive_shards.json").read_text())["shards"]])
    record["indexed_samples_per_s"] = {"litdata": _median(lambda: read_litdata_indexed(lit, order), args.repeats),
                                       "wids": _median(lambda: read_wids_indexed(tar, order), args.repeats),
                                       "ours_webdataset_pread": _median(lambda: read_ours_indexed(tar, order), args.repeats)}
    record["native_samples_per_s"] = {"litdata": _median(lambda: read_litdata_native(lit), args.repeats),
                                      "webdataset": _median(lambda: read_wds_native(tar), args.repeats)}
    record["load_after"] = open("/proc/loadavg").read().split()[0]
    print(json.dumps(record, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("a") as f:
        f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
