"""Trainable parameters of the ImCLR paper's networks vs its Appendix Table 10, for every k listed.

    OMP_NUM_THREADS=1 python benchmarks/reproduce/imclr/imclr_params.py

For every Table 10 entry (experiment, one-hot = k=1, ImCLR = k=2, and VGG16/RN20 at k=3 and 5)
this composes the entry's preset (``configs/experiment/``) with ``method.k=<k>``, builds the model
the framework trains (backbone + the method's classifier, with ImCLR's forward probe of one
``k*S x S`` input), counts its trainable parameters and prints them next to the paper's number.
The paper's counts are data, ``tests/data/imclr_table10.yaml``, which ``tests/test_imclr_paper.py``
reads too: it asserts every count against the network the framework builds.

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
import yaml

ROOT = Path(__file__).resolve().parents[3]  # the repository root
sys.path.insert(0, str(ROOT))

from contrastive.config.compose import load_config  # noqa: E402
from contrastive.config.plugins import load_builtin_methods  # noqa: E402
from contrastive.engine.method import DataInfo  # noqa: E402
from contrastive.core.registry import METHODS  # noqa: E402

#: The paper's counts, shared with tests/test_imclr_paper.py: one entry per Table 10 experiment
#: (experiment, preset, classes, image_size, params = {k: trainable parameters}).
TABLE10_FILE = ROOT / "tests" / "data" / "imclr_table10.yaml"


def load_table10(path: Path = TABLE10_FILE) -> List[Dict]:
    """The Table 10 entries of ``tests/data/imclr_table10.yaml``."""
    return yaml.safe_load(path.read_text())


def trainable(module: torch.nn.Module) -> int:
    """Trainable parameters (Keras' "Trainable params": BatchNorm's gamma/beta, not its statistics)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def table10_rows(probe: bool = True) -> List[Dict]:
    """One dict per (entry, k): experiment, preset, k, input, backbone, ours, paper, equal.

    Args:
        probe: Keep ImCLR's forward probe of one ``k*S x S`` input; ``False`` (faster) skips it and
            builds on the meta device (same parameter shapes, no values), as the test does.
    """
    load_builtin_methods()
    rows = []
    skip = mock.patch.object(METHODS.get("imclr"), "_check_backbone_input", lambda self: None)
    # Without the probe, the models are built on the meta device: shapes only, no memory, no init time.
    with contextlib.nullcontext() if probe else skip, contextlib.nullcontext() if probe else torch.device("meta"):
        for entry in load_table10():
            name, preset, classes, size, paper = (entry[f] for f in ("experiment", "preset", "classes", "image_size", "params"))
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
    parser.add_argument("--out", default="benchmarks/reproduce/imclr/results/imclr_params.md", help="markdown table written here ('' = none)")
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
                                  "benchmarks/reproduce/imclr/imclr_params.py`\n\n" + "\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
