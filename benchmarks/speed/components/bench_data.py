"""Data-path benchmarks (``dataset.storage``, decoders, shared cache, shards), on a procedurally generated JPEG folder.

Sections (``--only`` picks some; all write one JSON record each to ``--out``):

* ``generate``: ``--num-images`` JPEGs of 500x375 px (random smooth colour fields with
  shapes, quality 90) in 10 class folders under ``--folder`` (never commit it).
* ``decoders``: single-thread decode of the same files with Pillow and
  ``torchvision.io.decode_jpeg`` (to RGB uint8), interleaved repeats, median ms/image.
* ``throughput``: training images/s at 96 and 224 px crops: ours (``CropBatches`` in a
  DataLoader + the batch-wise photometric part) vs the lightly reference
  (``SimCLRTransform`` on PIL in a DataLoader), same workers, same model (small_cnn +
  linear projection + lightly ``NTXentLoss``, SGD), same augmentation settings
  (lightly's defaults: colour strength 1.0, blur 0.5), interleaved repeats.
* ``first_batch``: seconds from nothing to the first training batch: stream; memory
  with a cold cache (decode everything); memory with a warm cache (map the file).
* ``rss``: peak RSS of a training process (``prepare_run`` + Lightning ``fit``, a few
  steps, stream) for the first 5,000 vs all images, each in its own process.
* ``shared_cache``: two processes map the same memory-mapped cache and read every
  byte; the second's private memory (``/proc/<pid>/smaps_rollup``) vs the data size.

Usage:
    python benchmarks/speed/components/bench_data.py --folder /tmp/bench_jpegs --num-images 20000 --workers 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))


def _load() -> str:
    return open("/proc/loadavg").read().split()[0]


def generate(folder: Path, n: int, seed: int = 0) -> dict:
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    start, yy, xx = time.perf_counter(), *np.mgrid[0:375, 0:500].astype(np.float32)
    for i in range(n):
        path = folder / "train" / f"class{i % 10}" / f"{i:06d}.jpg"
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        a, b, c = rng.uniform(0, 1, 3), rng.uniform(-1, 1, 3), rng.uniform(-1, 1, 3)
        field = 255 * np.clip(a + b * xx[..., None] / 500 + c * yy[..., None] / 375, 0, 1)  # [375, 500, 3]
        image = Image.fromarray(field.astype(np.uint8))
        draw = ImageDraw.Draw(image)
        for _ in range(4):
            x0, y0 = rng.integers(0, 400), rng.integers(0, 300)
            draw.ellipse((x0, y0, x0 + rng.integers(20, 100), y0 + rng.integers(20, 80)), fill=tuple(rng.integers(0, 256, 3).tolist()))
        image.save(path, quality=90)
    return {"images": n, "seconds": round(time.perf_counter() - start, 1)}


def _files(folder: Path, n: int):
    from contrastive.data.io.folders import list_class_folders

    _, samples = list_class_folders(folder / "train")
    return samples[:n]


def decoders(folder: Path, n: int = 300, repeats: int = 3) -> dict:
    from contrastive.data.io.decode import decode_rgb

    torch.set_num_threads(1)
    paths = [p for p, _ in _files(folder, n)]
    decode = {name: (lambda p, name=name: decode_rgb(p, name)) for name in ("pil", "torchvision")}
    try:  # libjpeg-turbo bindings, if installed (`pip install simplejpeg`; not a dependency of the project)
        import simplejpeg

        decode["simplejpeg"] = lambda p: torch.from_numpy(simplejpeg.decode_jpeg(Path(p).read_bytes(), colorspace="RGB")).permute(2, 0, 1)
    except ImportError:
        pass
    times = {name: [] for name in decode}
    for _ in range(repeats):
        for name, fn in decode.items():
            start = time.perf_counter()
            for p in paths:
                fn(p)
            times[name].append(1000 * (time.perf_counter() - start) / len(paths))
    return {k: round(statistics.median(v), 2) for k, v in times.items()} | {"unit": "ms/image, 1 thread", "images": n}


class _Model(torch.nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        from contrastive.backbones.factory import create_backbone

        self.backbone = create_backbone("small_cnn", size, small_stem=False, width=16)
        self.head = torch.nn.Linear(self.backbone.feature_dim, 64)


def _train_loop(batches, model, criterion, opt, steps: int, views_of) -> float:
    it, done = iter(batches), 0
    views_of(next(it))  # warm-up: workers started, first batch decoded
    start = time.perf_counter()
    for _ in range(steps):
        v0, v1 = views_of(next(it))
        loss = criterion(model.head(model.backbone(v0)), model.head(model.backbone(v1)))
        opt.zero_grad()
        loss.backward()
        opt.step()
        done += v0.shape[0]
    return done / (time.perf_counter() - start)


def _shard_dataset(folder: Path, work: Path, size: int, aug):
    """The same images as WebDataset shards (``dataset=shards``), converted once under ``work``."""
    from contrastive.data.shards.reader import ShardImages
    from contrastive.data.shards.format import read_manifest
    from contrastive.data.shards.writer import convert_split
    from contrastive.data.stream import CropBatches, geometric_of

    out = work / "shards-train"
    if not (out / "contrastive_shards.json").is_file():
        convert_split([(str(p), c) for p, c in _files(folder, 10**9)], out, ["c"], str(folder), shard_bytes=64 << 20)
    manifest = read_manifest(out)
    images = ShardImages(str(out), size, [s["filename"] for s in manifest["shards"]], [s["samples"] for s in manifest["shards"]])
    labels = torch.zeros(len(images), dtype=torch.long)
    return CropBatches(images, labels, geometric_of(aug, (3 / 4, 4 / 3)), 2, seed=0), images.shard_sizes


def throughput(folder: Path, workers: int, batch: int = 64, steps: int = 5, repeats: int = 2,
               shards_work: Path | None = None) -> dict:
    from lightly.loss import NTXentLoss
    from lightly.transforms import SimCLRTransform
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    from contrastive.augment.pipelines import SimCLRAugment
    from contrastive.data.base import RandomBatchSampler
    from contrastive.augment.photometric import stream_views
    from contrastive.data.stream import CropBatches, EpochTagged, FileImages, geometric_of, worker_init

    samples = _files(folder, 10**9)
    out = {"workers": workers, "batch": batch, "steps": steps, "load_before": _load()}
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for size in (96, 224):
        aug = SimCLRAugment(size, mean, std, cj_strength=1.0, blur_prob=0.5)
        files = FileImages([str(p) for p, _ in samples], size, decoder="torchvision")
        labels = torch.tensor([c for _, c in samples])
        ds = CropBatches(files, labels, geometric_of(aug, (3 / 4, 4 / 3)), 2, seed=0)
        ref = ImageFolder(str(folder / "train"), transform=SimCLRTransform(input_size=size))
        res = {"ours": [], "lightly": []}
        if shards_work is not None:  # the same images read from shards (dataset=shards) by its shard-aware sampler
            from contrastive.data.shards.reader import ShardShuffleBatchSampler

            shard_ds, shard_sizes = _shard_dataset(folder, shards_work, size, aug)
            res["ours_shards"] = []
        for r in range(repeats):
            for name in res:
                torch.manual_seed(0)
                model = _Model(size)
                opt = torch.optim.SGD(model.parameters(), lr=0.01)
                if name.startswith("ours"):
                    if name == "ours":
                        data, sampler = ds, EpochTagged(RandomBatchSampler(len(samples), batch, seed=r))
                    else:
                        data, sampler = shard_ds, EpochTagged(ShardShuffleBatchSampler(shard_sizes, batch, seed=r))
                    loader = DataLoader(data, batch_size=None, sampler=sampler, num_workers=workers, worker_init_fn=worker_init)
                    views = lambda b: stream_views(aug, b[0])  # noqa: E731
                else:
                    loader = DataLoader(ref, batch_size=batch, shuffle=True, num_workers=workers, drop_last=True)
                    views = lambda b: b[0]  # noqa: E731
                res[name].append(_train_loop(loader, model, NTXentLoss(), opt, steps, views))
                del loader
        out[f"{size}px"] = {k: round(statistics.median(v), 1) for k, v in res.items()}
        out[f"{size}px"]["ratio"] = round(out[f"{size}px"]["ours"] / out[f"{size}px"]["lightly"], 2)
    out["load_after"] = _load()
    return out


def _child(code: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=900)
    if proc.returncode:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


_TRAIN = """
import json, resource, sys, time
sys.argv = ['x']
from contrastive.config.compose import load_config
from contrastive.engine.run import prepare_run, build_trainer
from contrastive.data.module import ArrayDataModule
cfg = load_config({overrides!r})
t0 = time.perf_counter()
run = prepare_run(cfg)
dm = ArrayDataModule(run.splits, int(cfg.batch_size), 0, batch_sampler_factory=run.model.batch_sampler_factory())
trainer = build_trainer(cfg, run.run_dir, limit_train_batches={steps}, limit_val_batches=0, logger=False,
                        enable_checkpointing=False, callbacks=[], enable_progress_bar=False)
trainer.fit(run.model, datamodule=dm)
print(json.dumps({{"images": len(run.splits.train), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "seconds": round(time.perf_counter() - t0, 1)}}))
"""


def _subset_folder(folder: Path, n: int) -> Path:
    """A folder of symlinks to the first ``n`` images (same files, fewer of them)."""
    sub = folder.parent / f"{folder.name}-first{n}"
    shutil.rmtree(sub, ignore_errors=True)  # links left from a folder of another size would count too
    for path, _ in _files(folder, n):
        link = sub / "train" / path.parent.name / path.name
        if not link.exists():
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    (sub / "val").mkdir(exist_ok=True)
    for cls in (folder / "train").iterdir():
        if not (sub / "val" / cls.name).is_symlink():
            (sub / "val" / cls.name).symlink_to(sub / "train" / cls.name)
    return sub


def _train_overrides(folder: Path, size: int, workers: int, out: Path, storage: str = "stream") -> list:
    return ["dataset=imagefolder", f"dataset.root={folder}", f"dataset.image_size={size}", f"dataset.storage={storage}",
            f"dataset.num_workers={workers}", f"dataset.cache_dir={out / 'cache'}", "batch_size=64", "backbone.kwargs.width=16",
            "trainer.max_epochs=1", "scheduler.warmup_epochs=0", "knn.enabled=false", "trainer.accelerator=cpu",
            "trainer.progress_bar=false", f"output_dir={out / 'runs'}"]


def rss(folder: Path, workers: int, out: Path, small: int = 5000) -> dict:
    res = {}
    for n in (small, None):
        root = _subset_folder(folder, n or 10**9)  # symlinks (and a val/ of them) to the first n or all images
        res[str(n or "all")] = _child(_TRAIN.format(overrides=_train_overrides(root, 96, workers, out), steps=5))
    res["load"] = _load()
    return res


_FIRST = """
import json, time
t0 = time.perf_counter()
from contrastive.config.compose import load_config
from contrastive.data import build_dataset
from contrastive.data.module import ArrayDataModule
from contrastive.data.stream import CropBatches, EpochTagged, FileImages, geometric_of
from contrastive.augment.pipelines import SimCLRAugment
cfg = load_config({overrides!r})
splits = build_dataset(cfg.dataset)
if splits.train.streamed:
    from torch.utils.data import DataLoader
    from contrastive.data.base import RandomBatchSampler
    from contrastive.data.stream import worker_init
    aug = SimCLRAugment(96, (0.5,) * 3, (0.25,) * 3)
    ds = CropBatches(splits.train.images, splits.train.labels, geometric_of(aug, (0.75, 4 / 3)), 2, 0)
    loader = DataLoader(ds, batch_size=None, sampler=EpochTagged(RandomBatchSampler(len(ds), 64)), num_workers={workers},
                        worker_init_fn=worker_init)
else:
    loader = ArrayDataModule(splits, 64).train_dataloader()
next(iter(loader))
print(json.dumps({{"seconds": round(time.perf_counter() - t0, 2), "images": len(splits.train)}}))
"""


def first_batch(folder: Path, workers: int, out: Path, n: int = 5000) -> dict:
    root, res = _subset_folder(folder, n), {"load_before": _load()}

    shutil.rmtree(out / "cache", ignore_errors=True)
    for name, storage in (("stream", "stream"), ("memory_cold_cache", "memory"), ("memory_warm_cache", "memory")):
        res[name] = _child(_FIRST.format(overrides=_train_overrides(root, 96, workers, out, storage), workers=workers))
    res["load_after"] = _load()
    return res


_SHARED = """
import json, sys, time
from pathlib import Path
from contrastive.data.io.cache import open_cache
path = Path(sys.argv[1]); key = path.stem
images, labels, _ = open_cache(path, key, verify=False)
total = int(images.view(-1)[::4096].sum())  # one byte of every 4 KiB page: the whole file is read in
def mapping_kb(name):  # the cache file's own mapping in /proc/self/smaps
    out, inside = {}, False
    for line in open('/proc/self/smaps'):
        if '-' in line.split()[0] and len(line.split()) >= 5:
            inside = line.rstrip().endswith(name)
        elif inside and line.split()[0].endswith(':') and line.split()[1].isdigit():
            out[line.split()[0][:-1]] = out.get(line.split()[0][:-1], 0) + int(line.split()[1])
    return out
m = mapping_kb(path.name)
print(json.dumps({"data_mb": round(images.numel() / 2**20, 1), "mapping_rss_mb": round(m.get('Rss', 0) / 1024, 1),
                  "mapping_private_mb": round((m.get('Private_Clean', 0) + m.get('Private_Dirty', 0)) / 1024, 2),
                  "mapping_shared_mb": round((m.get('Shared_Clean', 0) + m.get('Shared_Dirty', 0)) / 1024, 1)}), flush=True)
time.sleep(float(sys.argv[2]))
"""


def shared_cache(out: Path) -> dict:
    (cache,) = sorted((out / "cache").glob("*.u8"), key=lambda p: p.stat().st_size)[-1:]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    first = subprocess.Popen([sys.executable, "-c", _SHARED, str(cache), "60"], stdout=subprocess.PIPE, text=True, env=env)
    a = json.loads(first.stdout.readline())
    b = _child(_SHARED.replace("sys.argv[1]", repr(str(cache))).replace("float(sys.argv[2])", "0"))
    first.kill()
    return {"file": cache.name, "first": a, "second": b, "second_private_share": round(b["mapping_private_mb"] / b["data_mb"], 4)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", type=Path, default=Path("/tmp/bench_jpegs"))
    parser.add_argument("--num-images", type=int, default=20000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=5, help="throughput: timed steps per repeat")
    parser.add_argument("--repeats", type=int, default=2, help="throughput: interleaved repeats (median)")
    parser.add_argument("--shards", action="store_true", help="throughput: also from WebDataset shards (dataset=shards)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/bench_data_work"))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "bench_data-cpu.jsonl")
    parser.add_argument("--only", nargs="*", default=["generate", "decoders", "throughput", "first_batch", "shared_cache", "rss"])
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    for section in args.only:
        if section == "generate":
            result = generate(args.folder, args.num_images)
        elif section == "decoders":
            result = decoders(args.folder)
        elif section == "throughput":
            result = throughput(args.folder, args.workers, steps=args.steps, repeats=args.repeats,
                                shards_work=args.work if args.shards else None)
        elif section == "first_batch":
            result = first_batch(args.folder, args.workers, args.work)
        elif section == "shared_cache":
            result = shared_cache(args.work)
        elif section == "rss":
            result = rss(args.folder, args.workers, args.work)
        else:
            raise SystemExit(f"unknown section {section}")
        record = {"section": section, "cores": os.cpu_count(), "load": _load(), "torch": torch.__version__, **result}
        print(json.dumps(record), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps(record) + "\n")


if __name__ == "__main__":
    main()
