"""A class-per-folder subset of Tiny ImageNet, resized once and saved losslessly, so every side reads the same pixels.

    python benchmarks/reproduce/parity/make_subset.py --src /work/data/tiny-imagenet-200 \\
        --dst /work/data/tin10-32 --classes 10 --train-per-class 500 --image-size 32

Classes: every ``200 / N``-th wnid of the sorted ``wnids.txt`` (N = 10: the 1st, 21st, 41st, ...).
Train: the first ``--train-per-class`` files of ``train/<wnid>/images`` in name order; val: every val image
of those classes (``val_annotations.txt``; 50 per class). Each image is resized exactly as our
``imagefolder`` memory cache does it: :func:`contrastive.data.io.decode.decode_rgb` with ``size`` and
``resize = eval_resize(size, 1.0)``, ``decoder=auto`` as ``dataset.decoder`` (the shorter side to ``size``, bilinear with antialiasing, then the
centre crop), and written as PNG (lossless), as ``<dst>/{train,val}/<wnid>/<name>.png``. Reading the PNGs
back (torchvision's ImageFolder, or our cache at ``dataset.image_size`` = the same size) gives those pixels
unchanged, so ours and a reference train on identical data.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))


def pick_classes(wnids, n: int):
    """Every ``len(wnids) // n``-th of the sorted wnids; one-line error if ``n`` does not divide sensibly."""
    wnids = sorted(wnids)
    if not 0 < n <= len(wnids):
        raise SystemExit(f"error: --classes {n} must be in 1..{len(wnids)}")
    return wnids[:: len(wnids) // n][:n]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", required=True, help="Tiny ImageNet root (wnids.txt, train/, val/)")
    parser.add_argument("--dst", required=True)
    parser.add_argument("--classes", type=int, default=10)
    parser.add_argument("--train-per-class", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=32)
    args = parser.parse_args(argv)
    from PIL import Image

    from contrastive.data.io.decode import decode_rgb, eval_resize

    src, dst = Path(args.src), Path(args.dst)
    if not (src / "wnids.txt").is_file():
        raise SystemExit(f"error: {src} is not a Tiny ImageNet root (no wnids.txt)")
    classes = pick_classes((src / "wnids.txt").read_text().split(), args.classes)
    files = []
    for w in classes:
        train = sorted((src / "train" / w / "images").glob("*.JPEG"))[: args.train_per_class]
        files += [(p, dst / "train" / w) for p in train]
    for line in (src / "val" / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        if wnid in classes:
            files.append((src / "val" / "images" / name, dst / "val" / wnid))
    size = args.image_size
    resize = eval_resize(size, 1.0)  # our dataset.eval_crop_fraction default (configs/train.yaml)
    for path, folder in files:
        folder.mkdir(parents=True, exist_ok=True)
        pixels = decode_rgb(path, "auto", size, resize).permute(1, 2, 0).numpy()
        Image.fromarray(pixels).save(folder / (path.stem + ".png"))
    print(f"{dst}: {len(classes)} classes ({', '.join(classes)}), {len(files)} images at {size} px")


if __name__ == "__main__":
    main()
