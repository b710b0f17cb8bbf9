"""End-to-end train.py runs, plugins, resume and bad-input errors."""

import csv
import json
import subprocess
import sys

import pytest
import torch

import train
from contrastive.engine.checkpoint import load_checkpoint
from contrastive.config.compose import load_config
from contrastive.core.errors import ContrastiveError
from tests.conftest import ROOT, assert_started_from, fit_crashing_at_epoch_1


@pytest.mark.slow
def test_simclr_end_to_end_beats_random_init(fast_overrides):
    # 80 steps of a width-8 CNN: enough to see learning (the loss drops well below its
    # start and kNN beats the untrained encoder), not enough to reach the default run's
    # numbers in the README (15 epochs at width 16: 25.5% -> 39.8%).
    # The paper's lr rule and CIFAR temperature (the default run's tuned 0.15 / 0.2 are for 15 epochs at width 16).
    summary = train.main(fast_overrides + ["trainer.max_epochs=5", "dataset.num_train=1024", "dataset.num_val=500",
                                           "knn.every_n_epochs=5", "optimizer.lr=0.075", "method.temperature=0.5"])
    run_dir = summary["run_dir"]
    losses = [float(r["train_loss_epoch"]) for r in csv.DictReader(open(f"{run_dir}/logs/metrics.csv")) if r["train_loss_epoch"]]
    assert len(losses) == 5 and losses[-1] < losses[0] - 0.2
    # Measured (seed 0, this recipe, CPU): kNN 28.6% trained, 24.4% at random init, and 23.2% for the
    # same run at optimizer.lr=1e-12 (the no-learning control: only BatchNorm statistics move). The
    # control does not beat random init, so the margin of 2 is learning, under half the measured 4.2.
    assert summary["knn_top1"] > summary["knn_top1_random_init"] + 2
    assert summary["curves_png"].endswith("curves.png") and open(summary["curves_png"], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    saved = json.loads(open(f"{run_dir}/summary.json").read())
    assert saved["knn_top1"] == summary["knn_top1"]
    ckpt = load_checkpoint(summary["last_checkpoint"], expected_method="simclr")
    assert ckpt["epoch"] == 4 and ckpt["contrastive"]["config"]["method"]["temperature"] == 0.5
    assert ckpt["optimizer_states"] and ckpt["lr_schedulers"]
    assert (ROOT / run_dir / "config.yaml").exists() or open(f"{run_dir}/config.yaml").read()


@pytest.mark.slow
def test_plugin_method_from_tests_folder_trains(fast_overrides):
    searchpath = f"hydra.searchpath=[file://{ROOT / 'tests' / 'plugins' / 'configs'}]"
    summary = train.main(
        fast_overrides + ["plugins=[tests/plugins/simsiam_lite.py]", "method=simsiam_lite", searchpath, "trainer.max_epochs=1"]
    )
    assert summary["method"] == "simsiam_lite" and summary["knn_top1"] is not None


@pytest.mark.slow
def test_resume_continues_with_same_optimizer_state(fast_overrides, monkeypatch, fit_starts):
    from contrastive.engine.run import fit, prepare_run

    straight = fit(prepare_run(load_config(fast_overrides + ["run_name=straight"])))
    expected = torch.load(straight["last_checkpoint"], weights_only=True)

    fit_crashing_at_epoch_1(fast_overrides + ["run_name=resumed"], monkeypatch)
    interrupted = prepare_run(load_config(fast_overrides + ["run_name=resumed", "resume=auto"]))
    saved = torch.load(interrupted.resume_from, weights_only=True)
    assert saved["epoch"] == 0
    resumed = fit(interrupted)
    assert_started_from(fit_starts[-1], saved)  # a fit that ignored the checkpoint would end the same
    assert resumed["run_dir"] == str(interrupted.run_dir)  # continued in the same folder
    final = torch.load(resumed["last_checkpoint"], weights_only=True)
    assert final["epoch"] == 1
    for key, value in expected["state_dict"].items():
        assert torch.allclose(final["state_dict"][key].float(), value.float(), atol=1e-6), key
    exp_state = expected["optimizer_states"][0]["state"]
    got_state = final["optimizer_states"][0]["state"]
    for k in exp_state:
        assert torch.allclose(got_state[k]["momentum_buffer"], exp_state[k]["momentum_buffer"], atol=1e-6)


def test_checkpoint_of_another_method_is_rejected(tmp_path):
    ckpt = tmp_path / "other.ckpt"
    torch.save({"state_dict": {}, "contrastive": {"method": "imclr"}}, ckpt)
    with pytest.raises(ContrastiveError, match="trained with method 'imclr', not 'simclr'"):
        load_checkpoint(ckpt, expected_method="simclr")


def test_cli_subprocess_reports_error_without_traceback():
    proc = subprocess.run([sys.executable, "train.py", "method=doesnotexist"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: unknown method 'doesnotexist'; valid choices: barlowtwins, byol, ") and "simclr, simclrv2, simsiam, spcl" in line
    assert "contrastive.configs' entry point" in line  # the hint for a plugin whose YAML is not found
    assert "Traceback" not in proc.stderr


@pytest.mark.slow
def test_nonfinite_loss_is_one_error_line_naming_the_step(fast_overrides, monkeypatch, capsys):
    from contrastive.methods.simclr import SimCLR

    original = SimCLR.training_losses

    def nan_at_step_3(self, views, labels, indices):
        losses = original(self, views, labels, indices)
        if self.global_step == 3:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(SimCLR, "training_losses", nan_at_step_3)
    with pytest.raises(SystemExit) as exit_info:
        train.main(fast_overrides + ["trainer.max_epochs=1", "knn.random_init_baseline=false"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 3 and err[-1].startswith("error: non-finite loss at epoch 0, step 3: loss=nan")
    assert "Traceback" not in "\n".join(err)
