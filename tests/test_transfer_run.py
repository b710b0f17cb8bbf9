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
def test_two_dataset_table_end_to_end(trained, tmp_path, capsys, monkeypatch):
    out, ckpt, root = trained
    run_dir = tmp_path / "run"
    from contrastive.evaluation.transfer import run as transfer_run

    loads, load = [], transfer_run._load
    monkeypatch.setattr(transfer_run, "_load", lambda *a: loads.append(load(*a)) or loads[-1])
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
    # linear mode reads frozen features: every weight and buffer is still the checkpoint's
    saved_weights = torch.load(ckpt, map_location="cpu", weights_only=False)["state_dict"]
    (loaded, _), = loads
    for name, value in loaded.model.state_dict().items():
        assert torch.equal(value.cpu(), saved_weights[name]), name
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


def _tiny_encoder():
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                               torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())


def test_finetuning_changes_a_copy_of_the_encoder_and_leaves_the_checkpoint_alone():
    from types import SimpleNamespace

    from contrastive.augment.pipelines import EvalTransform
    from contrastive.evaluation.transfer.finetune import train_and_score

    torch.manual_seed(0)
    encoder = _tiny_encoder()
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    trained = []  # deepcopy keeps forward hooks, so the hook records the fine-tuned copy too
    encoder.register_forward_hook(lambda module, args, out: trained.append(module))
    gen = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (16, 3, 8, 8), dtype=torch.uint8, generator=gen)
    labels = torch.arange(16) % 2
    f = SimpleNamespace(momentum=0.9, steps=3, batch_size=8)
    score = train_and_score(encoder, 4, (images, labels), (images, labels), 2, "top1",
                            EvalTransform(8, (0.5,) * 3, (0.25,) * 3), 0.1, 0.0, f, torch.device("cpu"), 0)
    assert 0.0 <= score <= 1.0
    copy = trained[-1]
    assert copy is not encoder
    for name, value in encoder.state_dict().items():  # each grid point starts from the checkpoint's weights
        assert torch.equal(value, before[name]), name
    changed = [name for name, value in copy.state_dict().items()
               if value.is_floating_point() and not torch.equal(value, before[name])]
    # every weight of the encoder (convolution, BatchNorm scale and shift, running statistics) moved
    assert set(changed) == {k for k, v in before.items() if v.is_floating_point()}, changed
