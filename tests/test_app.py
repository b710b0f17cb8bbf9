"""train.py as a Hydra app: sweeps, run folders, Hydra's flags, Trainer options, schedules, loggers, results."""

import json
import subprocess
from importlib.metadata import version
import sys
import time

import pytest
import torch
import yaml

import linear_eval
import train
from tests.conftest import FAST, ROOT

SMALL = FAST + ["trainer.max_epochs=1", "knn.random_init_baseline=false"]


@pytest.mark.slow
def test_multirun_sweep_makes_a_run_folder_per_job_and_results_tells_them_apart(tmp_path, capsys):
    summaries = train.main(["-m", "method.temperature=0.2,0.5", *SMALL, f"output_dir={tmp_path}",
                            f"hydra.sweep.dir={tmp_path}/sweep"])
    assert len(summaries) == 2
    folders = sorted((tmp_path / "sweep").iterdir())
    folders = [f for f in folders if f.is_dir()]
    assert [f.name.split("-")[0] for f in folders] == ["0", "1"]
    for folder, temperature in zip(folders, (0.2, 0.5)):
        assert (folder / "summary.json").is_file() and (folder / "checkpoints" / "last.ckpt").is_file()
        assert yaml.safe_load((folder / "config.yaml").read_text())["method"]["temperature"] == temperature
        assert f"method.temperature={temperature}" in yaml.safe_load((folder / "overrides.yaml").read_text())
        env = json.loads((folder / "env.json").read_text())
        assert env["packages"]["torch"] == version("torch") and env["packages"]["contrastive"] == version("contrastive")
        assert {"git_commit", "python", "device", "command"} <= set(env)
        assert "learning rate" in (folder / "train.log").read_text()
    capsys.readouterr()
    listed = linear_eval.main(["results", f"output_dir={tmp_path}"])
    printed = capsys.readouterr().out
    assert len(listed["runs"]) == 2 and "method.temperature" in printed
    assert {r["overrides"]["method.temperature"] for r in listed["runs"]} == {"0.2", "0.5"}
    for name in ("runs.csv", "runs.md", "runs.png"):
        assert (tmp_path / name).is_file()
    assert "method.temperature" in (tmp_path / "runs.md").read_text()


@pytest.mark.slow
def test_hydra_run_dir_is_the_run_folder_and_hydra_interpolations_resolve(tmp_path):
    summary = train.main([*SMALL, f"output_dir={tmp_path}", f"hydra.run.dir={tmp_path}/here",
                          "run_name=${hydra:job.name}-x"])
    assert summary["run_dir"] == str(tmp_path / "here")
    assert (tmp_path / "here" / "checkpoints" / "last.ckpt").is_file()
    assert yaml.safe_load((tmp_path / "here" / "config.yaml").read_text())["run_name"] == "train-x"


@pytest.mark.slow
def test_any_trainer_argument_reaches_the_trainer_and_max_steps_sizes_the_schedule(tmp_path, monkeypatch):
    from contrastive.engine import run as engine

    seen = {}
    original = engine.build_trainer

    def spy(cfg, run_dir, **overrides):
        trainer = original(cfg, run_dir, **overrides)
        seen.setdefault("trainer", trainer)
        return trainer

    monkeypatch.setattr(engine, "build_trainer", spy)
    summary = train.main([*FAST, f"output_dir={tmp_path}", "knn.enabled=false", "trainer.max_epochs=5",
                          "trainer.max_steps=3", "trainer.gradient_clip_val=0.5", "trainer.accumulate_grad_batches=2",
                          "scheduler.warmup_epochs=10"])
    trainer = seen["trainer"]
    assert trainer.gradient_clip_val == 0.5 and trainer.accumulate_grad_batches == 2 and trainer.max_steps == 3
    assert trainer.global_step == 3 and summary["epochs"] <= 1
    schedule = trainer.lr_scheduler_configs[0].scheduler
    # 3 optimizer steps in all: the 10-epoch warm-up is cut to 10% of the run (0 steps), then cosine over 3 steps.
    assert schedule.lr_lambdas[0](0) == pytest.approx(1.0) and schedule.lr_lambdas[0](3) == pytest.approx(0.0)


def test_warmup_longer_than_run_is_cut_with_one_warning(caplog):
    from omegaconf import OmegaConf

    from contrastive.engine.optim import build_scheduler, warmup_steps

    cfg = OmegaConf.create({"name": "warmup_cosine", "warmup_epochs": 10, "final_lr_ratio": 0.0})
    assert warmup_steps(cfg, steps_per_epoch=20, total_steps=40) == 4  # 200 > 40 steps: 10% of the run
    assert warmup_steps(cfg, steps_per_epoch=2, total_steps=40) == 20  # shorter than the run: kept
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with caplog.at_level("WARNING", logger="contrastive"):
        schedule = build_scheduler(cfg, opt, 20, 40)["scheduler"]
    assert [r.message for r in caplog.records if "warm-up cut" in r.message]
    assert schedule.lr_lambdas[0](0) == pytest.approx(1 / 4) and schedule.lr_lambdas[0](3) == pytest.approx(1.0)


@pytest.mark.parametrize("flag, expected", [
    (["--help"], ["Config groups", "method:", "experiment:", "simclr"]),
    (["--cfg", "job", "method=spcl"], ["name: spcl"]),
    (["--cfg", "hydra"], ["run:", "sweep:"]),
    (["--info", "searchpath"], ["contrastive/configs", "main"]),
])
def test_hydra_flags_print_and_train_nothing(tmp_path, flag, expected):
    proc = subprocess.run([sys.executable, "train.py", *flag, f"output_dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout.replace(str(ROOT / "configs"), "contrastive/configs")
    assert all(e in out for e in expected), out[-2000:]
    assert not list(tmp_path.rglob("*.ckpt"))


def test_shell_completion_query_lists_group_options():
    proc = subprocess.run([sys.executable, "train.py", "-sc", "query=bash"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120, env={"COMP_LINE": "train.py method=sim", "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0 and "method=simclr" in proc.stdout, proc.stdout + proc.stderr


def test_sweep_with_a_bad_value_fails_before_any_job_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train.main(["-m", *SMALL, "trainer.max_epochs=1,0", "optimizer.lr=0.1,0.2", f"output_dir={tmp_path}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_info.value.code == 2 and err == ["error: trainer.max_epochs must be >= 1 (or -1 with trainer.max_steps > 0), got 0"]
    assert not list(tmp_path.rglob("summary.json"))


def test_submitit_launcher_is_hydras_launcher_when_installed(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    proc = subprocess.run([sys.executable, "train.py", "--cfg", "hydra", "hydra/launcher=submitit_slurm",
                           f"output_dir={tmp_path}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "SlurmLauncher" in proc.stdout, proc.stderr


@pytest.mark.slow
def test_wandb_offline_and_mlflow_local_record_the_hyperparameters(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    pytest.importorskip("mlflow")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    summary = train.main([*SMALL, f"output_dir={tmp_path}", "logger=[csv,tensorboard,wandb,mlflow]",
                          "method.temperature=0.3"])
    run_dir = summary["run_dir"]
    (wandb_run,) = list((tmp_path).rglob("wandb/offline-run-*/run-*.wandb"))  # what `wandb sync` uploads
    for _ in range(50):  # wandb-core, a separate process, can still be writing records after finish() on a busy machine
        if b'"temperature":0.3' in wandb_run.read_bytes():
            break
        time.sleep(0.2)
    assert b'"temperature":0.3' in wandb_run.read_bytes()  # the config record of the method group
    params = list((tmp_path / "mlruns").rglob("params/method/temperature")) or \
        list((tmp_path / "mlruns").rglob("params/method.temperature"))
    assert params and params[0].read_text().strip() == "0.3"
    hparams = yaml.safe_load(open(f"{run_dir}/tensorboard/hparams.yaml"))
    assert hparams["method"]["temperature"] == 0.3
