"""Scale paths on CPU: batch semantics, worker counts and DDP with parameters unused by design.

``batch_size`` is per process everywhere; a preset that quotes a paper's global batch says
``global_batch_size`` and each process trains with ``global_batch_size / processes``. One pair of
gloo processes (fork, as tests/test_ddp.py) trains an ImageNet preset at a tiny size and SPCL with
a late first clustering; the rest are unit tests of the same rules given Lightning's own numbers.
Lightning's launcher and ``srun`` set ``RANK``, ``LOCAL_RANK`` and ``WORLD_SIZE`` but not
``LOCAL_WORLD_SIZE``: the processes here do not set it either.
"""

import os
import traceback
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from contrastive.config.compose import load_config
from contrastive.core.errors import ConfigError

WORLD = 2
#: An ImageNet preset as a tiny CPU run: its batch and learning-rate settings stay the YAML's.
TINY_IMAGENET = [
    "experiment=simsiam_imagenet", "dataset=synthetic", "dataset.image_size=16", "dataset.num_train=512",
    "dataset.num_val=16", "backbone=small_cnn", "backbone.kwargs.width=4", "backbone.small_stem=true",
    "trainer.sync_batchnorm=false", "method.projection.hidden_dim=32", "method.projection.output_dim=32",
    "method.predictor.hidden_dim=8",
    "knn.enabled=false", "trainer.max_epochs=1", "trainer.limit_train_batches=1", "trainer.progress_bar=false",
    "trainer.accelerator=cpu", "trainer.precision=32-true", "logger=[csv]",
]
#: SPCL whose prototype heads get no gradient before the first clustering (epoch 1).
SPCL_LATE = [
    "method=spcl", "method.num_prototypes=[4]", "method.cluster.view=eval", "method.metric_hidden_dim=16",
    "method.projection.hidden_dim=16", "method.projection.output_dim=8", "method.cluster.start_epoch=1",
    "dataset.num_train=64", "dataset.num_val=16", "backbone.kwargs.width=4", "batch_size=8", "trainer.max_epochs=2",
    "trainer.limit_train_batches=3", "scheduler.warmup_epochs=0", "knn.enabled=false", "trainer.progress_bar=false",
    "trainer.accelerator=cpu", "trainer.precision=32-true", "logger=[csv]",
]
DDP = [f"trainer.devices={WORLD}", "trainer.strategy=ddp"]


def _imagenet_run(out):
    """Per-process batches seen by ``training_losses``, the optimizer's (scaled) learning rate and the
    local process count the stream workers divide the cores by."""
    from contrastive.data.module import local_processes
    from contrastive.engine.run import fit, prepare_run

    run = prepare_run(load_config([*TINY_IMAGENET, *DDP, f"output_dir={out}"]))
    seen = {"batches": []}
    losses, configure = run.model.training_losses, run.model.configure_optimizers
    run.model.training_losses = lambda v, l, i: (seen["batches"].append(len(i)), losses(v, l, i))[1]

    def configure_and_record():
        optimizers = configure()
        seen["lr"] = optimizers["optimizer"].defaults["lr"]
        return optimizers

    run.model.configure_optimizers = configure_and_record
    fit(run)
    return {**seen, "batch_size": int(run.cfg.batch_size), "local_processes": local_processes(run.model.trainer),
            "LOCAL_WORLD_SIZE": os.environ.get("LOCAL_WORLD_SIZE")}


def _spcl_run(out):
    """SPCL trains two epochs under DDP; the prototype heads' weights before and after."""
    from contrastive.engine.run import fit, prepare_run

    run = prepare_run(load_config([*SPCL_LATE, *DDP, f"output_dir={out}"]))
    before = run.model.prototype_heads[0].weight.detach().clone()
    summary = fit(run)
    return {"epochs": summary["epochs"], "heads_before": before, "heads_after": run.model.prototype_heads[0].weight.detach()}


def _worker(rank, port, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(WORLD), OMP_NUM_THREADS="1")
    os.environ.pop("LOCAL_WORLD_SIZE", None)
    torch.set_num_threads(1)
    result = {}
    try:
        dist.init_process_group("gloo", rank=rank, world_size=WORLD, init_method=f"tcp://127.0.0.1:{port}")
        for name, check in (("imagenet", _imagenet_run), ("spcl", _spcl_run)):
            try:
                result[name] = check(out)
            except Exception:  # recorded: the test names what failed, the next check still runs
                result[name] = {"error": traceback.format_exc()}
        torch.save(result, Path(out) / f"rank{rank}.pt")
    except BaseException:
        (Path(out) / f"rank{rank}.error").write_text(traceback.format_exc())
        raise
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    from tests.test_ddp import run_processes

    out = tmp_path_factory.mktemp("scale")
    return run_processes(_worker, out, WORLD)


def _ok(result):
    assert "error" not in result, result.get("error")
    return result


@pytest.mark.slow
def test_imagenet_preset_trains_each_process_with_its_share_of_the_papers_global_batch(ranks):
    """simsiam_imagenet (SimSiam Sec. 4: "batch size 512", "lr x BatchSize/256" with base lr 0.05) over all
    processes: 256 per process on 2 and lr 0.05 x 512 / 256 = 0.1 (not 512 per process and lr 0.2)."""
    preset = load_config(["experiment=simsiam_imagenet"])
    assert preset.global_batch_size == 512 and preset.batch_size is None
    for result in map(_ok, (r["imagenet"] for r in ranks)):
        assert result["batch_size"] == 512 // WORLD
        assert result["batches"] == [512 // WORLD]
        assert result["lr"] == pytest.approx(0.05 * 512 / 256)
        assert result["local_processes"] == WORLD and result["LOCAL_WORLD_SIZE"] is None  # workers: cores / 2


@pytest.mark.slow
def test_spcl_with_a_late_first_clustering_trains_under_ddp(ranks):
    """Before ``cluster.start_epoch`` the prototype heads get no gradient; DDP's reducer must be told."""
    for result in map(_ok, (r["spcl"] for r in ranks)):
        assert result["epochs"] == 2
        assert not torch.equal(result["heads_before"], result["heads_after"])  # trained in epoch 1


# ---------------------------------------------------------------- batch semantics (no processes)
@pytest.mark.parametrize("batch, total, processes, expected", [
    (256, None, 8, 256),     # per process, as given
    (None, 4096, 8, 512),    # the paper's global batch shared out
    (512, 4096, 8, 512),     # both, consistent
    (None, 4096, 1, 4096),
])
def test_per_process_batch(batch, total, processes, expected):
    from contrastive.config.batch import per_process_batch

    assert per_process_batch(batch, total, processes) == expected


@pytest.mark.parametrize("batch, total, processes, message", [
    (None, 4096, 3, "global_batch_size=4096 does not divide among 3 processes"),
    (256, 4096, 8, "batch_size=256 x 8 processes = 2048 contradicts global_batch_size=4096"),
    (None, None, 2, "batch_size is null"),
    (None, 0, 1, "global_batch_size must be an integer >= 1 or null, got 0"),
])
def test_per_process_batch_refuses_in_one_line(batch, total, processes, message):
    from contrastive.config.batch import per_process_batch

    with pytest.raises(ConfigError, match=message) as err:
        per_process_batch(batch, total, processes)
    assert "\n" not in str(err.value)


def test_prepare_run_shares_the_global_batch_among_lightnings_processes(tmp_path):
    """The process count is the Trainer's (devices x nodes), known before any data is built."""
    from contrastive.engine.run import validate_config

    cfg = load_config(["dataset.num_train=64", "global_batch_size=32", "batch_size=null", "trainer.accelerator=cpu",
                       "trainer.devices=2", "trainer.strategy=ddp", f"output_dir={tmp_path}"])
    validate_config(cfg)
    assert cfg.batch_size == 16
    odd = load_config(["global_batch_size=33", "batch_size=null", "trainer.accelerator=cpu", "trainer.devices=2",
                       "trainer.strategy=ddp", f"output_dir={tmp_path}"])
    with pytest.raises(ConfigError, match="global_batch_size=33 does not divide among 2 processes"):
        validate_config(odd)


# ---------------------------------------------------------------- stream workers
def test_stream_workers_share_the_cores_among_lightnings_local_processes(monkeypatch):
    """Lightning's launcher sets no LOCAL_WORLD_SIZE: the count of processes on this machine is the
    Trainer's ``num_devices`` (devices per node), so each of 2 processes on 8 cores starts 4 workers."""
    import pytorch_lightning as pl

    from contrastive.data.module import local_processes
    from contrastive.data.stream import default_workers

    monkeypatch.delenv("LOCAL_WORLD_SIZE", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    trainer = pl.Trainer(accelerator="cpu", devices=2, num_nodes=2, strategy="ddp", logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    assert local_processes(trainer) == 2 and local_processes(None) == 1  # per node, not the world of 4
    assert default_workers(None, local_processes(trainer)) == 4
    assert default_workers(None, 1) == 8 and default_workers(3, 2) == 3


# ---------------------------------------------------------------- DDP and parameters unused by design
@pytest.mark.parametrize("strategy, processes, expected", [
    ("ddp", 2, "ddp_find_unused_parameters_true"),
    ("ddp_spawn", 2, "ddp_spawn_find_unused_parameters_true"),
    ("auto", 2, "ddp_find_unused_parameters_true"),  # Lightning's auto on more than one process is ddp
    ("auto", 1, "auto"),                              # one process: no DDP, nothing to find
    ("ddp_find_unused_parameters_true", 2, "ddp_find_unused_parameters_true"),
    ("deepspeed", 2, "deepspeed"),
])
def test_ddp_looks_for_unused_parameters_when_a_method_has_them(strategy, processes, expected):
    from contrastive.engine.trainer import strategy_for_unused_parameters

    assert strategy_for_unused_parameters(strategy, processes, "spcl") == expected


def test_ddp_told_not_to_look_for_unused_parameters_is_refused_in_one_line():
    from contrastive.engine.trainer import strategy_for_unused_parameters

    with pytest.raises(ConfigError, match="trainer.strategy=ddp_find_unused_parameters_false: method 'spcl' .* use "
                                          "trainer.strategy=ddp_find_unused_parameters_true"):
        strategy_for_unused_parameters("ddp_find_unused_parameters_false", 2, "spcl")


@pytest.mark.parametrize("overrides, unused", [
    (["method.cluster.start_epoch=1"], True),   # epoch 0: NT-Xent only, the heads idle
    (["method.cluster.start_epoch=0"], False),  # clustered before the first step: every head has a loss
    (["method.cluster.start_epoch=1", "method.weights.metric=0", "method.weights.prototype=0"], False),  # no heads
])
def test_spcl_declares_its_heads_unused_before_the_first_clustering(overrides, unused):
    from contrastive.config.plugins import load_builtin_methods
    from contrastive.core.registry import METHODS
    from contrastive.engine.method import DataInfo, Method

    load_builtin_methods()
    data = DataInfo(num_classes=10, image_size=32, mean=(0.5,) * 3, std=(0.25,) * 3, num_train=64)
    cfg = load_config(["method=spcl", "method.num_prototypes=[4]", "backbone.kwargs.width=4", *overrides])
    assert METHODS.get("spcl")(cfg, data).has_unused_parameters() is unused
    assert Method.has_unused_parameters(object.__new__(Method)) is False  # the default: DDP's fast path
