"""``linear_eval.py``: checkpoint choice, modes, feature cache, label fractions, results, errors.

One tiny SimCLR checkpoint is trained per module (1 epoch = 4 steps, width 8, 256 images); the
evaluations use short recipes (5 probe epochs, 1 fine-tune epoch, k=20).
"""

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

import linear_eval
import train
from contrastive.backbones.factory import create_backbone
from contrastive.config.compose import load_config
from contrastive.config.plugins import load_builtin_methods
from contrastive.evaluation import prepare
from contrastive.evaluation.features import features_for, frozen_encoder, labeled_subset
from contrastive.evaluation.probe import evaluate_head, train_linear_probe
from contrastive.metrics.knn import knn_accuracy, knn_scores
from contrastive.engine.method import DataInfo
from contrastive.core.registry import METHODS
from tests.conftest import FAST

EVAL = ["eval.linear.epochs=5", "eval.finetune.epochs=1", "eval.knn.k=20", "eval.progress_bar=false", "eval.batch_size=256"]
FIELDS = {"mode", "dataset", "label_fraction", "top1", "top5", "feature_dim", "seconds", "checkpoint_sha256"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval_runs")
    summary = train.main(FAST + [f"output_dir={out}", "trainer.max_epochs=1", "knn.enabled=false",
                                 "knn.random_init_baseline=false", "dataset.num_train=256"])
    return out, Path(summary["last_checkpoint"])


def _run(argv):
    return linear_eval.main(list(argv) + EVAL)


def _one_error_line(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        linear_eval.main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    err = [line for line in err if " INFO " not in line]
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_no_argument_picks_newest_run_linear_json_and_cache(trained, capsys):
    out, ckpt = trained
    summary = _run([f"output_dir={out}", "eval.mode=linear"])
    assert summary["checkpoint"] == str(ckpt) and f"evaluating {ckpt}" in capsys.readouterr().out
    (row,) = summary["results"]
    assert row["mode"] == "linear" and 0 <= row["top1"] <= row["top5"] <= 100 and row["feature_dim"] == 64
    assert row["features_cached"] is False
    saved = json.loads((ckpt.parent / "last.eval" / "linear-synthetic-labels1.json").read_text())
    assert FIELDS <= saved.keys() and saved["top1"] == row["top1"] and len(saved["checkpoint_sha256"]) == 64
    # Second call (kNN): the frozen features come from the cache, and kNN on them is exactly contrastive.metrics.knn.
    (knn,) = _run([f"checkpoint={ckpt}", "eval.mode=knn", "eval.plot=true", "eval.plot_samples=100"])["results"]
    assert knn["features_cached"] is True and knn["recipe"]["k"] == 20
    (cache,) = (ckpt.parent / "last.eval" / "features").glob("synthetic-*.pt")
    feats = torch.load(cache, weights_only=True)
    expected = knn_accuracy(feats["train"], feats["train_labels"], feats["test"], feats["test_labels"], 10, k=20,
                            temperature=0.1, backend="torch")
    assert (knn["top1"], knn["top5"]) == pytest.approx(expected, abs=1e-3)
    assert (ckpt.parent / "last.eval" / "tsne-synthetic.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cache_not_reused_when_checkpoint_changes(trained, tmp_path):
    ckpt = tmp_path / "copy.ckpt"
    shutil.copy(trained[1], ckpt)
    argv = [f"checkpoint={ckpt}", "eval.mode=knn"]
    first = _run(argv)["results"][0]
    assert first["features_cached"] is False and _run(argv)["results"][0]["features_cached"] is True
    data = torch.load(ckpt, weights_only=True)
    key = next(k for k in data["state_dict"] if k.startswith("backbone.") and k.endswith("weight"))
    data["state_dict"][key] = data["state_dict"][key] * 1.5  # another checkpoint under the same name
    torch.save(data, ckpt)
    again = _run(argv)["results"][0]
    assert again["features_cached"] is False and again["checkpoint_sha256"] != first["checkpoint_sha256"]
    assert len(list((tmp_path / "copy.eval" / "features").glob("*.pt"))) == 1  # the stale cache was removed


def test_frozen_encoder_unchanged_and_assertion_fires(trained):
    setup = prepare([f"checkpoint={trained[1]}", "eval.cache=false"])
    before = {k: v.clone() for k, v in setup.model.state_dict().items()}
    was_training = setup.model.training
    assert any("running_mean" in k for k in before)  # the encoder has BatchNorm statistics to protect
    features_for(setup, progress=False)
    assert all(torch.equal(before[k], v) for k, v in setup.model.state_dict().items())
    assert setup.model.training == was_training  # mode restored
    bn = next(m for m in setup.model.modules() if isinstance(m, nn.BatchNorm2d))
    for mutate in (lambda: bn.running_mean.add_(1.0), lambda: bn.weight.data.mul_(2.0)):
        with pytest.raises(AssertionError, match="frozen encoder changed"):
            with frozen_encoder(setup.model):
                assert not setup.model.training
                mutate()


def test_all_modes_one_table_with_label_fraction_and_results(trained, capsys):
    out, ckpt = trained
    summary = _run([f"checkpoint={ckpt}", "eval.mode=all", "eval.label_fraction=0.1"])
    rows = {r["mode"]: r for r in summary["results"]}
    assert set(rows) == {"linear", "knn", "finetune"}
    (cache,) = (ckpt.parent / "last.eval" / "features").glob("synthetic-*.pt")
    n = len(labeled_subset(torch.load(cache, weights_only=True)["train_labels"], 0.1, 0))
    assert 20 <= n <= 30 and all(r["num_train"] == n and r["label_fraction"] == 0.1 for r in rows.values())
    printed = capsys.readouterr().out
    assert all(f"\n{m} " in printed for m in rows) and "top-1 %" in printed
    listed = linear_eval.main(["results", f"output_dir={out}"])["rows"]
    runs = {(r["run"], r["mode"], r["label_fraction"]) for r in listed}
    run = str(ckpt.relative_to(out).with_suffix(""))
    assert {(run, "finetune", 0.1), (run, "linear", 1.0)} <= runs and run in capsys.readouterr().out


def test_label_fraction_subset_is_class_balanced_and_seed_fixed():
    labels = torch.arange(1000) % 10  # 100 per class
    labels[::7] = -1  # unlabeled images are never picked
    a, b, c = (labeled_subset(labels, 0.1, seed) for seed in (0, 0, 1))
    counts = torch.bincount(labels[a], minlength=10)
    per_class = torch.bincount(labels[labels >= 0], minlength=10)
    assert torch.equal(counts, (per_class.float() * 0.1).round().long()) and (labels[a] >= 0).all()
    assert torch.equal(a, b) and not torch.equal(a, c) and torch.equal(a, a.sort().values)
    assert torch.equal(labeled_subset(labels, 1.0, 0), torch.nonzero(labels >= 0).flatten())


def test_random_init_baseline(trained):
    out = trained[0]
    summary = _run(["checkpoint=random", "backbone=small_cnn", "backbone.kwargs.width=4", f"output_dir={out}",
                    "dataset.num_train=128", "dataset.num_val=100", "eval.mode=knn"])
    (row,) = summary["results"]
    assert row["method"] == "random-init" and row["feature_dim"] == 32 and row["num_train"] == 128
    assert Path(summary["eval_dir"]).parent == out / "random-small_cnn"


def test_imclr_checkpoint_is_embedded_through_its_embed(tmp_path):
    load_builtin_methods()
    cfg = load_config(["method=imclr", "backbone.kwargs.width=4", "dataset.num_train=64", "dataset.num_val=40"])
    model = METHODS.get("imclr")(cfg, DataInfo(10, 32, (0.5,) * 3, (0.25,) * 3, 64))
    ckpt = {"state_dict": model.state_dict()}
    model.on_save_checkpoint(ckpt)
    torch.save(ckpt, tmp_path / "imclr.ckpt")
    setup = prepare([f"checkpoint={tmp_path / 'imclr.ckpt'}", "eval.cache=false"])
    feats = features_for(setup, progress=False)
    x = setup.transform(setup.splits.val.images[:4])  # [4, 3, 32, 32]
    with torch.no_grad():
        setup.model.eval()
        stacked = setup.model.backbone(torch.cat([x, x], dim=2))  # [4, D]: the image on top of itself
        plain = setup.model.backbone(x)
    assert type(setup.model).__name__ == "ImCLR" and setup.model.k == 2
    assert torch.allclose(feats.test[:4], stacked, atol=1e-5) and not torch.allclose(feats.test[:4], plain, atol=1e-3)


def test_probe_separable_features_reaches_100_and_knn_backends_agree():
    g = torch.Generator().manual_seed(0)
    means = 4 * torch.randn(5, 16, generator=g)  # [C, D], far apart
    y = torch.arange(500) % 5
    x = means[y] + 0.3 * torch.randn(500, 16, generator=g)  # [N, D], linearly separable
    cfg = load_config(["eval.linear.epochs=10"], "eval").eval.linear
    for optimizer in ("sgd", "lbfgs"):
        cfg.optimizer = optimizer
        head = train_linear_probe(x[:400], y[:400], 5, cfg, torch.device("cpu"), progress=False)
        assert evaluate_head(head, x[400:], y[400:])[0] == 100.0
    bank, labels, queries = torch.randn(300, 8, generator=g), torch.randint(0, 4, (300,), generator=g), torch.randn(50, 8, generator=g)
    by_torch = knn_scores(bank, labels, queries, 4, k=25, temperature=0.1, backend="torch")  # [50, 4]
    by_faiss = knn_scores(bank, labels, queries, 4, k=25, temperature=0.1, backend="faiss")
    assert torch.allclose(by_torch, by_faiss, rtol=1e-4) and torch.equal(by_torch.argmax(1), by_faiss.argmax(1))


def test_export_loads_into_plain_model(trained, tmp_path):
    record = linear_eval.main(["export", f"checkpoint={trained[1]}", f"export.path={tmp_path / 'bb.pt'}"])
    net = create_backbone("small_cnn", 32, width=8)
    net.load_state_dict(torch.load(tmp_path / "bb.pt", weights_only=True))  # strict
    assert record["feature_dim"] == 64


def test_bad_inputs_are_one_error_line(trained, tmp_path, capsys):
    out, ckpt = trained
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(ckpt.read_bytes()[:5000])
    cases = {
        f"checkpoint={tmp_path / 'missing.ckpt'}": "does not exist",
        f"output_dir={tmp_path / 'empty'}": "no checkpoint found",
        "eval.mode=probe": "eval.mode='probe' is not valid",
        "eval.label_fraction=0": "must be in (0, 1]",
        "eval.label_fraction=1.5": "must be in (0, 1]",
        f"checkpoint={corrupt}": "corrupt",
    }
    for arg, message in cases.items():
        assert message in _one_error_line([arg], capsys)
    assert "holds backbone 'small_cnn'" in _one_error_line([f"checkpoint={ckpt}", "backbone=resnet18"], capsys)
    assert "eval.knn.k=9999" in _one_error_line([f"checkpoint={ckpt}", "eval.mode=knn", "eval.knn.k=9999"], capsys)
    assert "needs backbone=" in _one_error_line(["checkpoint=random"], capsys)
    torch.save(nn.Linear(64, 3).state_dict(), tmp_path / "head3.pt")  # a probe head of a 3-class dataset
    assert "trained for 3 classes" in _one_error_line([f"checkpoint={ckpt}", f"eval.linear.head={tmp_path / 'head3.pt'}"], capsys)
    assert "eval.linear.optimizer='adam'" in _one_error_line([f"checkpoint={ckpt}", "eval.linear.optimizer=adam"], capsys)


#: The paper's SimCLR lr rule and CIFAR temperature: the default run's tuned values (lr 0.15,
#: T 0.2, for 15 epochs of width 16) are too hot for this 5-epoch width-8 budget.
PAPER_SIMCLR = ["optimizer.lr=0.075", "method.temperature=0.5"]


@pytest.mark.slow
def test_end_to_end_trained_checkpoint_beats_random_init(tmp_path):
    """train.py for 8 epochs, then ``eval.mode=all``: the frozen-feature numbers (linear, kNN)
    beat the same encoder at random initialisation on the same data and recipe."""
    data = ["dataset.num_train=1024", "dataset.num_val=500"]
    summary = train.main(FAST + data + [f"output_dir={tmp_path}", "trainer.max_epochs=8", "knn.enabled=false",
                                        "knn.random_init_baseline=false", *PAPER_SIMCLR])
    probe = ["eval.mode=all", "eval.linear.optimizer=lbfgs"]  # a converged probe: a fair comparison in seconds
    trained_rows = _run([f"checkpoint={summary['last_checkpoint']}", *probe])["results"]
    random_rows = _run([f"output_dir={tmp_path}", "checkpoint=random", "backbone=small_cnn", "backbone.kwargs.width=8",
                        *probe, *data])["results"]
    trained, random = ({r["mode"]: r for r in rows} for rows in (trained_rows, random_rows))
    assert set(trained) == set(random) == {"linear", "finetune", "knn"}
    # Measured at seed 0 (this recipe, CPU; SimCLR's two views through the network as one batch, as the authors'
    # model.py), top-1 trained / random init: 8 epochs, 2 threads (-n 0): linear 31.8 / 29.4, kNN 27.4 / 24.4;
    # 1 thread (the suite's xdist workers): linear 34.0 / 29.4, kNN 27.0 / 24.4. The no-learning control (the same
    # training at optimizer.lr=1e-12: only BatchNorm statistics move) loses: linear 28.4, kNN 23.6. At 5 epochs
    # the linear gain was +1.2 with 2 threads and -0.6 with 1, too thin, hence 8. Margins: half the smaller gain.
    margins = {"linear": 1.2, "knn": 1.3}
    for mode, margin in margins.items():
        assert trained[mode]["top1"] > random[mode]["top1"] + margin, (mode, trained[mode]["top1"], random[mode]["top1"])
    saved = json.loads((Path(summary["last_checkpoint"]).parent / "last.eval" / "linear-synthetic-labels1.json").read_text())
    assert saved["top1"] == trained["linear"]["top1"]
