"""Parameter counts of the ImCLR paper's networks for k=1 (standard input) and k=2 (ImCLR).

    OMP_NUM_THREADS=1 python benchmarks/imclr_params.py

Builds the ImCLR model (backbone + linear classifier) of every paper setting with method.k=1 and
method.k=2, counts its parameters and runs one k*S x S input through it. All the registered
backbones end in global average pooling, so the count does not depend on the input size: k=1 and
k=2 have the same parameters, only the activations (and the compute, ~k times) grow.

A CIFAR codebase that ends in a *fixed* pooling window sized for S x S inputs followed by a
flatten (e.g. ``F.avg_pool2d(out, 4)`` in kuangliu/pytorch-cifar's ResNets/VGG, or
``avg_pool2d(out, 8)`` in many WRN / CIFAR-ResNet implementations) leaves a k x 1 map on a
k*S x S input, so its classifier must take k * D inputs: ``(k - 1) * D * C`` more parameters.
The last column gives that count, the likely source of any k=2 increase in the paper's Table 10
(whose numbers are not reproduced here: we did not have them to compare with).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from contrastive.backbones import count_parameters
from contrastive.config import load_builtin_methods, load_config
from contrastive.method import DataInfo
from contrastive.registry import METHODS

# (setting, backbone, number of classes, image side)
SETTINGS = [
    ("RN56-TINYIMAGENET", "resnet56", 200, 64),
    ("VGG16-CIFAR100", "vgg16", 100, 32),
    ("PRN18-CIFAR100", "preact_resnet18", 100, 32),
    ("RN20-CIFAR10", "resnet20", 10, 32),
    ("WRN16-8-STL10", "wrn_16_8", 10, 96),
    ("WRN28-2-CIFAR10", "wrn_28_2", 10, 32),
    ("SERN18-CIFAR100", "seresnet18", 100, 32),
]


def build(backbone: str, num_classes: int, size: int, k: int):
    cfg = load_config(["method=imclr", f"backbone={backbone}", f"method.k={k}"])
    data = DataInfo(num_classes=num_classes, image_size=size, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=1)
    return METHODS.get("imclr")(cfg, data).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/imclr_params.md", help="markdown table written here ('' = none)")
    args = parser.parse_args()
    load_builtin_methods()
    torch.set_num_threads(1)
    lines = []
    header = ("| setting | backbone | D | C | backbone params | k=1 total | k=2 total | k=2 input | "
              "k=2 total with a fixed-pool + flatten head |")
    lines += [header, "|---" * (header.count("|") - 1) + "|"]
    for setting, backbone, classes, size in SETTINGS:
        counts, feature_dim = {}, None
        for k in (1, 2):
            model = build(backbone, classes, size, k)
            with torch.no_grad():
                out = model.predict(torch.zeros(1, 3, size, size))  # the k-fold self-concatenation
            assert out.shape == (1, classes)
            counts[k], feature_dim = count_parameters(model), model.backbone.feature_dim
            bb = count_parameters(model.backbone)
        flatten_k2 = counts[1] + feature_dim * classes  # one more D x C block of classifier weights
        lines.append(f"| {setting} | {backbone} | {feature_dim} | {classes} | {bb:,} | {counts[1]:,} | "
                     f"{counts[2]:,} | {2 * size}x{size} | {flatten_k2:,} |")
        print(lines[-1] if len(lines) > 3 else "\n".join(lines), flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(
            "# ImCLR parameter counts (k=1 vs k=2)\n\nCommand: `OMP_NUM_THREADS=1 python benchmarks/imclr_params.py`\n\n"
            + "\n".join(lines) + "\n\nSee the docstring of benchmarks/imclr_params.py for the last column.\n")


if __name__ == "__main__":
    main()
