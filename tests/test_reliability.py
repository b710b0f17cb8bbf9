"""Surviving interruption and bad numbers.

One small SimCLR run (20 steps: 2 epochs x 10 batches of 32, width-4 CNN, no kNN) is
trained straight through once per module; the interrupted runs must end with exactly
its weights and optimizer state.
"""

import csv
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from contrastive.engine.checkpoint import SIGTERM_EXIT_CODE, AtomicCheckpointIO, load_checkpoint, remove_stale_temp_files
from contrastive.config.compose import load_config
from contrastive.engine.run import fit, prepare_run
from contrastive.engine.method import Method, NonFiniteLossError
from tests.conftest import ROOT, assert_started_from

STEPS_PER_EPOCH = 10
BASE = [
    "dataset.num_train=320", "dataset.num_val=64", "batch_size=32", "backbone.kwargs.width=4", "trainer.max_epochs=2",
    "scheduler.warmup_epochs=0", "knn.enabled=false", "trainer.progress_bar=false", "trainer.log_every_n_steps=1",
    "method.projection.hidden_dim=64", "method.projection.output_dim=32",
]


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Two OpenMP threads on a shared 2-core machine spin against each other (15x slower here).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _run(out: Path, *extra: str) -> dict:
    return fit(prepare_run(load_config(BASE + [f"output_dir={out}", *extra])))


def _step_losses(run_dir) -> list:
    rows = csv.DictReader(open(Path(run_dir) / "logs" / "metrics.csv"))
    return [float(r["train_loss_step"]) for r in rows if r.get("train_loss_step")]


def _assert_same_training_state(path_a, path_b) -> None:
    a, b = torch.load(path_a, weights_only=True), torch.load(path_b, weights_only=True)
    assert a["global_step"] == b["global_step"] == 2 * STEPS_PER_EPOCH
    for key, value in a["state_dict"].items():
        assert torch.allclose(b["state_dict"][key].float(), value.float(), atol=1e-6, rtol=0), key
    state_a, state_b = a["optimizer_states"][0]["state"], b["optimizer_states"][0]["state"]
    assert state_a.keys() == state_b.keys()
    for k in state_a:
        assert torch.allclose(state_a[k]["momentum_buffer"], state_b[k]["momentum_buffer"], atol=1e-6, rtol=0)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    """The uninterrupted reference run."""
    return _run(tmp_path_factory.mktemp("straight"), "run_name=straight")


def test_crash_mid_save_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    io = AtomicCheckpointIO()
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "contrastive": {"method": "simclr"}}, path)

    def dies_half_way(obj, f, *args, **kwargs):
        Path(f).write_bytes(b"PK\x03\x04 half a zip")  # what a killed torch.save leaves
        raise KeyboardInterrupt("killed while saving")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(KeyboardInterrupt):
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "contrastive": {"method": "simclr"}}, path)
    monkeypatch.undo()
    assert torch.equal(load_checkpoint(path)["state_dict"]["w"], torch.ones(3))  # the old one, intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temp file left either
    # A SIGKILL (no finally) does leave the temp file: the resumed run deletes it, never a real checkpoint.
    (tmp_path / ".last.ckpt.tmp-999999").write_bytes(b"partial")
    assert remove_stale_temp_files(tmp_path) == [".last.ckpt.tmp-999999"]
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


@pytest.mark.slow
def test_sigterm_mid_epoch_saves_and_resume_is_exact(straight, tmp_path, monkeypatch, fit_starts):
    # SIGTERM arrives during the 3rd batch of epoch 1 (global step 12 of 20).
    def sigterm_at_step_12(self, outputs, batch, batch_idx):
        if self.global_step == STEPS_PER_EPOCH + 2:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(Method, "on_train_batch_end", sigterm_at_step_12, raising=False)
    with pytest.raises(SystemExit) as stopped:
        _run(tmp_path, "run_name=preempted")
    assert stopped.value.code == SIGTERM_EXIT_CODE
    monkeypatch.undo()
    saved = load_checkpoint(next(tmp_path.glob("preempted/*/checkpoints/last.ckpt")), expected_method="simclr")
    assert saved["epoch"] == 1 and saved["global_step"] == STEPS_PER_EPOCH + 2  # mid-epoch, after the step finished
    assert saved["loops"]["fit_loop"]["state_dict"]["combined_loader"] == [{"epoch": 1, "batches_done": 2}]
    resumed = _run(tmp_path, "run_name=preempted", "resume=auto")
    assert_started_from(fit_starts[-1], saved)  # mid-epoch: step 12 (a fit from scratch would end the same)
    _assert_same_training_state(straight["last_checkpoint"], resumed["last_checkpoint"])
    # The resumed half logged the 8 remaining steps of epoch 1 with the losses of the straight run.
    assert _step_losses(resumed["run_dir"])[-8:] == pytest.approx(_step_losses(straight["run_dir"])[-8:], abs=1e-6)


BEACON = textwrap.dedent("""
    import runpy, sys
    from contrastive.engine.method import Method
    def beacon(self, outputs, batch, batch_idx):
        print(f"step {self.global_step}", flush=True)
    Method.on_train_batch_end = beacon
    sys.argv = ["train.py", *sys.argv[1:]]
    runpy.run_path("train.py", run_name="__main__")
""")


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_auto_matches_uninterrupted_run(straight, tmp_path, fit_starts):
    """SIGKILL saves nothing: the run restarts from the last epoch boundary (end of epoch 0,
    written atomically) and, with the per-step augmentation seed and per-epoch sampler seed,
    redoes the lost steps exactly."""
    args = BASE + [f"output_dir={tmp_path}", "run_name=killed"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", BEACON, *args], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        deadline = time.time() + 120
        for line in proc.stdout:  # the killed run is python train.py with a step beacon
            if line.strip() == f"step {STEPS_PER_EPOCH + 4}" or time.time() > deadline:
                break
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        proc.kill()
    last = next(tmp_path.glob("killed/*/checkpoints/last.ckpt"))
    epoch_0 = load_checkpoint(last)
    assert epoch_0["global_step"] == STEPS_PER_EPOCH  # the epoch-0 checkpoint, intact
    resumed = _run(tmp_path, "run_name=killed", "resume=auto")
    assert Path(resumed["last_checkpoint"]) == last
    assert_started_from(fit_starts[-1], epoch_0)  # a fit from scratch would end the same
    _assert_same_training_state(straight["last_checkpoint"], last)


@pytest.mark.slow
def test_nonfinite_loss_stops_naming_step_and_terms_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from contrastive.methods.simclr import SimCLR

    original = SimCLR.training_losses

    def nan_at_step_13(self, views, labels, indices):
        losses = original(self, views, labels, indices)
        if self.global_step == STEPS_PER_EPOCH + 3:
            losses["loss"] = losses["loss"] * float("nan")
        return losses

    monkeypatch.setattr(SimCLR, "training_losses", nan_at_step_13)
    with pytest.raises(NonFiniteLossError, match=r"non-finite loss at epoch 1, step 13: loss=nan; the last good checkpoint is kept"):
        _run(tmp_path, "run_name=nan")
    kept = load_checkpoint(next(tmp_path.glob("nan/*/checkpoints/last.ckpt")))
    assert kept["global_step"] == STEPS_PER_EPOCH
    assert all(torch.isfinite(v).all() for v in kept["state_dict"].values() if v.is_floating_point())

    changed = {}

    def weights(self):
        return self.backbone.features.stem[0][0].weight.detach().clone()

    monkeypatch.setattr(Method, "on_train_batch_start", lambda self, batch, i: changed.__setitem__("before", weights(self)), raising=False)
    monkeypatch.setattr(Method, "on_train_batch_end",
                        lambda self, out, batch, i: changed.__setitem__(self.global_step - 1, not torch.equal(changed.pop("before"), weights(self))),
                        raising=False)
    skipped = _run(tmp_path, "run_name=nan_skip", "trainer.on_nonfinite=skip")
    # Lightning still counts the step (the optimizer was called without gradients) but nothing moved.
    assert [step for step, moved in changed.items() if not moved] == [STEPS_PER_EPOCH + 3] and len(changed) == 20
    final = load_checkpoint(skipped["last_checkpoint"])
    assert all(torch.isfinite(v).all() for v in final["state_dict"].values() if v.is_floating_point())
    rows = list(csv.DictReader(open(Path(skipped["run_dir"]) / "logs" / "metrics.csv")))
    assert [float(r["skipped_steps"]) for r in rows if r.get("skipped_steps")] == [1.0]  # epoch 1 only


@pytest.mark.slow
def test_lars_with_bf16_autocast_trains_finite_and_close_to_fp32(straight, tmp_path):
    bf16 = _run(tmp_path, "run_name=bf16", "trainer.precision=bf16-mixed", "optimizer=lars")
    fp32, half = _step_losses(straight["run_dir"]), _step_losses(bf16["run_dir"])
    assert len(half) == 2 * STEPS_PER_EPOCH and all(torch.isfinite(torch.tensor(half)))
    assert half[0] != fp32[0]  # autocast really ran in bf16 ...
    assert half[0] == pytest.approx(fp32[0], rel=2e-2)  # ... and the first loss agrees within bf16 precision
    ckpt = load_checkpoint(bf16["last_checkpoint"])
    weights = [v for v in ckpt["state_dict"].values() if v.is_floating_point()]
    assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in weights)  # fp32 master weights
    assert ckpt["optimizer_states"][0]["param_groups"][0]["trust_coefficient"] == 0.001  # it was LARS


@pytest.mark.slow
def test_same_seed_gives_identical_losses_for_20_steps_and_deterministic_flag(straight, tmp_path, monkeypatch):
    seen = []
    monkeypatch.setattr(Method, "on_train_batch_end",
                        lambda self, *a: seen.append(torch.are_deterministic_algorithms_enabled()), raising=False)
    again = _run(tmp_path, "run_name=again", "trainer.deterministic=true")
    assert seen == [True] * 20
    reference = _step_losses(straight["run_dir"])
    assert len(reference) == 20 and _step_losses(again["run_dir"]) == reference  # bit-identical
    monkeypatch.undo()
    other = _run(tmp_path, "run_name=other_seed", "seed=1")
    assert not torch.are_deterministic_algorithms_enabled()  # the flag does not leak into later runs
    assert _step_losses(other["run_dir"])[0] != reference[0]


def test_nonfinite_guard_holds_when_a_method_overrides_every_hook_without_super(tmp_path):
    """The guard is a callback (Method.configure_callbacks): a method whose training_step,
    epoch-end, validation and checkpoint hooks never call super() still stops at the NaN step,
    with the same one-line error, both at the logging interval and at the epoch's end."""
    import pytorch_lightning as pl

    from contrastive.data.module import ArrayDataModule
    from contrastive.methods.simclr import SimCLR

    class Careless(SimCLR):
        def training_step(self, batch, batch_idx):
            views, labels, indices = batch
            loss = self.training_losses(views, labels, indices)["loss"]
            return loss * float("nan") if self.global_step == 3 else loss

        def on_train_batch_start(self, batch, batch_idx):
            pass

        def on_train_batch_end(self, outputs, batch, batch_idx):
            pass

        def on_train_epoch_end(self):
            pass

        def on_validation_epoch_start(self):
            pass

        def on_save_checkpoint(self, checkpoint):
            pass

    run = prepare_run(load_config(BASE + [f"output_dir={tmp_path}"]))
    for every in (1, 50):  # 1: caught at step 3's logging interval; 50: only at the epoch's end
        model = Careless(run.cfg, run.model.data)
        trainer = pl.Trainer(max_epochs=1, limit_train_batches=5, limit_val_batches=0, log_every_n_steps=every,
                             accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                             enable_model_summary=False)
        with pytest.raises(NonFiniteLossError, match=r"^non-finite loss at epoch 0, step 3: loss=nan; the last good checkpoint is kept"):
            trainer.fit(model, datamodule=ArrayDataModule(run.splits, 32, 0))
        assert trainer.global_step == (4 if every == 1 else 5)
