"""benchmarks/reproduce/parity/parity.py: one method end to end on a tiny image folder, and the verdict rule."""

import json
import sys
from pathlib import Path

import numpy as np
import torch
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.reproduce.parity import parity  # noqa: E402

TINY = ["--image-size", "16", "--epochs", "1", "--batch-size", "8", "--seeds", "0", "--workers", "0",
        "--set", "backbone.kwargs.width=4", "method.projection.hidden_dim=16", "method.projection.output_dim=8",
        "trainer.precision=32-true"]


def make_tree(root: Path, classes: int = 2, train: int = 8, val: int = 4, size: int = 16) -> Path:
    """``root/{train,val}/c<k>/<i>.png``: a class is a colour, with noise."""
    rng = np.random.default_rng(0)
    for split, n in (("train", train), ("val", val)):
        for k in range(classes):
            folder = root / split / f"c{k}"
            folder.mkdir(parents=True)
            for i in range(n):
                base = np.array([200 * (k == 0), 200 * (k == 1), 100], dtype=np.float64)
                pixels = np.clip(base + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


@pytest.mark.slow
def test_simclr_end_to_end_writes_records_and_table(tmp_path, one_thread):
    data = make_tree(tmp_path / "data")
    out, results = tmp_path / "p.jsonl", tmp_path / "RESULTS.md"
    results.write_text("# Kept\n\n<!-- parity table -->\nold\n<!-- end parity table -->\n\nafter\n")
    parity.main(["--root", str(data), "--methods", "simclr", "--out", str(out), "--results", str(results),
                 "--output-dir", str(tmp_path / "runs"), *TINY])
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["method"], r["impl"], r["seed"]) for r in records] == [("simclr", "ours", 0), ("simclr", "reference", 0)]
    for r in records:
        assert 0.0 <= r["knn_top1"] <= 100.0 and 0.0 <= r["linear_top1"] <= 100.0
        assert r["images_per_s"] > 0 and r["images_seen"] == 16  # 2 steps of 8 images
        assert r["lr"] == records[0]["lr"]  # the reference runs at our scaled lr
    text = results.read_text()
    assert text.startswith("# Kept") and text.rstrip().endswith("after") and "old" not in text
    row = next(line for line in text.splitlines() if line.startswith("| simclr"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "1 / 1" and float(cells[2]) == pytest.approx(records[0]["knn_top1"], abs=0.05)
    assert float(cells[3]) == pytest.approx(records[1]["knn_top1"], abs=0.05)
    assert cells[5] in (parity.EQUAL, parity.BETTER, parity.WORSE)


def test_verdict_rule():
    assert parity.verdict([50.0, 51.0, 52.0], [50.5, 50.5, 50.5]) == parity.EQUAL  # |d| 0.5 <= std 1.0
    assert parity.verdict([53.0, 54.0, 55.0], [50.0, 50.2, 50.4]) == parity.BETTER  # d 3.8 > std 1.0
    assert parity.verdict([50.0, 50.2, 50.4], [53.0, 54.0, 55.0]) == parity.WORSE
    assert parity.verdict([40.0], [40.4]) == parity.EQUAL  # one seed: the 0.5-point floor
    assert parity.verdict([40.0], [40.6]) == parity.WORSE
    assert parity.verdict([41.2, 40.0, 38.8], [40.0, 40.0, 40.0]) == parity.EQUAL  # the larger std (1.2) counts
    assert parity.verdict([], [40.0]) == "-"


def test_bad_root_and_unknown_method_are_one_line_errors(tmp_path):
    with pytest.raises(SystemExit, match="has no train and no val"):
        parity.main(["--root", str(tmp_path), "--methods", "simclr"])
    with pytest.raises(SystemExit, match="no reference for method.*nope; choose from .*simclr"):
        parity.main(["--root", str(tmp_path), "--methods", "nope"])


def _ours_and_reference(method: str, overrides):
    """Our method and its reference at the same weights (backbone shared by copy, heads copied)."""
    import copy

    from benchmarks.reproduce.parity.references import load_all
    from contrastive.config.compose import load_config
    from contrastive.config.plugins import load_builtin_methods
    from contrastive.core.registry import METHODS
    from contrastive.engine.method import DataInfo

    torch.manual_seed(0)
    cfg = load_config([f"method={method}", "dataset=synthetic", "batch_size=8", "backbone.kwargs.width=4",
                       "trainer.max_epochs=2", *overrides])
    load_builtin_methods()
    data = DataInfo(num_classes=2, image_size=16, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=16)
    ours = METHODS.get(method)(cfg, data)
    s = parity.settings_of(cfg, 16, 16, data.mean, data.std, ours.backbone.feature_dim)
    reference = load_all()[method](copy.deepcopy(ours.backbone), s)
    for name in ("projection_head", "prediction_head"):
        if name in dict(ours.named_children()):
            getattr(reference, name).load_state_dict(getattr(ours, name).state_dict())
    for copy_name, online in (("key_backbone", "backbone"), ("key_projection_head", "projection_head"),
                              ("teacher_backbone", "backbone"), ("teacher_projection_head", "projection_head")):
        if copy_name in dict(reference.named_children()):  # the momentum copy starts as the online module
            getattr(reference, copy_name).load_state_dict(getattr(ours, online).state_dict())
    return ours, reference


HEADS = ["method.projection.hidden_dim=16", "method.projection.output_dim=8"]
SAME_BATCH = {  # method: (overrides, the reference's loss minus ours)
    "simclr": (HEADS, 0.0),
    "simsiam": (HEADS + ["method.predictor.hidden_dim=8"], 0.0),
    "byol": (HEADS + ["method.predictor.hidden_dim=8"], -4.0),  # lightly: 2 NegCos = -2 cos; ours: 2 - 2 cos, twice
    "mocov2": (HEADS + ["method.queue_size=16"], 0.0),
}


@pytest.mark.parametrize("method", sorted(SAME_BATCH))
def test_reference_loss_equals_ours_on_the_same_batch(method, one_thread):
    """Same weights, same views: the reference's loss is ours (up to the constant of its formula)."""
    overrides, offset = SAME_BATCH[method]
    ours, reference = _ours_and_reference(method, overrides)
    views = [torch.randn(8, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    ours.train(), reference.train()  # BatchNorm on batch statistics: the views batched as the recipe batches them
    if method == "mocov2":  # the same negatives; ours queries view 0 with keys of view 1, lightly's file the reverse
        reference.criterion.memory_bank.bank = ours.queue.keys.clone()
        views_ref = views[::-1]
    else:
        views_ref = views
    with torch.no_grad():
        mine = ours.training_losses(views, torch.zeros(8, dtype=torch.long), torch.arange(8))["loss"]
        theirs = reference.training_loss(views_ref, 0)
    assert float(theirs) == pytest.approx(float(mine) + offset, abs=1e-5)
