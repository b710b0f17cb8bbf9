"""Trainable parameters of the ImCLR paper's networks vs its Appendix Table 10, for every k listed.

    OMP_NUM_THREADS=1 python benchmarks/imclr_params.py

For every Table 10 entry (experiment, one-hot = k=1, ImCLR = k=2, and VGG16/RN20 at k=3 and 5)
this composes the entry's preset (``configs/experiment/``) with ``method.k=<k>``, builds the model
the framework trains (backbone + the method's classifier, with ImCLR's forward probe of one
``k*S x S`` input), counts its trainable parameters and prints them next to the paper's number.
``tests/test_imclr_paper.py`` asserts that every row is equal.

The differences between k=1 and k>1 come from the flatten heads (RN20, RN56, VGG16, WRN-16-8):
the ``k*S x S`` input leaves a ``k x 1`` pooled map, so the layer after the Flatten has k times
the inputs. PRN18, SRN18 and WRN-28-2 pool globally: equal counts.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import sys
from pathlib import Path
from typing import Dict, List
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.engine.method import DataInfo  # noqa: E402
from contrastive.core.registry import METHODS  # noqa: E402

# (Table 10 experiment, preset, classes, image side, {k: the paper's trainable parameters})
TABLE10 = [
    ("RN56-TINYIMAGENET", "imclr_rn56_tinyimagenet", 200, 64, {1: 1_865_768, 2: 2_070_568}),
    ("VGG16-CIFAR100", "imclr_vgg16_cifar100", 100, 32, {1: 15_038_116, 2: 15_300_260, 3: 15_562_404, 5: 16_086_692}),
    ("PRN18-CIFAR100", "imclr_prn18_cifar100", 100, 32, {1: 11_222_244, 2: 11_222_244}),
    ("SRN18-CIFAR10", "imclr_srn18_cifar10", 10, 32, {1: 11_267_842, 2: 11_267_842}),
    ("RN20-CIFAR10", "imclr_rn20_cifar10", 10, 32, {1: 570_602, 2: 573_162, 3: 575_722, 5: 580_842}),
    ("WRN-STL10", "imclr_wrn16_8_stl10", 10, 96, {1: 11_002_330, 2: 11_048_410}),
    ("WRN-CIFAR10-SSL", "imclr_pimodel_wrn28_2_cifar10", 10, 32, {1: 1_467_610, 2: 1_467_610}),
]


def trainable(module: torch.nn.Module) -> int:
    """Trainable parameters (Keras' "Trainable params": BatchNorm's gamma/beta, not its statistics)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def table10_rows(probe: bool = True) -> List[Dict]:
    """One dict per (entry, k): experiment, preset, k, input, backbone, ours, paper, equal.

    Args:
        probe: Keep ImCLR's forward probe of one ``k*S x S`` input; ``False`` (the test, for speed)
            skips it and builds on the meta device (same parameter shapes, no values).
    """
    load_builtin_methods()
    rows = []
    skip = mock.patch.object(METHODS.get("imclr"), "_check_backbone_input", lambda self: None)
    # Without the probe, the models are built on the meta device: shapes only, no memory, no init time.
    with contextlib.nullcontext() if probe else skip, contextlib.nullcontext() if probe else torch.device("meta"):
        for name, preset, classes, size, paper in TABLE10:
            base = load_config([f"experiment={preset}"])
            data = DataInfo(num_classes=classes, image_size=size, mean=(0.5,) * 3, std=(0.5,) * 3, num_train=50_000)
            for k, expected in paper.items():
                cfg = copy.deepcopy(base)
                cfg.method.k = k
                model = METHODS.get(cfg.method.name)(cfg, data)
                ours = trainable(model)
                rows.append({"experiment": name, "preset": preset, "k": k, "input": f"{k * size}x{size}",
                             "backbone": cfg.backbone.name, "ours": ours, "paper": expected, "equal": ours == expected})
                del model
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="benchmarks/results/imclr_params.md", help="markdown table written here ('' = none)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    lines = ["| Table 10 experiment | command | k | input | backbone | trainable params (ours) | paper | equal |",
             "|---|---|---|---|---|---|---|---|"]
    print(lines[0] + "\n" + lines[1], flush=True)
    for r in table10_rows():
        command = f"`python train.py experiment={r['preset']} method.k={r['k']}`"
        lines.append(f"| {r['experiment']} | {command} | {r['k']} | {r['input']} | {r['backbone']} | {r['ours']:,} | "
                     f"{r['paper']:,} | {'equal' if r['equal'] else 'NOT EQUAL'} |")
        print(lines[-1], flush=True)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("# ImCLR Table 10: trainable parameters\n\nCommand: `OMP_NUM_THREADS=1 python "
                                  "benchmarks/imclr_params.py`\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
