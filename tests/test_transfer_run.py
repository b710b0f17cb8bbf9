"""``linear_eval.py eval=transfer``: a 2-dataset table end to end from a 1-epoch checkpoint,
selection that never reads test data, and one-line errors."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

import linear_eval
import train
from contrastive.evaluation.transfer.linear import linear_transfer
from contrastive.metrics.transfer import top1_accuracy
from tests.conftest import FAST
from tests.test_transfer_datasets import make_layout


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("transfer_runs")
    summary = train.main(FAST + [f"output_dir={out}", "trainer.max_epochs=1", "knn.enabled=false",
                                 "knn.random_init_baseline=false", "dataset.num_train=128"])
    root = out / "transfer_data"
    for name in ("pets", "voc2007"):
        make_layout(name, root)
    return out, Path(summary["last_checkpoint"]), root


def _argv(ckpt, root, run_dir, *extra):
    return ["eval=transfer", f"checkpoint={ckpt}", f"eval.transfer.root={root}", "eval.transfer.grid=small",
            "eval.transfer.lbfgs_iters=30", f"hydra.run.dir={run_dir}", "device=cpu", *extra]


@pytest.mark.slow
def test_two_dataset_table_end_to_end(trained, tmp_path, capsys):
    out, ckpt, root = trained
    run_dir = tmp_path / "run"
    result = linear_eval.main(_argv(ckpt, root, run_dir, "eval.transfer.datasets=[pets,voc2007]",
                                    "eval.transfer.reference=simclic_table2"))
    printed = capsys.readouterr().out
    assert "| checkpoint | pets (mean per-class) | voc2007 (11-point mAP) |" in printed
    assert "SimCLIC (Yang and Li 2023) Table 2" in printed and "| SwAV | 87.60 | 83.68 |" in printed
    for suffix in ("md", "csv", "json", "png"):
        assert (run_dir / f"transfer.{suffix}").is_file()
    saved = json.loads((run_dir / "transfer.json").read_text())
    (row,) = saved["rows"]
    assert row["checkpoint"] == str(ckpt) and 0 <= row["pets"] <= 100 and 0 <= row["voc2007"] <= 100
    rows = list(csv.DictReader(open(run_dir / "transfer.csv")))
    assert rows[0]["source"] == "ours" and len(rows) == 1 + len(saved["reference"]["rows"])
    cache = sorted(p.name for p in (ckpt.parent / "last.eval" / "transfer").glob("*.pt"))
    assert len(cache) == 6 and cache[0].startswith("pets-test-")
    again = linear_eval.main(_argv(ckpt, root, tmp_path / "again", "eval.transfer.datasets=[pets]"))
    assert again["rows"][0]["pets"] == row["pets"]  # from the feature cache, same score


@pytest.mark.slow
def test_finetune_mode(trained, tmp_path):
    out, ckpt, root = trained
    result = linear_eval.main(_argv(ckpt, root, tmp_path / "ft", "eval.transfer.datasets=[pets]",
                                    "eval.transfer.mode=finetune", "eval.transfer.finetune.steps=2",
                                    "eval.transfer.finetune.batch_size=8", "eval.transfer.finetune.lrs=[0.01,0.1]",
                                    "eval.transfer.finetune.weight_decays=[0.0]"))
    (cell,) = result["cells"]
    assert cell["mode"] == "finetune" and cell["chosen"]["lr"] in (0.01, 0.1) and 0 <= cell["test"] <= 100


def test_errors_are_one_line(tmp_path, capsys):
    ckpt, root = tmp_path / "never-read.ckpt", tmp_path  # the datasets are checked before any checkpoint is read
    for extra, expected in ((["eval.transfer.datasets=[pets,imagenet]"], "choose from food101"),
                            ([f"eval.transfer.root={tmp_path}", "eval.transfer.datasets=[flowers]"],
                             "flowers-102/{jpg")):
        with pytest.raises(SystemExit) as exc:
            linear_eval.main(_argv(ckpt, root, tmp_path / "bad", *extra))
        err = [ln for ln in capsys.readouterr().err.strip().splitlines() if " INFO " not in ln]
        assert exc.value.code == 2 and len(err) == 1 and expected in err[0], err


class _Guard(dict):
    """Records the order in which the splits are read."""

    def __init__(self, *args):
        super().__init__(*args)
        self.reads = []

    def __getitem__(self, key):
        self.reads.append(key)
        return super().__getitem__(key)


def test_selection_never_reads_test():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(60, 5, generator=gen, dtype=torch.float64)
    y = (x[:, 0] > 0).long()
    splits = _Guard({"train": (x[:30], y[:30]), "val": (x[30:45], y[30:45]), "test": (x[45:], y[45:])})
    grid = (1e-4, 1e-2, 1.0, 100.0)
    first = linear_transfer(splits, 2, top1_accuracy, grid, 30, True)
    assert splits.reads.count("test") == 1 and splits.reads[-1] == "test"
    flipped = dict(splits, test=(torch.randn(15, 5, dtype=torch.float64), 1 - y[45:]))
    second = linear_transfer(flipped, 2, top1_accuracy, grid, 30, True)
    assert (second.l2, second.val_scores) == (first.l2, first.val_scores)  # test data never moves the choice
