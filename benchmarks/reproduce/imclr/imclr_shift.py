"""Cost of the Keras-style continuous shift (``augment.shift_range`` + ``shift_fill=nearest``) vs the
default integer shift with zero fill, on one uint8 batch, interleaved repeats, one thread.

    OMP_NUM_THREADS=1 python benchmarks/reproduce/imclr/imclr_shift.py [--batch 256] [--size 32] [--repeats 30]

Both are one bilinear ``grid_sample`` (contrastive.augment.ops.resized_crop); only the drawn
offsets and the padding mode differ, so the times should be equal within noise.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from contrastive.augment.pipelines import SupervisedAugment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    stats = (0.5, 0.5, 0.5)
    images = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)  # [B, 3, S, S]
    augments = {
        "padding=4, shift_fill=zero (default)": SupervisedAugment(args.size, stats, stats, padding=4),
        "shift_range=0.1, shift_fill=nearest (Keras)": SupervisedAugment(args.size, stats, stats, padding=0,
                                                                         shift_range=0.1, shift_fill="nearest"),
    }
    times = {name: [] for name in augments}
    for _ in range(args.repeats):  # interleaved, so that load on the machine hits both alike
        for name, augment in augments.items():
            start = time.perf_counter()
            augment(images)
            times[name].append(time.perf_counter() - start)
    for name, values in times.items():
        print(f"{name}: median {statistics.median(values) * 1e3:.2f} ms per batch of {args.batch} "
              f"at {args.size}x{args.size} ({args.repeats} repeats)")


if __name__ == "__main__":
    main()
