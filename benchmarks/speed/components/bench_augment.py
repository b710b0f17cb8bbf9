"""Batched SimCLR augmentation alone: this framework's ops vs kornia vs torchvision per sample.

The question it answers: should the on-device augmentation use a library
(kornia's batched, per-sample-parameter augmentations) or our own ops? All three produce
the same pipeline at SimCLR's settings for CIFAR-size images (random resized crop
0.08-1, flip 0.5, colour jitter s=0.5 with p=0.8, grayscale 0.2, normalisation), with
independent parameters per image:

* ours:        ``contrastive.augment.pipelines.SimCLRAugment`` on a uint8 batch;
* kornia:      ``kornia.augmentation`` RandomResizedCrop, RandomHorizontalFlip,
               ColorJitter, RandomGrayscale, Normalize in an ``AugmentationSequential``;
* torchvision: ``transforms.v2`` applied image by image (what a DataLoader worker does,
               minus the worker), for scale.

Reported: median milliseconds per batch of several repetitions after warm-up, images/s,
and the ratio to ours. kornia is optional (``pip install kornia``); it is not a
dependency of the project.

Usage:
    python benchmarks/speed/components/bench_augment.py                        # CPU, 32x32, batch 256
    python benchmarks/speed/components/bench_augment.py --size 64 --batch 512 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root
from contrastive.augment.pipelines import SimCLRAugment  # noqa: E402

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
JITTER = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)  # 0.8 x s, 0.2 x s with s = 0.5


def build_ours(size: int):
    aug = SimCLRAugment(size, MEAN, STD)
    return lambda x: aug(x)


def build_kornia(size: int, device):
    import kornia.augmentation as K

    pipe = K.AugmentationSequential(
        K.RandomResizedCrop((size, size), scale=(0.08, 1.0)),
        K.RandomHorizontalFlip(p=0.5),
        K.ColorJitter(**JITTER, p=0.8),
        K.RandomGrayscale(p=0.2),
        K.Normalize(mean=torch.tensor(MEAN), std=torch.tensor(STD)),
    ).to(device)
    return lambda x: pipe(x.float().div_(255))  # kornia takes float images


def build_torchvision(size: int):
    from torchvision.transforms import v2

    tf = v2.Compose([
        v2.RandomResizedCrop(size, scale=(0.08, 1.0), antialias=True),
        v2.RandomHorizontalFlip(),
        v2.RandomApply([v2.ColorJitter(**JITTER)], p=0.8),
        v2.RandomGrayscale(p=0.2),
        v2.ToDtype(torch.float32, scale=True),
        v2.Normalize(MEAN, STD),
    ])
    return lambda x: torch.stack([tf(img) for img in x])  # one image at a time: its own parameters


def time_it(fn, x, device, warmup: int, repeats: int) -> float:
    for _ in range(warmup):
        fn(x)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn(x)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8, device=device)  # [B, 3, H, W]
    pipelines = {"ours": build_ours(args.size), "torchvision v2 per image": build_torchvision(args.size)}
    try:
        pipelines["kornia"] = build_kornia(args.size, device)
    except ImportError:
        print("kornia is not installed (pip install kornia); skipping it")
    results = {name: time_it(fn, x, device, args.warmup, args.repeats) for name, fn in pipelines.items()}
    print(f"SimCLR augmentation, batch {args.batch} x {args.size}x{args.size}, {device}, torch threads "
          f"{torch.get_num_threads()}, median of {args.repeats}")
    print(f"{'pipeline':<26}{'ms/batch':>10}{'images/s':>12}{'time vs ours':>14}")
    for name, seconds in results.items():
        print(f"{name:<26}{seconds * 1e3:>10.1f}{args.batch / seconds:>12.0f}{seconds / results['ours']:>13.1f}x")


if __name__ == "__main__":
    main()
