"""What a run reports: the method's headline metric in the printed summary, summary.json,
curves.png and ``contrastive-eval results``."""

import csv
import json

import pytest

import train
from contrastive.cli.eval import main as eval_main
from contrastive.engine.headline import Headline, headline_summary
from contrastive.engine.method import Method
from contrastive.engine.supervised import ClassifierMethod
from contrastive.methods.pimodel import PiModel
from tests.conftest import FAST, ROOT

# ImCLR's step schedule has no warm-up: FAST's scheduler override is left out.
TINY = [o for o in FAST if not o.startswith("scheduler.")] + [
    "dataset.num_train=256", "dataset.num_val=100", "batch_size=32", "backbone.kwargs.width=4", "knn.random_init_baseline=false"]


def test_methods_declare_their_headline_metric():
    assert Method.HEADLINE.key == "knn_top1" and Method.HEADLINE.mode == "max"
    assert ClassifierMethod.HEADLINE.key == "val_error" and ClassifierMethod.HEADLINE.mode == "min"
    assert PiModel.HEADLINE is ClassifierMethod.HEADLINE
    assert dict(ClassifierMethod.HEADLINE.summary_keys) == {"val_error": "test_error", "val_top1": "test_top1"}


def test_headline_best_and_its_epoch_come_from_the_logged_epochs(tmp_path):
    metrics = tmp_path / "metrics.csv"
    metrics.write_text("epoch,step,val_error,train_loss\n0,3,60.0,\n0,3,,1.0\n1,7,40.0,\n2,11,45.0,\n3,11,44.0,\n")
    head = headline_summary(Headline("val_error", "test error %", "min"), 45.0, metrics, epochs=3)
    assert head == {"metric": "val_error", "label": "test error %", "mode": "min", "final": 45.0, "best": 40.0, "best_epoch": 2}
    assert headline_summary(Headline("knn_top1", "kNN top-1 %"), None, tmp_path / "missing.csv", 3)["best"] is None


def _summary(folder, method, headline, **flat):
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({"run_dir": str(folder), "method": method, "epochs": 2, "overrides": [],
                                                     "headline": headline, **flat}))


def test_results_put_supervised_and_self_supervised_runs_in_separate_tables(tmp_path, capsys):
    _summary(tmp_path / "a", "imclr", {"metric": "val_error", "label": "test error %", "mode": "min", "final": 30.0,
                                        "best": 28.0, "best_epoch": 1}, knn_top1=50.0, test_error=30.0, test_top1=70.0)
    _summary(tmp_path / "b", "simclr", {"metric": "knn_top1", "label": "kNN top-1 %", "mode": "max", "final": 45.0,
                                         "best": 45.0, "best_epoch": 2}, knn_top1=45.0)
    (tmp_path / "c").mkdir()  # a summary.json from before runs recorded a headline: the kNN monitor's table
    (tmp_path / "c" / "summary.json").write_text(json.dumps({"method": "simclr", "epochs": 2, "knn_top1": 60.0, "overrides": []}))
    listed = eval_main(["results", f"output_dir={tmp_path}"])
    printed = capsys.readouterr().out
    assert "test error % (val_error, lower is better):" in printed and "kNN top-1 % (knn_top1, higher is better):" in printed
    assert {r["headline"] for r in listed["runs"]} == {"val_error", "knn_top1"}
    md = (tmp_path / "runs.md").read_text()
    assert md.count("### ") == 2 and md.index("| a ") < md.index("### kNN") < md.index("| c ") < md.index("| b ")
    rows = list(csv.DictReader(open(tmp_path / "runs.csv")))
    assert [(r["run"], r["headline"]) for r in rows] == [("a", "val_error"), ("c", "knn_top1"), ("b", "knn_top1")]
    assert {"kNN %", "linear %", "headline final"} <= set(rows[0])


@pytest.mark.slow
def test_supervised_run_reports_its_test_error(tmp_path, capsys):
    summary = train.main(TINY + ["method=imclr", f"output_dir={tmp_path}"])
    run_dir = summary["run_dir"]
    errors = [(int(r["epoch"]), float(r["val_error"])) for r in csv.DictReader(open(f"{run_dir}/logs/metrics.csv")) if r["val_error"]]
    saved = json.loads(open(f"{run_dir}/summary.json").read())
    head = saved["headline"]
    assert saved["test_error"] == pytest.approx(errors[-1][1]) and head["final"] == pytest.approx(errors[-1][1])
    assert head["metric"] == "val_error" and head["best"] == pytest.approx(min(e for _, e in errors))
    assert head["best_epoch"] == 1 + min(errors, key=lambda e: e[1])[0]
    assert saved["test_top1"] == pytest.approx(100.0 - saved["test_error"]) and saved["knn_top1"] is not None
    printed = capsys.readouterr().out
    assert f"test error %: {head['final']:6.2f} final" in printed and "kNN top-1 (trained)" in printed
    assert open(f"{run_dir}/curves.png", "rb").read(4) == b"\x89PNG"


@pytest.mark.slow
def test_two_process_ddp_run_prints_one_summary_and_writes_one_summary_json(tmp_path):
    import subprocess
    import sys

    out = tmp_path / "outputs"
    args = [a for a in TINY if not a.startswith("trainer.max_epochs")] + [
        "trainer.max_epochs=1", f"output_dir={out}", "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    proc = subprocess.run([sys.executable, "train.py", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("last checkpoint:") == 1 and proc.stdout.count("headline kNN top-1 %") == 1, proc.stdout
    assert len(list(out.glob("**/summary.json"))) == 1 and len(list(out.glob("**/curves.png"))) == 1
