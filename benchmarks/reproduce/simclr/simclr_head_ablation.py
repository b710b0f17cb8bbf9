"""SimCLR's projection-head ablation (Chen et al. 2020, Fig. 8: none / linear / non-linear), 3 seeds.

    OMP_NUM_THREADS=2 python benchmarks/reproduce/simclr/simclr_head_ablation.py              # 3 heads x 3 seeds on synthetic
    python benchmarks/reproduce/simclr/simclr_head_ablation.py --table-only

The budget, the evaluation (kNN and linear-probe top-1 of the frozen encoder ``h`` on the
val split, TP / FN / TN in the loss space) and the output are those of
``benchmarks/reproduce/spcl/spcl_vs_simclr.py``. The paper's finding (Fig. 8, ImageNet, evaluated on
``h``): the non-linear head is better than the linear one (+3%), which is much better than
none (> 10%).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3]))  # the repository root

from benchmarks.reproduce.spcl.spcl_vs_simclr import main  # noqa: E402

ROWS = {
    "none": ("SimCLR, no head (num_layers=0, loss on h)", ["method=simclr", "method.projection.num_layers=0"]),
    "linear": ("SimCLR, linear head (num_layers=1)", ["method=simclr", "method.projection.num_layers=1"]),
    "nonlinear": ("SimCLR (NT-Xent, 2-layer head)", ["method=simclr"]),
}

if __name__ == "__main__":
    main(ROWS, "none,linear,nonlinear", "/tmp/simclr_head_ablation/rows.jsonl")
