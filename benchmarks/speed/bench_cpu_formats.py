"""fp32 / bf16 autocast x contiguous / channels-last: forward + backward images/s of an encoder on the CPU.

The measurement behind ``contrastive/core/hardware.py``'s rules (bf16 only with native bf16,
channels-last on x86 with AVX2+). Median of 3 timed passes after one warm-up, per setting.

Usage:
    python benchmarks/speed/bench_cpu_formats.py                       # small_cnn w16 and w32, 32x32, batch 256
    python benchmarks/speed/bench_cpu_formats.py --backbone resnet18 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root
from contrastive.backbones.factory import create_backbone  # noqa: E402
from contrastive.core.hardware import describe  # noqa: E402


def bench(net, x, channels_last: bool, amp: bool, repeats: int = 3) -> float:
    if channels_last:
        net, x = net.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    times = []
    for _ in range(repeats + 1):
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = net(x).float().sum()
        out.backward()
        times.append(time.perf_counter() - start)
    return round(len(x) / statistics.median(times[1:]), 1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--widths", type=int, nargs="*", default=[16, 32])
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=256)
    args = p.parse_args()
    result = {"cpu": describe(), "load": os.getloadavg(), "threads": torch.get_num_threads(), "images_per_s": {}}
    for width in args.widths if args.backbone == "small_cnn" else [0]:
        torch.manual_seed(0)
        kwargs = {"width": width} if width else {}
        x = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
        row = {}
        for cl in (False, True):
            for amp in (False, True):
                net = create_backbone(args.backbone, args.image_size, **kwargs)
                row[f"{'channels_last' if cl else 'contiguous'}-{'bf16' if amp else 'fp32'}"] = bench(net, x, cl, amp)
        result["images_per_s"][f"{args.backbone}{width or ''}"] = row
        print(width, row, flush=True)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
