"""benchmarks/reproduce/simclr/simclr_ablations.py: its real-data rows do what their labels say; its tables.

No data is read and nothing trains: a row's ``augment.*`` overrides go on top of configs/augment/simclr.yaml
(what ``method=simclr`` uses) and the augmentation is applied to a tiny made-up batch.
"""

import torch
from omegaconf import OmegaConf

from benchmarks.reproduce.simclr.simclr_ablations import REAL_ROWS, TABLES, paired_differences, tables
from contrastive.augment.views import build_view_augments
from tests.conftest import ROOT


def _augment(key):
    row = [o[len("augment."):] for o in REAL_ROWS[key][1] if o.startswith("augment.")]
    cfg = OmegaConf.merge(OmegaConf.load(ROOT / "configs" / "augment" / "simclr.yaml"), OmegaConf.from_dotlist(row))
    return build_view_augments(OmegaConf.to_container(cfg, resolve=True), 16, [0.0] * 3, [1.0] * 3)


def test_crop_alone_leaves_colours_and_colour_alone_keeps_the_whole_image():
    flat = torch.tensor([200, 40, 90], dtype=torch.uint8).view(1, 3, 1, 1).expand(8, 3, 16, 16)  # one colour
    crop_only = _augment("crop_only")(flat.clone(), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(crop_only, flat.float() / 255, atol=1e-5)  # any crop of a flat image, colour untouched
    colour_only = _augment("colour_only")
    boxes = colour_only.sample_params(8, 16, 16, generator=torch.Generator().manual_seed(0)).crop
    assert torch.equal(boxes, torch.tensor([[0.0, 0.0, 16.0, 16.0]]).expand(8, 4))  # the whole image every time
    jittered = colour_only(flat.clone(), generator=torch.Generator().manual_seed(0))
    moved = (jittered - flat.float() / 255).abs().amax(dim=(1, 2, 3)) > 0.05  # [8]
    coloured = (jittered.amax(dim=1) - jittered.amin(dim=1)).amax(dim=(1, 2)) > 0.01  # [8] not grayscale
    assert (moved & coloured).any()  # the colour is jittered (not only turned gray)


def test_tables_share_the_baseline_and_pair_by_seed():
    records = [{"key": k, "label": REAL_ROWS[k][0], "seed": s, "knn_top1": 10.0 * s + i, "linear_top1": 1.0,
                "images_per_second": 1.0, "train_seconds": 1.0}
               for s in (0, 1) for i, k in enumerate(["baseline", "crop_only", "t_0.1"])]
    text = tables(records)
    assert text.count("(baseline) | 0,1 | 5.0 ± 7.1") == len(TABLES)  # one baseline row in each table
    assert "| crop alone | 0,1 | 6.0 ± 7.1 |" in text and "| 0.1 | 0,1 | 7.0 ± 7.1 |" in text
    assert "colour alone" not in text  # rows without records are left out
    assert paired_differences(records, "t_0.1", "baseline") == {0: 2.0, 1: 2.0}
    assert paired_differences(records, "s_1", "baseline") == {}
    without = [r for r in records if not (r["key"] == "baseline" and r["seed"] == 1)]
    assert paired_differences(without, "t_0.1", "baseline") == {0: 2.0}  # only the seeds both rows have
