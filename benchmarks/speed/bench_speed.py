"""SimCLR training throughput: this framework's data path vs the standard lightly pipeline.

Both pipelines train the same model (backbone + lightly ``SimCLRProjectionHead`` +
``NTXentLoss``, LARS, same batch size and initial weights) on the same images:

* reference: ``lightly.transforms.SimCLRTransform`` on PIL images in a ``DataLoader``
  with as many workers as cores (the documented lightly way);
* ours: images held as one uint8 tensor (on the GPU when there is one), batches by
  index, ``contrastive.augment.pipelines.SimCLRAugment`` batch-wise on the training device.

Steps are timed after warm-up, in repetitions that alternate between the two
pipelines so that both see the same machine noise; the median is reported.
One image = its two views. ``--parity`` additionally trains both for a few epochs
from the same seed and compares kNN top-1, and ``--grid`` saves augmented views.

``--full-run`` instead times complete runs (``benchmarks/speed/full_run.py``): ``train.py``'s
own ``fit`` with its kNN monitor, checkpoints and logs vs the lightly tutorial pipeline
with the same encoder, data, optimizer and epochs, each run in its own process,
alternating, reporting images/s, wall time, peak RSS and the final kNN of both.

Usage:
    python benchmarks/speed/bench_speed.py                       # synthetic, 32x32, small_cnn on CPU
    python benchmarks/speed/bench_speed.py --backbone resnet18 --batch-size 512 --num-images 50000
    python benchmarks/speed/bench_speed.py --dataset tinyimagenet --root /path/to/data
    python benchmarks/speed/bench_speed.py --full-run --num-images 5000 --epochs 5 --repeats 3   # whole runs
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import torch
from lightly.loss import NTXentLoss
from lightly.models.modules import SimCLRProjectionHead
from lightly.transforms import SimCLRTransform
from lightly.utils.lars import LARS
from PIL import Image
from torch.utils.data import DataLoader, Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from contrastive.augment.pipelines import SimCLRAugment  # noqa: E402
from contrastive.backbones.factory import create_backbone  # noqa: E402
from contrastive.data.base import ImageArray, IndexedBatches, RandomBatchSampler  # noqa: E402
from contrastive.metrics.knn import knn_accuracy  # noqa: E402

MEAN, STD = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)


class PILDataset(Dataset):
    """What torchvision's CIFAR10 does: uint8 array -> PIL image -> transform, per sample."""

    def __init__(self, images: torch.Tensor, transform) -> None:
        self.images = images.permute(0, 2, 3, 1).numpy()  # [N, H, W, 3] uint8
        self.transform = transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        return self.transform(Image.fromarray(self.images[i]))


class SimCLRNet(torch.nn.Module):
    def __init__(self, backbone_name: str, image_size: int, width: int) -> None:
        super().__init__()
        kwargs = {"width": width} if backbone_name == "small_cnn" else {}
        self.backbone = create_backbone(backbone_name, image_size, **kwargs)
        self.head = SimCLRProjectionHead(self.backbone.feature_dim, 2048, 128)

    def forward(self, x):
        return self.head(self.backbone(x))


def load_images(args) -> ImageArray:
    if args.dataset == "synthetic":
        from contrastive.data.sources.synthetic import generate_shapes

        return ImageArray(*generate_shapes(args.num_images, args.image_size, 10, seed=0))
    from contrastive.config.compose import load_config
    from contrastive.data import build_dataset

    # every dataset key with its YAML default (the data code reads them plainly; a hand-made config lacks some)
    cfg = load_config([f"dataset={args.dataset}", f"dataset.root={args.root}", f"dataset.image_size={args.image_size}",
                       "dataset.storage=memory"]).dataset
    train = build_dataset(cfg).train
    return train.subset(torch.arange(min(args.num_images, len(train))))


def make_step(net, optimizer, criterion, device, amp):
    def step(v0, v1):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss = criterion(net(v0), net(v1))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss
    return step


def reference_batches(data: ImageArray, args, transform):
    loader = DataLoader(PILDataset(data.images, transform), batch_size=args.batch_size, shuffle=True, drop_last=True,
                        num_workers=args.workers, pin_memory=args.device == "cuda", persistent_workers=args.workers > 0)
    while True:
        for v0, v1 in loader:
            yield v0, v1


def our_batches(data: ImageArray, args, augment, device):
    """Augmented view pairs, batches gathered by index. Off the CPU the whole dataset (images and labels)
    and the epoch's permutation live on ``device``: a batch is one gather there, with no host-to-device
    copy of its index (an index on one device cannot index a tensor on another)."""
    on_device = device.type != "cpu"
    array = ImageArray(data.images.to(device), data.labels.to(device)) if on_device else data
    batches = IndexedBatches(array)
    sampler = RandomBatchSampler(len(data), args.batch_size, seed=0, device=device if on_device else None)
    epoch = 0
    while True:
        sampler.set_epoch(epoch)
        for idx in sampler:
            x = batches[idx][0].to(device, non_blocking=True)  # uint8 [B,3,H,W]
            yield augment(x), augment(x)
        epoch += 1


def timed(batches, step, steps, device, channels_last):
    start = time.perf_counter()
    for _ in range(steps):
        v0, v1 = next(batches)
        v0, v1 = v0.to(device, non_blocking=True), v1.to(device, non_blocking=True)
        if channels_last:
            v0, v1 = v0.contiguous(memory_format=torch.channels_last), v1.contiguous(memory_format=torch.channels_last)
        loss = step(v0, v1)
    loss.item()  # one sync at the end of the repetition
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def build(args, device):
    torch.manual_seed(0)
    net = SimCLRNet(args.backbone, args.image_size, args.width).to(device)
    if args.channels_last:
        net = net.to(memory_format=torch.channels_last)
    optimizer = LARS(net.parameters(), lr=0.3 * args.batch_size / 256, momentum=0.9, weight_decay=1e-6)
    return net, make_step(net, optimizer, NTXentLoss(0.5), device, amp=device.type == "cuda")


@torch.no_grad()
def knn_of(net, data: ImageArray, val: ImageArray, device) -> float:
    from contrastive.augment.pipelines import EvalTransform

    tf = EvalTransform(data.images.shape[-1], MEAN, STD).to(device)
    net.eval()
    feats = [torch.cat([net.backbone(tf(a.images[i:i + 512].to(device))).float().cpu() for i in range(0, len(a), 512)]) for a in (data, val)]
    net.train()
    return knn_accuracy(feats[0], data.labels, feats[1], val.labels, int(data.labels.max()) + 1, k=200, temperature=0.1)[0]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="synthetic", choices=["synthetic", "tinyimagenet", "cifar10"])
    p.add_argument("--root", default="data")
    p.add_argument("--num-images", type=int, default=50_000)
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--width", type=int, default=16, help="small_cnn width (16: the default run's encoder)")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--steps", type=int, default=10, help="timed steps per repetition")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--workers", type=int, default=os.cpu_count())
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--channels-last", action="store_true", default=torch.cuda.is_available())
    p.add_argument("--parity-epochs", type=int, default=0, help="train both for this many epochs and compare kNN top-1")
    p.add_argument("--grid", default="", help="save a PNG grid of augmented views of both pipelines here")
    p.add_argument("--json", default="", help="write the results as JSON here")
    p.add_argument("--full-run", action="store_true", help="whole train.py runs vs the lightly reference (full_run.py)")
    p.add_argument("--epochs", type=int, default=5, help="--full-run: epochs per run")
    p.add_argument("--override", nargs="*", default=[], help="--full-run: extra train.py overrides")
    args = p.parse_args()
    if args.full_run:
        return full_run_main(args)
    device = torch.device(args.device)
    data = load_images(args)
    size = args.image_size
    ref_tf = SimCLRTransform(input_size=size, cj_strength=0.5, gaussian_blur=0.0, normalize={"mean": list(MEAN), "std": list(STD)})
    our_aug = SimCLRAugment(size, MEAN, STD).to(device)
    pipelines = {"reference": reference_batches(data, args, ref_tf), "ours": our_batches(data, args, our_aug, device)}
    models = {name: build(args, device) for name in pipelines}
    times = {name: [] for name in pipelines}
    for name in pipelines:  # warm-up: workers start, kernels and caches settle
        timed(pipelines[name], models[name][1], args.warmup, device, args.channels_last)
    for _ in range(args.repeats):
        for name in pipelines:
            times[name].append(timed(pipelines[name], models[name][1], args.steps, device, args.channels_last))
    result = {"date": str(date.today()), "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
              + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else ""), "device": args.device,
              "torch": torch.__version__, "args": vars(args)}
    for name, ts in times.items():
        med = statistics.median(ts)
        result[name] = {"images_per_s": round(args.steps * args.batch_size / med, 1),
                        "epoch_seconds": round(med / args.steps * (len(data) // args.batch_size), 2)}
    result["speedup"] = round(result["ours"]["images_per_s"] / result["reference"]["images_per_s"], 2)
    result["peak_memory_mb"] = (round(torch.cuda.max_memory_allocated() / 2**20) if device.type == "cuda"
                                else round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))
    if args.parity_epochs:
        result["parity"] = parity(args, data, device, ref_tf, our_aug)
    if args.grid:
        save_grid(args.grid, data, ref_tf, our_aug, device)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def full_run_main(args) -> None:
    """``--full-run``: the bench's options as train.py overrides -> ``full_run.compare``."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import full_run

    overrides = [f"batch_size={args.batch_size}", f"trainer.max_epochs={args.epochs}", f"backbone={args.backbone}",
                 f"trainer.accelerator={'gpu' if args.device == 'cuda' else 'cpu'}"]
    if args.backbone == "small_cnn":
        overrides.append(f"backbone.kwargs.width={args.width}")
    if args.dataset == "synthetic":
        overrides += [f"dataset.num_train={args.num_images}", f"dataset.image_size={args.image_size}"]
    else:
        overrides += [f"dataset={args.dataset}", f"dataset.root={args.root}", f"dataset.image_size={args.image_size}"]
    result = full_run.compare(overrides + list(args.override), args.repeats, args.workers)
    result["date"], result["torch"] = str(date.today()), torch.__version__
    result["machine"] = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


def parity(args, data: ImageArray, device, ref_tf, our_aug) -> dict:
    """Same seed, same epochs, both pipelines -> kNN top-1 of each (val = a fresh split)."""
    from contrastive.data.sources.synthetic import generate_shapes

    val = ImageArray(*generate_shapes(2000, args.image_size, 10, seed=1_000_003))
    steps = args.parity_epochs * (len(data) // args.batch_size)
    out = {}
    for name, make in (("reference", lambda: reference_batches(data, args, ref_tf)), ("ours", lambda: our_batches(data, args, our_aug, device))):
        net, step = build(args, device)
        torch.manual_seed(1)
        seconds = timed(make(), step, steps, device, args.channels_last)
        out[name] = {"knn_top1": round(knn_of(net, data, val, device), 2), "train_seconds": round(seconds, 1)}
    out["epochs"] = args.parity_epochs
    return out


def save_grid(path: str, data: ImageArray, ref_tf, our_aug, device) -> None:
    from torchvision.utils import save_image

    images = data.images[:8]
    ref = torch.stack([ref_tf(Image.fromarray(img.permute(1, 2, 0).numpy()))[0] for img in images for _ in range(4)])
    ours = torch.cat([our_aug(images.repeat_interleave(4, 0).to(device)).cpu()])
    grid = torch.cat([ref, ours]) * torch.tensor(STD).view(1, 3, 1, 1) + torch.tensor(MEAN).view(1, 3, 1, 1)
    save_image(grid.clamp(0, 1), path, nrow=16)
    print(f"saved {path}: first 2 rows lightly SimCLRTransform, last 2 rows contrastive SimCLRAugment (4 views of 8 images)")


if __name__ == "__main__":
    main()
